"""Shared fixtures and helpers for the vpcep SDK conformance suite.

The suite drives a real `vpcep serve` process through the official Huawei Cloud
Python SDKs (huaweicloudsdkvpcep v1 and huaweicloudsdkvpc v2) and, where the SDK
cannot express a request (bad signatures, malformed bodies), through `requests`
with the SDK-HMAC-SHA256 signer implemented here from spec section 1.3.

Environment:
    VPCEP_BIN   path of the server binary (default <repo>/target/debug/vpcep)
    VPCEP_SDK_ENGINE  `postgres`: every server keeps its store in a database of its own
                in a throwaway PostgreSQL cluster (started by `vpcep-testpg`, next to
                VPCEP_BIN), instead of SQLite in its data directory
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import itertools
import json
import os
import re
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Optional
from urllib.parse import quote, unquote, urlparse

import pytest
import requests

import huaweicloudsdkvpc.v2.model as vm
import huaweicloudsdkvpcep.v1.model as ep
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.client import Client
from huaweicloudsdkcore.exceptions.exceptions import (
    ClientRequestException,
    ServiceResponseException,
)
from huaweicloudsdkcore.http.http_config import HttpConfig
from huaweicloudsdkvpc.v2 import VpcClient
from huaweicloudsdkvpcep.v1 import VpcepClient

# --------------------------------------------------------------------------------------
# Constants
# --------------------------------------------------------------------------------------

REPO_ROOT = Path(__file__).resolve().parents[2]
VPCEP_BIN = Path(os.environ.get("VPCEP_BIN", REPO_ROOT / "target" / "debug" / "vpcep"))
REGION = "local-1"

HEX32 = re.compile(r"[0-9a-f]{32}")
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ")
#: any VPCEP error code ("EndPoint.0002", "Endpoint.1018", ...)
ANY_VPCEP_CODE = re.compile(r"End[Pp]oint\.\d{4}")

# error codes of spec section 5
BAD_PARAM = "EndPoint.0002"
NO_PERMISSION = "EndPoint.0004"
NOT_FOUND = "EndPoint.0005"
NOT_FOUND_ENDPOINT = ("EndPoint.0005", "EndPoint.2006")
BAD_LIMIT = "EndPoint.0006"
BAD_OFFSET = "EndPoint.0010"
BAD_PROJECT = "EndPoint.0014"
BAD_SORT_KEY = ("EndPoint.0017", BAD_PARAM)
BAD_SORT_DIR = ("EndPoint.0018", BAD_PARAM)
BAD_STATUS = "EndPoint.0019"
QUOTA_EXCEEDED = "Endpoint.1018"
# A service that is not shared with the caller looks exactly like a missing one (the
# project's tenancy rule; ARCHITECTURE.md "Isolation vs. the whitelist"), so creating an
# endpoint on it answers 404 EndPoint.0005 rather than Huawei's 400 EndPoint.2012.
NOT_WHITELISTED = "EndPoint.0005"
NOT_CONNECTED = "EndPoint.2013"
ONE_ENDPOINT_ONLY = "EndPoint.2031"
SERVICE_IN_USE = "EndPoint.3006"
EMPTY_PERMISSIONS = "EndPoint.3036"
BAD_RESOURCE_TYPE = "EndPoint.3070"
AUTH_FAILED = "APIGW.0301"
AUTH_EXPIRED = "APIGW.0303"
NO_ROUTE = "APIGW.0101"

CLIENT_ERRORS = range(400, 500)

CREATING, AVAILABLE, DELETING, FAILED = "creating", "available", "deleting", "failed"
PENDING, ACCEPTED, REJECTED = "pendingAcceptance", "accepted", "rejected"
LB_DEVICE_OWNER = "neutron:LOADBALANCERV2"
MARKER_MIN = 1 << 24
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()

#: the 33 operations of spec section 2.1 = every public VpcepClient method that has an
#: `<op>_invoker` twin (the base Client has none)
VPCEP_OPERATIONS = frozenset(
    name[: -len("_invoker")]
    for name in dir(VpcepClient)
    if name.endswith("_invoker") and not name.startswith("_") and name not in dir(Client)
)
#: operations actually called during this pytest session (filled by RecordingClient)
CALLED_OPERATIONS: set[str] = set()


def raw_json(resp) -> Any:
    """The JSON body an SDK response was built from."""
    return json.loads(resp.raw_content)


def check_timestamps(record: dict, *fields: str) -> None:
    """Timestamps on the wire are `YYYY-MM-DDTHH:MM:SSZ` (spec section 7); the SDK
    turns them into datetimes, so this looks at the raw JSON record."""
    for f in fields or ("created_at", "updated_at"):
        assert TIMESTAMP.fullmatch(str(record.get(f))), f"{f} = {record.get(f)!r}"


def random_id() -> str:
    return str(uuid.uuid4())


def random_domain_id() -> str:
    return uuid.uuid4().hex


# --------------------------------------------------------------------------------------
# Polling and error assertions
# --------------------------------------------------------------------------------------


def wait_status(get_fn: Callable[[], Any], wanted, timeout: float = 10, interval: float = 0.05):
    """Poll `get_fn()` until its `.status` is in `wanted` (a str or a collection of
    str); return the last object. Fails with the last seen status on timeout."""
    wanted = {wanted} if isinstance(wanted, str) else set(wanted)
    deadline = time.monotonic() + timeout
    while True:
        obj = get_fn()
        if obj.status in wanted:
            return obj
        if time.monotonic() > deadline:
            pytest.fail(f"status stayed {obj.status!r}, wanted one of {sorted(wanted)} within {timeout}s")
        time.sleep(interval)


def wait_gone(get_fn: Callable[[], Any], pending: Iterable[str] = (DELETING,), timeout: float = 10,
              interval: float = 0.05) -> None:
    """Poll `get_fn()` until it raises a 404; meanwhile only `pending` statuses are
    acceptable (spec 2.5 #21: after DELETE a GET shows `deleting` or 404, never the
    old status)."""
    pending = set(pending)
    deadline = time.monotonic() + timeout
    while True:
        try:
            obj = get_fn()
        except ClientRequestException as e:
            assert e.status_code == 404, f"expected 404 after delete, got {e}"
            return
        assert obj.status in pending, f"after delete GET showed status {obj.status!r}, allowed {sorted(pending)}"
        if time.monotonic() > deadline:
            pytest.fail(f"resource still present (status {obj.status!r}) {timeout}s after delete")
        time.sleep(interval)


def check_code(actual: str, code) -> None:
    """`code`: None = any VPCEP/APIGW style code; str = exact; tuple/set = one of;
    compiled regex = full match."""
    if code is None:
        assert actual and re.fullmatch(r"[A-Za-z]+\.\d{4}", str(actual)), f"error_code {actual!r} is not a code"
    elif isinstance(code, str):
        assert actual == code, f"error_code {actual!r}, wanted {code!r}"
    elif isinstance(code, re.Pattern):
        assert actual and code.fullmatch(actual), f"error_code {actual!r} does not match {code.pattern!r}"
    else:
        assert actual in code, f"error_code {actual!r}, wanted one of {sorted(code)}"


def expect_error(call: Callable[[], Any], status=400, code=None) -> ClientRequestException:
    """Run an SDK call that must fail with HTTP `status` (an int, or a collection of
    acceptable ints) and error `code` (see check_code); the error must carry a
    message and a request id."""
    statuses = {status} if isinstance(status, int) else set(status)
    try:
        resp = call()
    except ServiceResponseException as e:
        err = e
    else:
        pytest.fail(f"expected HTTP {status} {code or ''}, but the call succeeded: {resp}")
    assert err.status_code in statuses, \
        f"got HTTP {err.status_code} {err.error_code} {err.error_msg!r}, wanted {sorted(statuses)}"
    assert isinstance(err, ClientRequestException)
    assert err.error_msg and err.error_msg.strip(), "error_msg is empty"
    assert err.request_id, "X-Request-Id header missing"
    check_code(err.error_code, code)
    return err


def expect_raw_error(resp: requests.Response, status: int, code=None) -> dict:
    """Same as expect_error for a raw `requests` response."""
    assert resp.status_code == status, f"got HTTP {resp.status_code} {resp.text[:300]!r}, wanted {status}"
    assert resp.headers.get("X-Request-Id"), "X-Request-Id header missing"
    try:
        body = resp.json()
    except ValueError:
        pytest.fail(f"error body is not JSON: {resp.text[:300]!r}")
    assert isinstance(body, dict), body
    assert body.get("error_msg"), f"error_msg missing/empty in {body}"
    check_code(body.get("error_code"), code)
    return body


# --------------------------------------------------------------------------------------
# SDK-HMAC-SHA256 signer (spec 1.3), independent of huaweicloudsdkcore
# --------------------------------------------------------------------------------------

SDK_DATE_FORMAT = "%Y%m%dT%H%M%SZ"


def _enc(s: str) -> str:
    return quote(s, safe="-_.~")


def canonical_uri(path: str) -> str:
    uri = "/".join(_enc(seg) for seg in unquote(path).split("/"))
    return uri if uri.endswith("/") else uri + "/"


def canonical_query(pairs: Iterable[tuple[str, Any]]) -> str:
    def text(v):
        return str(v).lower() if isinstance(v, bool) else str(v)

    items = sorted((k, text(v)) for k, v in pairs)
    return "&".join(f"{_enc(k)}={_enc(v)}" for k, v in items)


def sign_request(method: str, path: str, query: Iterable[tuple[str, Any]], headers: dict[str, str],
                 body: bytes, ak: str, sk: str, signed_headers: Optional[Iterable[str]] = None) -> str:
    """Return the Authorization header value for the request (spec 1.3). By default
    every header without `_` is signed; `signed_headers` narrows the list."""
    lowered = {k.lower(): str(v).strip() for k, v in headers.items() if "_" not in k}
    signed = sorted(signed_headers if signed_headers is not None else lowered)
    canonical = "\n".join([
        method.upper(),
        canonical_uri(path),
        canonical_query(query),
        "".join(f"{h}:{lowered[h]}\n" for h in signed),
        ";".join(signed),
        hashlib.sha256(body).hexdigest() if body else EMPTY_SHA256,
    ])
    string_to_sign = "\n".join([
        "SDK-HMAC-SHA256",
        lowered["x-sdk-date"],
        hashlib.sha256(canonical.encode()).hexdigest(),
    ])
    signature = hmac.new(sk.encode(), string_to_sign.encode(), hashlib.sha256).hexdigest()
    return f"SDK-HMAC-SHA256 Access={ak}, SignedHeaders={';'.join(signed)}, Signature={signature}"


def sdk_date(offset_seconds: float = 0) -> str:
    return datetime.fromtimestamp(time.time() + offset_seconds, timezone.utc).strftime(SDK_DATE_FORMAT)


class RawApi:
    """Hand-built, hand-signed HTTP requests for one tenant."""

    USER_AGENT = "huaweicloud-usdk-python/3.0; vpcep-conformance"

    def __init__(self, base_url: str, ak: str, sk: str, project_id: Optional[str]):
        self.base_url = base_url.rstrip("/")
        self.host = urlparse(self.base_url).netloc
        self.ak, self.sk, self.project_id = ak, sk, project_id

    def request(self, method: str, path: str, *, query: Iterable[tuple[str, Any]] = (), body: Any = None,
                headers: Optional[dict] = None, date: Optional[str] = None, sign: bool = True,
                ak: Optional[str] = None, sk: Optional[str] = None,
                mutate: Optional[Callable[[dict], None]] = None) -> requests.Response:
        """`path` may contain `{project}`; `body` dict/list → JSON like the SDK, str →
        UTF-8, bytes as is. `mutate(parts)` may change `url`, `headers` or `body`
        after signing (to test tampering)."""
        path = path.replace("{project}", self.project_id or "")
        query = list(query)
        if body is None:
            data = b""
        elif isinstance(body, (bytes, bytearray)):
            data = bytes(body)
        elif isinstance(body, str):
            data = body.encode()
        else:
            data = json.dumps(body).encode()
        hdrs = {
            "Content-Type": "application/json;charset=utf-8" if data else "application/json",
            "Host": self.host,
            "User-Agent": self.USER_AGENT,
            "X-Sdk-Date": date or sdk_date(),
        }
        if self.project_id:
            hdrs["X-Project-Id"] = self.project_id
        hdrs.update(headers or {})
        hdrs = {k: v for k, v in hdrs.items() if v is not None}
        if sign:
            hdrs["Authorization"] = sign_request(method, path, query, hdrs, data, ak or self.ak, sk or self.sk)
        qs = canonical_query(query)
        parts = {"url": self.base_url + path + (f"?{qs}" if qs else ""), "headers": hdrs, "body": data}
        if mutate:
            mutate(parts)
        return requests.request(method, parts["url"], headers=parts["headers"], data=parts["body"] or None,
                                timeout=30, allow_redirects=False)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body=body, **kw)

    def put(self, path, body=None, **kw):
        return self.request("PUT", path, body=body, **kw)

    def delete(self, path, **kw):
        return self.request("DELETE", path, **kw)


# --------------------------------------------------------------------------------------
# Server process
# --------------------------------------------------------------------------------------


def _die_with_parent() -> None:
    """In the child before exec: get SIGTERM if pytest itself dies (Linux prctl)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


_postgres: Optional[subprocess.Popen] = None


def _store_args() -> list[str]:
    """`--database URL` of a new database when the suite runs on PostgreSQL, else none.
    The cluster is started once, and stops when this process ends (its stdin closes)."""
    global _postgres
    if os.environ.get("VPCEP_SDK_ENGINE") != "postgres":
        return []
    if _postgres is None:
        binary = Path(os.environ.get("VPCEP_BIN", "target/debug/vpcep")).parent / "vpcep-testpg"
        _postgres = subprocess.Popen([str(binary)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, preexec_fn=_die_with_parent)
        if not _postgres.stdout.readline():
            pytest.exit(f"{binary} started no PostgreSQL cluster", returncode=3)
    _postgres.stdin.write(f"create sdk_{uuid.uuid4().hex[:12]}\n")
    _postgres.stdin.flush()
    url = _postgres.stdout.readline().strip()
    if not url.startswith("postgres"):
        pytest.exit(f"no test database: {url}", returncode=3)
    return ["--database", url]


class Server:
    """One `vpcep serve` process on a fresh data dir (and, on PostgreSQL, a fresh
    database)."""

    def __init__(self, binary: Path, data_dir: Path, extra_args: Iterable[str] = ()):
        self.binary, self.data_dir = binary, data_dir
        self.store_args = _store_args()
        self.extra_args = self.store_args + list(extra_args)
        self.proc: Optional[subprocess.Popen] = None
        self.url = ""
        self.log_path = data_dir.parent / "server.log"
        self.exited_early: Optional[int] = None

    def start(self, timeout: float = 30) -> None:
        if not self.binary.exists():
            pytest.exit(f"server binary {self.binary} not found (set VPCEP_BIN or build it)", returncode=2)
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [str(self.binary), "serve", "--data-dir", str(self.data_dir), "--listen", "127.0.0.1:0",
             "--metrics-listen", "127.0.0.1:0", "--region", REGION, *self.extra_args],
            stdout=subprocess.PIPE, stderr=self._log, text=True, preexec_fn=_die_with_parent,
        )
        first_line: list[str] = []
        got = threading.Event()

        def pump():  # keep reading so the server never blocks on a full pipe
            for line in self.proc.stdout:
                if not got.is_set():
                    first_line.append(line)
                    got.set()
            got.set()

        threading.Thread(target=pump, daemon=True, name="vpcep-stdout").start()
        if not got.wait(timeout) or not first_line:
            self.stop()
            pytest.exit(f"vpcep did not announce its address; stderr in {self.log_path}:\n"
                        f"{self.log_path.read_text()[-3000:]}", returncode=3)
        m = re.search(r"vpcep listening on (https?://127\.0\.0\.1:(\d+))", first_line[0])
        if not m:
            self.stop()
            pytest.exit(f"unexpected first stdout line from vpcep: {first_line[0]!r}", returncode=3)
        self.url = m.group(1)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is not None and self.url:
            self.exited_early = self.proc.returncode
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if getattr(self, "_log", None):
            self._log.close()

    def admin(self, *args: str) -> Any:
        """Run `vpcep admin ARGS --data-dir DIR`; return its stdout parsed as JSON
        (or the plain text when it is not JSON)."""
        cmd = [str(self.binary), "admin", *args, "--data-dir", str(self.data_dir), *self.store_args]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        assert res.returncode == 0, f"{' '.join(cmd)} failed ({res.returncode}): {res.stderr or res.stdout}"
        out = res.stdout.strip()
        try:
            return json.loads(out)
        except ValueError:
            return out


# --------------------------------------------------------------------------------------
# Tenants
# --------------------------------------------------------------------------------------


class RecordingClient:
    """Proxy of VpcepClient that records which operations were called."""

    def __init__(self, client: VpcepClient):
        self._client = client

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name in VPCEP_OPERATIONS:
            CALLED_OPERATIONS.add(name)
        return attr


def http_config() -> HttpConfig:
    cfg = HttpConfig.get_default_config()
    cfg.timeout = (5, 30)
    return cfg


def vpcep_client(url: str, ak: str, sk: str, project_id: Optional[str]) -> RecordingClient:
    return RecordingClient(VpcepClient.new_builder().with_http_config(http_config())
                           .with_credentials(BasicCredentials(ak, sk, project_id))
                           .with_endpoint(url).build())


def vpc_client(url: str, ak: str, sk: str, project_id: str) -> VpcClient:
    return (VpcClient.new_builder().with_http_config(http_config())
            .with_credentials(BasicCredentials(ak, sk, project_id)).with_endpoint(url).build())


@dataclass(frozen=True)
class Net:
    vpc_id: str
    subnet_id: str
    cidr: str

    def contains(self, ip: str) -> bool:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(self.cidr)


@dataclass(frozen=True)
class Backend:
    net: Net
    port_id: str
    ip: str
    server_type: str


def ports(*mappings) -> list:
    """ports((8080, 80), (53, 53, "UDP")) → [PortList…]; protocol defaults to TCP."""
    out = []
    for m in mappings:
        client_port, server_port, protocol = (tuple(m) + ("TCP",))[:3]
        out.append(ep.PortList(client_port=client_port, server_port=server_port, protocol=protocol))
    return out


def port_dicts(mappings) -> list[tuple]:
    """Normalise PortList models or dicts to comparable (client, server, protocol) tuples."""
    res = []
    for p in mappings or []:
        if isinstance(p, dict):
            res.append((p["client_port"], p["server_port"], p.get("protocol")))
        else:
            res.append((p.client_port, p.server_port, p.protocol))
    return sorted(res)


@dataclass
class Tenant:
    name: str
    domain_id: str
    project_id: str
    ak: str
    sk: str
    password: str
    server: Server = field(repr=False)
    vpcep: RecordingClient = field(init=False, repr=False)
    vpc: VpcClient = field(init=False, repr=False)
    raw: RawApi = field(init=False, repr=False)

    def __post_init__(self):
        self.vpcep = vpcep_client(self.server.url, self.ak, self.sk, self.project_id)
        self.vpc = vpc_client(self.server.url, self.ak, self.sk, self.project_id)
        self.raw = RawApi(self.server.url, self.ak, self.sk, self.project_id)

    @property
    def permission(self) -> str:
        """The whitelist entry naming this tenant's account."""
        return f"iam:domain::{self.domain_id}"

    # ---- VPC registry ---------------------------------------------------------------

    def create_vpc(self, cidr: str = "10.0.0.0/16", name: Optional[str] = None) -> str:
        body = vm.CreateVpcRequestBody(vpc=vm.CreateVpcOption(cidr=cidr, name=name or f"vpc-{uuid.uuid4().hex[:8]}"))
        return self.vpc.create_vpc(vm.CreateVpcRequest(body=body)).vpc.id

    def create_subnet(self, vpc_id: str, cidr: str = "10.0.1.0/24", name: Optional[str] = None) -> str:
        gateway = str(next(ipaddress.ip_network(cidr).hosts()))
        opt = vm.CreateSubnetOption(name=name or f"sn-{uuid.uuid4().hex[:8]}", cidr=cidr, gateway_ip=gateway,
                                    vpc_id=vpc_id)
        return self.vpc.create_subnet(vm.CreateSubnetRequest(body=vm.CreateSubnetRequestBody(subnet=opt))).subnet.id

    def network(self, vpc_cidr: str = "10.0.0.0/16", subnet_cidr: str = "10.0.1.0/24") -> Net:
        vpc_id = self.create_vpc(vpc_cidr)
        return Net(vpc_id, self.create_subnet(vpc_id, subnet_cidr), subnet_cidr)

    def create_port(self, subnet_id: str, ip: Optional[str] = None, lb: bool = False):
        opt = vm.CreatePortOption(network_id=subnet_id, fixed_ips=[vm.FixedIp(ip_address=ip)] if ip else None,
                                  device_owner=LB_DEVICE_OWNER if lb else None)
        return self.vpc.create_port(vm.CreatePortRequest(body=vm.CreatePortRequestBody(port=opt))).port

    def backend(self, lb: bool = False, net: Optional[Net] = None) -> Backend:
        net = net or self.network()
        port = self.create_port(net.subnet_id, lb=lb)
        return Backend(net, port.id, port.fixed_ips[0].ip_address, "LB" if lb else "VM")

    # ---- endpoint services ----------------------------------------------------------

    def create_service(self, backend: Optional[Backend] = None, **fields):
        """create_endpoint_service with sensible defaults (VM backend in a fresh VPC,
        8080→80/TCP, approval off); `fields` override body fields."""
        backend = backend or self.backend()
        body = dict(port_id=backend.port_id, vpc_id=backend.net.vpc_id, server_type=backend.server_type,
                    ports=ports((8080, 80)), approval_enabled=False)
        body.update(fields)
        return self.vpcep.create_endpoint_service(
            ep.CreateEndpointServiceRequest(body=ep.CreateEndpointServiceRequestBody(**body)))

    def service(self, backend: Optional[Backend] = None, **fields):
        """Create a service and wait until it is `available`; return its details."""
        sid = self.create_service(backend, **fields).id
        return wait_status(lambda: self.get_service(sid), AVAILABLE)

    def get_service(self, service_id: str):
        return self.vpcep.list_service_details(ep.ListServiceDetailsRequest(vpc_endpoint_service_id=service_id))

    def delete_service(self, service_id: str, wait: bool = True) -> None:
        self.vpcep.delete_endpoint_service(ep.DeleteEndpointServiceRequest(vpc_endpoint_service_id=service_id))
        if wait:
            wait_gone(lambda: self.get_service(service_id))

    def update_service(self, service_id: str, **fields):
        return self.vpcep.update_endpoint_service(ep.UpdateEndpointServiceRequest(
            vpc_endpoint_service_id=service_id, body=ep.UpdateEndpointServiceRequestBody(**fields)))

    def list_services(self, **query):
        return self.vpcep.list_endpoint_service(ep.ListEndpointServiceRequest(**query))

    # ---- endpoints ------------------------------------------------------------------

    def create_endpoint(self, service_id: str, net: Optional[Net] = None, **fields):
        """create_endpoint into `net` (a fresh VPC+subnet unless `net` is given or
        `vpc_id` is among `fields`); `fields` override body fields."""
        body = dict(endpoint_service_id=service_id)
        if net is None and "vpc_id" not in fields:
            net = self.network()
        if net is not None:
            body.update(vpc_id=net.vpc_id, subnet_id=net.subnet_id)
        body.update(fields)
        return self.vpcep.create_endpoint(ep.CreateEndpointRequest(body=ep.CreateEndpointRequestBody(**body)))

    def endpoint(self, service_id: str, net: Optional[Net] = None, wanted=(ACCEPTED, PENDING), **fields):
        """Create an endpoint and wait until it leaves `creating`; return details."""
        eid = self.create_endpoint(service_id, net, **fields).id
        return wait_status(lambda: self.get_endpoint(eid), wanted)

    def get_endpoint(self, endpoint_id: str):
        return self.vpcep.list_endpoint_info_details(ep.ListEndpointInfoDetailsRequest(vpc_endpoint_id=endpoint_id))

    def delete_endpoint(self, endpoint_id: str, wait: bool = True) -> None:
        self.vpcep.delete_endpoint(ep.DeleteEndpointRequest(vpc_endpoint_id=endpoint_id))
        if wait:
            wait_gone(lambda: self.get_endpoint(endpoint_id))

    def list_endpoints(self, **query):
        return self.vpcep.list_endpoints(ep.ListEndpointsRequest(**query))

    # ---- connections & permissions --------------------------------------------------

    def connections(self, service_id: str, **query):
        return self.vpcep.list_service_connections(
            ep.ListServiceConnectionsRequest(vpc_endpoint_service_id=service_id, **query))

    def act_on(self, service_id: str, action: str, endpoint_ids: list):
        return self.vpcep.accept_or_reject_endpoint(ep.AcceptOrRejectEndpointRequest(
            vpc_endpoint_service_id=service_id,
            body=ep.AcceptOrRejectEndpointRequestBody(action=action, endpoints=endpoint_ids)))

    def permit(self, service_id: str, permissions: list, action: str = "add"):
        return self.vpcep.add_or_remove_service_permissions(ep.AddOrRemoveServicePermissionsRequest(
            vpc_endpoint_service_id=service_id,
            body=ep.AddOrRemoveServicePermissionsRequestBody(permissions=permissions, action=action)))

    def permissions(self, service_id: str, **query):
        return self.vpcep.list_service_permissions_details(
            ep.ListServicePermissionsDetailsRequest(vpc_endpoint_service_id=service_id, **query))

    # ---- quotas ---------------------------------------------------------------------

    def quotas(self, type: Optional[str] = None) -> dict[str, tuple[int, int]]:
        """{type: (used, quota)}"""
        res = self.vpcep.list_quota_details(ep.ListQuotaDetailsRequest(type=type))
        return {q.type: (q.used, q.quota) for q in res.quotas.resources}

    def set_quota(self, endpoint_services: Optional[int] = None, endpoints: Optional[int] = None) -> None:
        args = ["quota", "set", self.name]
        if endpoint_services is not None:
            args += ["--endpoint-services", str(endpoint_services)]
        if endpoints is not None:
            args += ["--endpoints", str(endpoints)]
        self.server.admin(*args)


def batch_add_permissions(tenant, service_id, items):
    return tenant.vpcep.batch_add_endpoint_service_permissions(ep.BatchAddEndpointServicePermissionsRequest(
        vpc_endpoint_service_id=service_id,
        body=ep.BatchAddEndpointServicePermissionsRequestBody(
            permissions=[ep.EpsAddPermissionRequest(permission=p, description=d) for p, d in items],
            permission_type="domainId")))


def batch_remove_permissions(tenant, service_id, row_ids):
    return tenant.vpcep.batch_remove_endpoint_service_permissions(ep.BatchRemoveEndpointServicePermissionsRequest(
        vpc_endpoint_service_id=service_id,
        body=ep.BatchRemoveEndpointServicePermissionsRequestBody(
            permissions=[ep.EpsRemovePermissionRequest(id=i) for i in row_ids])))


def update_permission_desc(tenant, service_id, row_id, description):
    return tenant.vpcep.update_endpoint_service_permission_desc(ep.UpdateEndpointServicePermissionDescRequest(
        vpc_endpoint_service_id=service_id, permission_id=row_id,
        body=ep.UpdateEndpointServicePermissionDescRequestBody(
            permission=ep.EpsUpdatePermissionDesc(description=description))))


def describe_by_id(tenant: Tenant, service_id: str):
    return tenant.vpcep.list_service_describe_details(ep.ListServiceDescribeDetailsRequest(id=service_id))


# --------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------


_SERVERS: list[Server] = []


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The server under test, on a fresh data dir (pytest keeps the last few base temp
    dirs, so data and server.log survive a failed run). One per test module: the default
    loopback substrate realises at most 254 VPCs per server (127.N.0.0/16 each), and the
    whole suite creates more than that."""
    data_dir = tmp_path_factory.mktemp("vpcep") / "data"
    data_dir.mkdir()
    srv = Server(VPCEP_BIN, data_dir)
    _SERVERS.append(srv)
    try:
        srv.start()
        yield srv
    finally:
        srv.stop()


_tenant_counter = itertools.count(1)


@pytest.fixture(scope="module")
def make_tenant(server) -> Callable[[str], Tenant]:
    """Factory: a brand-new account (own domain, project, keys, default quotas)."""

    def make(prefix: str = "tenant") -> Tenant:
        info = server.admin("account", "create", f"{prefix}{next(_tenant_counter):04d}")
        return Tenant(name=info["name"], domain_id=info["domain_id"], project_id=info["project_id"],
                      ak=info["access_key"], sk=info["secret_key"], password=info.get("password", ""),
                      server=server)

    return make


@pytest.fixture
def alice(make_tenant) -> Tenant:
    return make_tenant("alice")


@pytest.fixture
def bob(make_tenant) -> Tenant:
    return make_tenant("bob")


@pytest.fixture
def carol(make_tenant) -> Tenant:
    return make_tenant("carol")


def wait_usable(tenant: Tenant, service_id: str, timeout: float = 10) -> None:
    """Tenants cannot read an operator service's status: poll by connecting to it
    until it stops answering "service not available" (EndPoint.2004), then clean up."""
    deadline = time.monotonic() + timeout
    vpc_id = tenant.create_vpc()
    net = Net(vpc_id, tenant.create_subnet(vpc_id), "10.0.1.0/24")
    while True:
        try:
            created = tenant.create_endpoint(service_id, net)
        except ClientRequestException as e:
            if e.error_code != "EndPoint.2004" or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
            continue
        wait_status(lambda: tenant.get_endpoint(created.id), (ACCEPTED, PENDING))
        tenant.delete_endpoint(created.id)
        return


@pytest.fixture(scope="module")
def public_services(server, make_tenant) -> dict[str, dict]:
    """Operator-published services, ready to be connected to: `dns` (interface) and
    `obs` (gateway, CIDR 100.125.0.0/16). Values are the JSON the admin CLI printed."""
    dns = server.admin("public-service", "create", "--name", "dns", "--type", "interface",
                       "--backend", "100.125.0.10", "--port", "53:53/UDP", "--port", "53:53/TCP")
    obs = server.admin("public-service", "create", "--name", "obs", "--type", "gateway",
                       "--backend", "100.125.0.20", "--cidr", "100.125.0.0/16")
    assert isinstance(dns, dict) and dns.get("id"), dns
    assert isinstance(obs, dict) and obs.get("id"), obs
    obs.setdefault("cidr", "100.125.0.0/16")
    probe = make_tenant("probe")
    for svc in (dns, obs):
        wait_usable(probe, svc["id"])
    return {"dns": dns, "obs": obs}


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    for srv in _SERVERS:
        terminalreporter.write_line(f"vpcep server log: {srv.log_path}")
        if srv.exited_early is not None:
            terminalreporter.write_line(f"WARNING: the vpcep server exited by itself (code {srv.exited_early})",
                                        red=True)
    if not CALLED_OPERATIONS:
        return
    missing = sorted(VPCEP_OPERATIONS - CALLED_OPERATIONS)
    terminalreporter.write_line(
        f"VpcepClient operations exercised: {len(VPCEP_OPERATIONS) - len(missing)}/{len(VPCEP_OPERATIONS)}"
        + (f" (not called: {', '.join(missing)})" if 0 < len(missing) <= 10 else ""))

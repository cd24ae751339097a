"""A table of malformed or invalid requests, sent by hand (correctly signed) so that
types and JSON syntax can be broken in ways the SDK models cannot express. Each must
answer 400 with {"error_code","error_msg"} and an X-Request-Id — never 5xx, never
422/415 from a framework extractor, never a silent success."""

import pytest

from conftest import (
    ACCEPTED,
    AVAILABLE,
    BAD_LIMIT,
    BAD_OFFSET,
    BAD_RESOURCE_TYPE,
    BAD_STATUS,
    EMPTY_PERMISSIONS,
    ONE_ENDPOINT_ONLY,
    PENDING,
    expect_raw_error,
    random_id,
)

DROP = object()


def variant(base: dict, **changes) -> dict:
    out = dict(base)
    for key, value in changes.items():
        if value is DROP:
            out.pop(key, None)
        else:
            out[key] = value
    return out


@pytest.fixture(scope="module")
def ctx(make_tenant):
    """One tenant with a backend, an available service (approval on), two pending
    endpoints and a spare network. Invalid requests must not change any of it."""
    t = make_tenant("invalid")
    backend = t.backend()
    svc = t.service(backend, approval_enabled=True)
    net = t.network()
    endpoints = [t.endpoint(svc.id, net) for _ in range(2)]
    return {
        "tenant": t,
        "service": svc.id,
        "endpoint": endpoints[0].id,
        "endpoint2": endpoints[1].id,
        "service_body": {"port_id": backend.port_id, "vpc_id": backend.net.vpc_id, "server_type": "VM",
                         "ports": [{"client_port": 8081, "server_port": 81, "protocol": "TCP"}]},
        "endpoint_body": {"endpoint_service_id": svc.id, "vpc_id": net.vpc_id, "subnet_id": net.subnet_id},
    }


SVC = "/v1/{project}/vpc-endpoint-services"
ONE_SVC = SVC + "/{service}"
EPS = "/v1/{project}/vpc-endpoints"
ONE_EP = EPS + "/{endpoint}"


def svc_body(**changes):
    return lambda c: variant(c["service_body"], **changes)


def ep_body(**changes):
    return lambda c: variant(c["endpoint_body"], **changes)


def const(body):
    return lambda c: body


def ports_of(*items):
    return svc_body(ports=list(items))


# (case id, method, path, body factory or None, query, expected code or None for "any")
CASES = [
    # ---- create_endpoint_service
    ("svc-malformed-json", "POST", SVC, const("{\"port_id\": "), (), None),
    ("svc-json-null", "POST", SVC, const("null"), (), None),
    ("svc-json-array", "POST", SVC, const([]), (), None),
    ("svc-json-string", "POST", SVC, const("\"service\""), (), None),
    ("svc-empty-object", "POST", SVC, const({}), (), None),
    ("svc-empty-body", "POST", SVC, None, (), None),
    ("svc-no-port_id", "POST", SVC, svc_body(port_id=DROP), (), None),
    ("svc-no-vpc_id", "POST", SVC, svc_body(vpc_id=DROP), (), None),
    ("svc-no-server_type", "POST", SVC, svc_body(server_type=DROP), (), None),
    ("svc-no-ports", "POST", SVC, svc_body(ports=DROP), (), None),
    ("svc-null-ports", "POST", SVC, svc_body(ports=None), (), None),
    ("svc-port_id-number", "POST", SVC, svc_body(port_id=123), (), None),
    ("svc-ports-string", "POST", SVC, svc_body(ports="8080:80"), (), None),
    ("svc-ports-empty-item", "POST", SVC, ports_of({}), (), None),
    ("svc-port-as-string", "POST", SVC, ports_of({"client_port": "80", "server_port": 80}), (), None),
    ("svc-port-fraction", "POST", SVC, ports_of({"client_port": 80.5, "server_port": 80}), (), None),
    ("svc-port-huge", "POST", SVC, ports_of({"client_port": 10 ** 20, "server_port": 80}), (), None),
    ("svc-port-negative", "POST", SVC, ports_of({"client_port": -80, "server_port": 80}), (), None),
    ("svc-protocol-number", "POST", SVC, ports_of({"client_port": 80, "server_port": 80, "protocol": 6}), (), None),
    ("svc-protocol-bad", "POST", SVC, ports_of({"client_port": 80, "server_port": 80, "protocol": "SCTP"}), (), None),
    ("svc-approval-string", "POST", SVC, svc_body(approval_enabled="yes"), (), None),
    ("svc-name-number", "POST", SVC, svc_body(service_name=42), (), None),
    ("svc-name-too-long", "POST", SVC, svc_body(service_name="n" * 17), (), None),
    ("svc-name-bad-char", "POST", SVC, svc_body(service_name="bad name"), (), None),
    ("svc-server_type-bad", "POST", SVC, svc_body(server_type="DOCKER"), (), None),
    ("svc-service_type-bad", "POST", SVC, svc_body(service_type="tunnel"), (), None),
    ("svc-tcp_proxy-bad", "POST", SVC, svc_body(tcp_proxy="maybe"), (), None),
    ("svc-description-html", "POST", SVC, svc_body(description="<b>"), (), None),
    ("svc-description-number", "POST", SVC, svc_body(description=7), (), None),
    ("svc-tags-string", "POST", SVC, svc_body(tags="env=prod"), (), None),
    ("svc-tag-key-number", "POST", SVC, svc_body(tags=[{"key": 1, "value": "x"}]), (), None),
    ("svc-ip_version-bad", "POST", SVC, svc_body(ip_version="ipv5"), (), None),
    # ---- create_endpoint
    ("ep-malformed-json", "POST", EPS, const("{]"), (), None),
    ("ep-empty-object", "POST", EPS, const({}), (), None),
    ("ep-empty-body", "POST", EPS, None, (), None),
    ("ep-no-service", "POST", EPS, ep_body(endpoint_service_id=DROP), (), None),
    ("ep-no-vpc", "POST", EPS, ep_body(vpc_id=DROP), (), None),
    ("ep-no-subnet", "POST", EPS, ep_body(subnet_id=DROP), (), None),
    ("ep-empty-service-id", "POST", EPS, ep_body(endpoint_service_id=""), (), None),
    ("ep-service-id-number", "POST", EPS, ep_body(endpoint_service_id=1), (), None),
    ("ep-enable_dns-string", "POST", EPS, ep_body(enable_dns="true"), (), None),
    ("ep-whitelist-string", "POST", EPS, ep_body(whitelist="10.0.0.1"), (), None),
    ("ep-whitelist-number", "POST", EPS, ep_body(whitelist=[10]), (), None),
    ("ep-whitelist-bad-ip", "POST", EPS, ep_body(whitelist=["10.0.0.300"]), (), None),
    ("ep-enable_whitelist-number", "POST", EPS, ep_body(enable_whitelist=1), (), None),
    ("ep-port_ip-number", "POST", EPS, ep_body(port_ip=5), (), None),
    ("ep-port_ip-bad", "POST", EPS, ep_body(port_ip="10.0.1"), (), None),
    ("ep-routetables-string", "POST", EPS, ep_body(routetables="rt"), (), None),
    ("ep-description-html", "POST", EPS, ep_body(description="a>b"), (), None),
    ("ep-tags-bad", "POST", EPS, ep_body(tags=[{"key": "", "value": "x"}]), (), None),
    ("ep-ip_version-bad", "POST", EPS, ep_body(ip_version="ipv7"), (), None),
    # ---- update_endpoint_service / name
    ("upd-malformed-json", "PUT", ONE_SVC, const("{"), (), None),
    ("upd-approval-string", "PUT", ONE_SVC, const({"approval_enabled": "no"}), (), None),
    ("upd-ports-changed", "PUT", ONE_SVC, const({"ports": [{"client_port": 1, "server_port": 1}]}), (), None),
    ("upd-ports-string", "PUT", ONE_SVC, const({"ports": "none"}), (), None),
    ("upd-name-bad", "PUT", ONE_SVC, const({"service_name": "a b"}), (), None),
    ("upd-tcp_proxy-number", "PUT", ONE_SVC, const({"tcp_proxy": 5}), (), None),
    ("upd-description-html", "PUT", ONE_SVC, const({"description": "<"}), (), None),
    ("upd-port_id-unknown", "PUT", ONE_SVC, lambda c: {"port_id": random_id()}, (), None),
    ("name-number", "PUT", ONE_SVC + "/name", const({"endpoint_service_name": 5}), (), None),
    ("name-too-long", "PUT", ONE_SVC + "/name", const({"endpoint_service_name": "n" * 17}), (), None),
    ("name-malformed", "PUT", ONE_SVC + "/name", const("name"), (), None),
    # ---- permissions
    ("perm-empty", "POST", ONE_SVC + "/permissions/action", const({"permissions": [], "action": "add"}), (),
     EMPTY_PERMISSIONS),
    ("perm-no-action", "POST", ONE_SVC + "/permissions/action", const({"permissions": ["*"]}), (), None),
    ("perm-no-list", "POST", ONE_SVC + "/permissions/action", const({"action": "add"}), (), None),
    ("perm-string", "POST", ONE_SVC + "/permissions/action", const({"permissions": "*", "action": "add"}), (), None),
    ("perm-number", "POST", ONE_SVC + "/permissions/action", const({"permissions": [5], "action": "add"}), (), None),
    ("perm-type-bad", "POST", ONE_SVC + "/permissions/action",
     const({"permissions": ["*"], "action": "add", "permission_type": "everyone"}), (), None),
    ("perm-batch-no-permission", "POST", ONE_SVC + "/permissions/batch-create",
     const({"permissions": [{"description": "x"}]}), (), None),
    ("perm-batch-string", "POST", ONE_SVC + "/permissions/batch-create", const({"permissions": "x"}), (), None),
    ("perm-batch-empty-object", "POST", ONE_SVC + "/permissions/batch-create", const({}), (), None),
    ("perm-batch-delete-no-id", "POST", ONE_SVC + "/permissions/batch-delete", const({"permissions": [{}]}), (),
     None),
    ("perm-batch-delete-string", "POST", ONE_SVC + "/permissions/batch-delete", const({"permissions": "x"}), (),
     None),
    # ---- connections
    ("conn-no-endpoints", "POST", ONE_SVC + "/connections/action", const({"action": "receive"}), (), None),
    ("conn-no-action", "POST", ONE_SVC + "/connections/action", lambda c: {"endpoints": [c["endpoint"]]}, (),
     None),
    ("conn-endpoints-string", "POST", ONE_SVC + "/connections/action",
     lambda c: {"action": "receive", "endpoints": c["endpoint"]}, (), None),
    ("conn-two-endpoints", "POST", ONE_SVC + "/connections/action",
     lambda c: {"action": "receive", "endpoints": [c["endpoint"], c["endpoint2"]]}, (), ONE_ENDPOINT_ONLY),
    ("conn-desc-no-id", "PUT", ONE_SVC + "/connections/description",
     const({"connections": [{"description": "x"}]}), (), None),
    ("conn-desc-string", "PUT", ONE_SVC + "/connections/description", const({"connections": "x"}), (), None),
    ("conn-desc-html", "PUT", ONE_SVC + "/connections/description",
     lambda c: {"connections": [{"id": c["endpoint"], "description": "<i>"}]}, (), None),
    # ---- endpoint updates
    ("white-string", "PUT", ONE_EP, const({"whitelist": "1.2.3.4"}), (), None),
    ("white-enable-string", "PUT", ONE_EP, const({"whitelist": [], "enable_whitelist": "yes"}), (), None),
    ("white-malformed", "PUT", ONE_EP, const("[1.2.3.4]"), (), None),
    ("policy-string", "PUT", ONE_EP + "/policy", const({"policy_statement": "allow all"}), (), None),
    ("policy-incomplete", "PUT", ONE_EP + "/policy", const({"policy_statement": [{"Effect": "Allow"}]}), (), None),
    ("routetables-missing", "PUT", ONE_EP + "/routetables", const({}), (), None),
    ("routetables-string", "PUT", ONE_EP + "/routetables", const({"routetables": "rt"}), (), None),
    # ---- tags
    ("tag-no-tags", "POST", "/v1/{project}/endpoint_service/{service}/tags/action", const({"action": "create"}),
     (), None),
    ("tag-no-action", "POST", "/v1/{project}/endpoint_service/{service}/tags/action",
     const({"tags": [{"key": "a", "value": "b"}]}), (), None),
    ("tag-tags-string", "POST", "/v1/{project}/endpoint_service/{service}/tags/action",
     const({"action": "create", "tags": "a=b"}), (), None),
    ("tag-no-key", "POST", "/v1/{project}/endpoint_service/{service}/tags/action",
     const({"action": "create", "tags": [{"value": "b"}]}), (), None),
    ("tag-bad-resource-type", "POST", "/v1/{project}/endpoint_services/{service}/tags/action",
     const({"action": "create", "tags": [{"key": "a", "value": "b"}]}), (), BAD_RESOURCE_TYPE),
    ("tags-list-bad-resource-type", "GET", "/v1/{project}/subnet/tags", None, (), BAD_RESOURCE_TYPE),
    ("instances-empty", "POST", "/v1/{project}/endpoint_service/resource_instances/action", const({}), (), None),
    ("instances-tags-string", "POST", "/v1/{project}/endpoint_service/resource_instances/action",
     const({"action": "filter", "tags": "x"}), (), None),
    ("instances-without-any-tag-string", "POST", "/v1/{project}/endpoint_service/resource_instances/action",
     const({"action": "filter", "without_any_tag": "yes"}), (), None),
    ("instances-bad-resource-type", "POST", "/v1/{project}/port/resource_instances/action",
     const({"action": "count"}), (), BAD_RESOURCE_TYPE),
    # ---- v2
    ("upgrade-endpoint-bad-action", "POST", "/v2/{project}/vpc-endpoints/{endpoint}/upgrade",
     const({"action": "stop"}), (), None),
    ("upgrade-endpoint-malformed", "POST", "/v2/{project}/vpc-endpoints/{endpoint}/upgrade", const("{"), (), None),
    ("server-resources-string", "POST", "/v2/{project}/vpc-endpoint-services/{service}/add-server-resources",
     const({"server_resources": "lb"}), (), None),
    ("server-resources-no-id", "POST", "/v2/{project}/vpc-endpoint-services/{service}/add-server-resources",
     const({"server_resources": [{}]}), (), None),
    # ---- query strings
    ("q-svc-limit-text", "GET", SVC, None, [("limit", "ten")], (BAD_LIMIT, "EndPoint.0002")),
    ("q-svc-limit-fraction", "GET", SVC, None, [("limit", "1.5")], (BAD_LIMIT, "EndPoint.0002")),
    ("q-svc-limit-huge", "GET", SVC, None, [("limit", str(10 ** 20))], (BAD_LIMIT, "EndPoint.0002")),
    ("q-svc-offset-text", "GET", SVC, None, [("offset", "x")], (BAD_OFFSET, "EndPoint.0002")),
    ("q-svc-status", "GET", SVC, None, [("status", "gone")], BAD_STATUS),
    ("q-ep-limit-text", "GET", EPS, None, [("limit", "all")], (BAD_LIMIT, "EndPoint.0002")),
    ("q-ep-offset-negative", "GET", EPS, None, [("offset", "-3")], BAD_OFFSET),
    ("q-quota-type", "GET", "/v1/{project}/quotas", None, [("type", "vpc")], None),
    ("q-conn-marker-text", "GET", ONE_SVC + "/connections", None, [("marker_id", "abc")], None),
    ("q-conn-limit-text", "GET", ONE_SVC + "/connections", None, [("limit", "x")], (BAD_LIMIT, "EndPoint.0002")),
    ("q-perm-limit-501", "GET", ONE_SVC + "/permissions", None, [("limit", "501")], BAD_LIMIT),
    ("q-public-limit-text", "GET", SVC + "/public", None, [("limit", "x")], (BAD_LIMIT, "EndPoint.0002")),
    ("q-describe-nothing", "GET", SVC + "/describe", None, [], None),
]


@pytest.mark.parametrize("case_id, method, path, body, query, code", CASES, ids=[c[0] for c in CASES])
def test_invalid_request_is_400(ctx, case_id, method, path, body, query, code):
    t = ctx["tenant"]
    path = path.format(project=t.project_id, service=ctx["service"], endpoint=ctx["endpoint"])
    resp = t.raw.request(method, path, body=body(ctx) if body else None, query=query)
    expect_raw_error(resp, 400, code)


def test_invalid_requests_changed_nothing(ctx):
    """Runs after the table (same module, file order): the fixture's resources are intact."""
    t = ctx["tenant"]
    svc = t.get_service(ctx["service"])
    assert svc.status == AVAILABLE and svc.approval_enabled is True
    assert [(p.client_port, p.server_port) for p in svc.ports] == [(8080, 80)]
    assert svc.tags in ([], None) and svc.description in ("", None)
    assert t.list_services().total_count == 1
    assert t.list_endpoints().total_count == 2
    assert t.permissions(ctx["service"]).total_count == 0
    for key in ("endpoint", "endpoint2"):
        endpoint = t.get_endpoint(ctx[key])
        assert endpoint.status == PENDING and endpoint.whitelist == []
    assert ACCEPTED not in {c.status for c in t.connections(ctx["service"]).connections}

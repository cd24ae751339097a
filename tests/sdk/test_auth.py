"""Authentication (spec section 1): SDK-HMAC-SHA256 signatures, clock window,
tenancy of the project id in the path, routing errors."""

import hashlib
import json

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    AUTH_EXPIRED,
    AUTH_FAILED,
    BAD_PROJECT,
    HEX32,
    NOT_FOUND,
    NO_PERMISSION,
    NO_ROUTE,
    RawApi,
    canonical_query,
    canonical_uri,
    expect_error,
    expect_raw_error,
    random_domain_id,
    random_id,
    sdk_date,
    sign_request,
    vpcep_client,
)

# ---- the signer used by these tests reproduces the worked examples of spec 1.4 --------

EXAMPLE_AK = "HPUAEXAMPLEAK0000001"
EXAMPLE_SK = "exampleSecretKey0123456789abcdefEXAMPLE0"
EXAMPLE_PROJECT = "0605767a3300d5762fb7c0186d9d8d5f"
EXAMPLE_HEADERS = {
    "Host": "vpcep.cn-north-4.myhuaweicloud.com",
    "User-Agent": "huaweicloud-usdk-python/3.0",
    "X-Project-Id": EXAMPLE_PROJECT,
    "X-Sdk-Date": "20250101T120000Z",
}


def test_signer_matches_spec_example_a():
    body = (b'{"endpoint_service_id": "b8f7a2d4-0c1e-4f8a-9d2b-3c4e5f6a7b8c", '
            b'"vpc_id": "4189d3c2-8882-4871-a3c2-d380272eed83", '
            b'"subnet_id": "7f0c6a5e-1b2d-4c3e-8f9a-0b1c2d3e4f5a", "enable_dns": true}')
    assert len(body) == 186
    assert hashlib.sha256(body).hexdigest() == "4fa2fb2bd06a4fda919d92ac845a40cc81bf7cf0aec6e19b0caceb092e91b8f9"
    headers = dict(EXAMPLE_HEADERS, **{"Content-Type": "application/json;charset=utf-8"})
    auth = sign_request("POST", f"/v1/{EXAMPLE_PROJECT}/vpc-endpoints", [], headers, body, EXAMPLE_AK, EXAMPLE_SK)
    assert auth == ("SDK-HMAC-SHA256 Access=HPUAEXAMPLEAK0000001, "
                    "SignedHeaders=content-type;host;user-agent;x-project-id;x-sdk-date, "
                    "Signature=81e5d54dd6bb14340468e338457bff171afc97a0641136ad567fe9cbdc2b8d7a")


def test_signer_matches_spec_example_b():
    query = [("status", "available"), ("limit", 20), ("endpoint_service_name", "my svc/1"), ("offset", 0)]
    assert canonical_query(query) == "endpoint_service_name=my%20svc%2F1&limit=20&offset=0&status=available"
    assert canonical_uri(f"/v1/{EXAMPLE_PROJECT}/vpc-endpoint-services") == \
        f"/v1/{EXAMPLE_PROJECT}/vpc-endpoint-services/"
    headers = dict(EXAMPLE_HEADERS, **{"Content-Type": "application/json"})
    auth = sign_request("GET", f"/v1/{EXAMPLE_PROJECT}/vpc-endpoint-services", query, headers, b"",
                        EXAMPLE_AK, EXAMPLE_SK)
    assert auth.endswith("Signature=bb06215d54b3ce51dd7bb1c79ba21c774db3bfc6ee8892cceb4d2a3e4504c7f1")


# ---- requests against the server ------------------------------------------------------


def test_admin_account_create_contract(alice, bob):
    for t in (alice, bob):
        assert HEX32.fullmatch(t.domain_id) and HEX32.fullmatch(t.project_id)
        assert t.ak and t.sk and t.password
    assert len({alice.domain_id, alice.project_id, bob.domain_id, bob.project_id}) == 4
    assert alice.ak != bob.ak

LIST_SERVICES = "/v1/{project}/vpc-endpoint-services"


def test_hand_signed_request_is_accepted(alice):
    resp = alice.raw.get(LIST_SERVICES, query=[("limit", 5)])
    assert resp.status_code == 200, resp.text
    assert resp.headers.get("X-Request-Id")
    body = resp.json()
    assert body["endpoint_services"] == [] and body["total_count"] == 0


def test_hand_signed_post_with_body_is_accepted(alice):
    resp = alice.raw.post(f"/v1/{alice.project_id}/vpc-endpoint-services/{random_id()}/permissions/action",
                          body={"permissions": ["*"], "action": "add"})
    # signature is fine, the service does not exist
    expect_raw_error(resp, 404)


def test_request_id_differs_between_requests(alice):
    ids = {alice.raw.get(LIST_SERVICES).headers.get("X-Request-Id") for _ in range(3)}
    assert None not in ids and len(ids) == 3


def test_extra_signed_headers_are_honoured(alice):
    """The server must use the SignedHeaders list of the request, not a fixed set."""
    resp = alice.raw.get(LIST_SERVICES, headers={"X-Custom-Thing": "inner  spaces kept", "Accept": "*/*"})
    assert resp.status_code == 200, resp.text


def test_unsigned_request_is_401(alice):
    expect_raw_error(alice.raw.get(LIST_SERVICES, sign=False), 401, (AUTH_FAILED, AUTH_EXPIRED))


@pytest.mark.parametrize("authorization", [
    "garbage",
    "SDK-HMAC-SHA256 Access=x",
    "SDK-HMAC-SHA256 Access=AK, SignedHeaders=host;x-sdk-date, Signature=nothex",
    "Bearer abcdef",
])
def test_malformed_authorization_is_401(alice, authorization):
    def replace(parts):
        parts["headers"]["Authorization"] = authorization

    expect_raw_error(alice.raw.get(LIST_SERVICES, mutate=replace), 401, (AUTH_FAILED, AUTH_EXPIRED))


def test_bad_signature_is_401(alice):
    def flip(parts):
        auth = parts["headers"]["Authorization"]
        last = auth[-1]
        parts["headers"]["Authorization"] = auth[:-1] + ("0" if last != "0" else "1")

    expect_raw_error(alice.raw.get(LIST_SERVICES, mutate=flip), 401, AUTH_FAILED)


def test_wrong_secret_key_is_401(alice, bob):
    expect_raw_error(alice.raw.get(LIST_SERVICES, sk=bob.sk), 401, AUTH_FAILED)


def test_unknown_access_key_is_401(alice):
    expect_raw_error(alice.raw.get(LIST_SERVICES, ak="UNKNOWNAK0000000000X"), 401, AUTH_FAILED)


def test_unknown_access_key_via_sdk_is_401(server, alice):
    client = vpcep_client(server.url, "UNKNOWNAK0000000000X", alice.sk, alice.project_id)
    expect_error(lambda: client.list_endpoint_service(ep.ListEndpointServiceRequest()), 401, AUTH_FAILED)


def test_tampered_body_is_401(alice):
    def tamper(parts):
        parts["body"] = json.dumps({"permissions": ["*"], "action": "remove"}).encode()

    resp = alice.raw.post(f"/v1/{alice.project_id}/vpc-endpoint-services/{random_id()}/permissions/action",
                          body={"permissions": ["*"], "action": "add"}, mutate=tamper)
    expect_raw_error(resp, 401, AUTH_FAILED)


def test_tampered_query_is_401(alice):
    def tamper(parts):
        parts["url"] = parts["url"].replace("limit=5", "limit=6")

    expect_raw_error(alice.raw.get(LIST_SERVICES, query=[("limit", 5)], mutate=tamper), 401, AUTH_FAILED)


def test_tampered_signed_header_is_401(alice):
    def tamper(parts):
        parts["headers"]["User-Agent"] = "something-else"

    expect_raw_error(alice.raw.get(LIST_SERVICES, mutate=tamper), 401, AUTH_FAILED)


def test_missing_signed_header_is_401(alice):
    def drop(parts):
        del parts["headers"]["X-Project-Id"]

    expect_raw_error(alice.raw.get(LIST_SERVICES, mutate=drop), 401, AUTH_FAILED)


def test_signature_without_sdk_date_in_signed_headers_is_401(alice):
    """SignedHeaders must include x-sdk-date (spec 1.5 step 2), even when the
    signature over the shorter list is otherwise correct."""

    def resign(parts):
        parts["headers"]["Authorization"] = sign_request(
            "GET", f"/v1/{alice.project_id}/vpc-endpoint-services", [], parts["headers"], b"",
            alice.ak, alice.sk, signed_headers=["content-type", "host"])

    expect_raw_error(alice.raw.get(LIST_SERVICES, mutate=resign), 401, (AUTH_FAILED, AUTH_EXPIRED))


@pytest.mark.parametrize("offset_minutes", [-20, 20, -24 * 60])
def test_sdk_date_outside_window_is_401_apigw0303(alice, offset_minutes):
    expect_raw_error(alice.raw.get(LIST_SERVICES, date=sdk_date(offset_minutes * 60)), 401, AUTH_EXPIRED)


@pytest.mark.parametrize("offset_minutes", [-10, 10])
def test_sdk_date_inside_window_is_accepted(alice, offset_minutes):
    resp = alice.raw.get(LIST_SERVICES, date=sdk_date(offset_minutes * 60))
    assert resp.status_code == 200, resp.text


@pytest.mark.parametrize("date", ["2025-01-01T12:00:00Z", "yesterday", "20251301T250000Z"])
def test_malformed_sdk_date_is_401(alice, date):
    expect_raw_error(alice.raw.get(LIST_SERVICES, date=date), 401, (AUTH_FAILED, AUTH_EXPIRED))


def test_query_with_space_slash_and_unicode_is_verified(alice):
    """Canonical query encoding (spec 1.3 step 6.3) through the real SDK."""
    for name in ["my svc/1", "a*b+c", "名字", "x=y&z"]:
        res = alice.list_services(endpoint_service_name=name)
        assert res.total_count == 0 and res.endpoint_services == []


@pytest.mark.parametrize("odd_id", ["a b", "x/y", "名字", "a*b+c", "~tilde.dot_", "%41"])
def test_odd_path_ids_are_signed_and_routed(alice, odd_id):
    """The SDK URL-quotes path ids (safe=''); the server must verify the signature
    over the decoded-then-re-encoded path and answer like for any unknown id."""
    expect_error(lambda: alice.get_service(odd_id), (400, 404), (NOT_FOUND, "EndPoint.0002", "EndPoint.3062"))
    expect_error(lambda: alice.get_endpoint(odd_id), (400, 404),
                 (NOT_FOUND, "EndPoint.2006", "EndPoint.0002", "EndPoint.2017"))


def test_x_project_id_header_is_optional(alice):
    """Spec 1.5 step 7: the path project must match X-Project-Id *when present*."""
    resp = alice.raw.get(LIST_SERVICES, headers={"X-Project-Id": None})
    assert resp.status_code == 200, resp.text


def test_plus_in_query_is_not_a_space(alice):
    """Spec 1.5 step 5: the raw query is percent-decoded without turning `+` into a
    space, so a literal `+` signs like %2B."""
    def literal_plus(parts):
        parts["url"] = parts["url"].replace("%2B", "+")

    resp = alice.raw.get(LIST_SERVICES, query=[("endpoint_service_name", "a+b")], mutate=literal_plus)
    assert "+" in resp.url
    assert resp.status_code == 200, resp.text


def test_other_accounts_project_in_path_is_403(alice, bob):
    raw = RawApi(alice.server.url, alice.ak, alice.sk, bob.project_id)
    expect_raw_error(raw.get(LIST_SERVICES), 403, NO_PERMISSION)


def test_other_accounts_project_via_sdk_is_403(server, alice, bob):
    client = vpcep_client(server.url, alice.ak, alice.sk, bob.project_id)
    expect_error(lambda: client.list_endpoints(ep.ListEndpointsRequest()), 403, NO_PERMISSION)


def test_path_project_differs_from_header_project(alice, bob):
    resp = alice.raw.get(f"/v1/{bob.project_id}/vpc-endpoint-services")
    assert resp.status_code in (400, 403), resp.text
    expect_raw_error(resp, resp.status_code, (BAD_PROJECT, NO_PERMISSION))


def test_unknown_project_is_rejected(alice):
    raw = RawApi(alice.server.url, alice.ak, alice.sk, random_domain_id())
    resp = raw.get(LIST_SERVICES)
    assert resp.status_code in (400, 403), resp.text
    expect_raw_error(resp, resp.status_code, (BAD_PROJECT, NO_PERMISSION))


def test_placeholder_project_without_credentials_project(server, alice):
    """BasicCredentials without project id + with_endpoint → the SDK sends the literal
    `{project_id}` path: 400 EndPoint.0014, or resolved to the AK's own project."""
    client = vpcep_client(server.url, alice.ak, alice.sk, None)
    try:
        res = client.list_endpoints(ep.ListEndpointsRequest())
    except ClientRequestException as e:
        assert (e.status_code, e.error_code) == (400, BAD_PROJECT), str(e)
    else:
        assert res.total_count == 0


def test_unknown_route_is_404_apigw0101(alice):
    expect_raw_error(alice.raw.get("/v1/{project}/no-such-collection"), 404, NO_ROUTE)
    expect_raw_error(alice.raw.get("/v3/{project}/vpc-endpoints"), 404, NO_ROUTE)


def test_unknown_method_is_404_apigw0101(alice):
    """Spec 1.8: APIGW.0101 = no such API/route (or method)."""
    expect_raw_error(alice.raw.request("PATCH", "/v1/{project}/vpc-endpoints"), 404, NO_ROUTE)
    expect_raw_error(alice.raw.delete("/v1/{project}/quotas"), 404, NO_ROUTE)


def test_oversized_body_is_413_apigw0201(alice):
    """Spec 1.8: bodies over 12 MB are refused by the gateway layer."""
    resp = alice.raw.post("/v1/{project}/vpc-endpoints", body={"description": "x" * (13 * 1024 * 1024)})
    expect_raw_error(resp, 413, "APIGW.0201")


def test_versions_are_served_without_auth(alice):
    for path in ["/", "/v1", "/v2"]:
        resp = alice.raw.get(path, sign=False)
        assert resp.status_code == 200, (path, resp.text)

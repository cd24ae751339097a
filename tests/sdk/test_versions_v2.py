"""Version discovery (spec 2.8) and the v2 operations (spec 2.9).

The v2 operations must answer 2xx or a documented 400 error — never a routing 404
(APIGW.0101) nor a 5xx."""

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    AVAILABLE,
    CREATING,
    NOT_FOUND,
    NOT_FOUND_ENDPOINT,
    NO_ROUTE,
    check_timestamps,
    expect_error,
    random_id,
    raw_json,
)

VERSION_STATUSES = {"CURRENT", "SUPPORT", "DEPRECATED"}


def check_version(v, raw, vid):
    assert v.id == vid
    assert v.status in VERSION_STATUSES
    assert v.links and all(link.href and link.rel for link in v.links)
    check_timestamps(raw, "updated")


def test_list_versions(alice):
    res = alice.vpcep.list_version_details(ep.ListVersionDetailsRequest())
    by_id = {v.id: v for v in res.versions}
    assert {"v1", "v2"} <= set(by_id), by_id.keys()
    for v, raw in zip(res.versions, raw_json(res)["versions"]):
        check_version(v, raw, v.id)
    assert sum(v.status == "CURRENT" for v in res.versions) >= 1


@pytest.mark.parametrize("version", ["v1", "v2"])
def test_show_version(alice, version):
    res = alice.vpcep.list_specified_version_details(ep.ListSpecifiedVersionDetailsRequest(version=version))
    check_version(res.version, raw_json(res)["version"], version)


def test_show_unknown_version_is_404(alice):
    expect_error(lambda: alice.vpcep.list_specified_version_details(
        ep.ListSpecifiedVersionDetailsRequest(version="v9")), 404)


def outcome(call):
    """Run a v2 call: return the response, or the ClientRequestException after checking
    it is a documented error (400 with a VPCEP code)."""
    try:
        return call()
    except ClientRequestException as e:
        assert e.error_code != NO_ROUTE, f"route missing: {e}"
        assert e.status_code == 400, str(e)
        assert e.error_code and e.error_msg, str(e)
        return e


def test_add_endpoint_service_server_resource(alice):
    backend = alice.backend(lb=True)
    svc = alice.service(backend)
    extra_lb = alice.create_port(backend.net.subnet_id, lb=True)
    res = outcome(lambda: alice.vpcep.add_endpoint_service_server_resource(
        ep.AddEndpointServiceServerResourceRequest(
            vpc_endpoint_service_id=svc.id,
            body=ep.AddEndpointServiceServerResourceRequestBody(
                server_resources=[ep.ServerResource(resource_id=extra_lb.id, availability_zone_id="local-1a")]))))
    if not isinstance(res, ClientRequestException):
        assert res.status_code in (200, 202, 204)
    # the service is still usable
    assert alice.get_service(svc.id).status in (AVAILABLE, CREATING)


def test_add_server_resource_without_resources_is_400(alice):
    svc = alice.service(alice.backend(lb=True))
    expect_error(lambda: alice.vpcep.add_endpoint_service_server_resource(
        ep.AddEndpointServiceServerResourceRequest(
            vpc_endpoint_service_id=svc.id,
            body=ep.AddEndpointServiceServerResourceRequestBody(server_resources=[ep.ServerResource()]))), 400)


def test_upgrade_endpoint_service(alice):
    svc = alice.service()
    res = outcome(lambda: alice.vpcep.upgrade_endpoint_service(
        ep.UpgradeEndpointServiceRequest(vpc_endpoint_service_id=svc.id)))
    if not isinstance(res, ClientRequestException):
        assert res.status_code in (200, 202, 204)
        # spec 2.9 #32: supported_editions gains "profession"
        details = alice.get_service(svc.id)
        assert "profession" in (details.supported_editions or []), details.supported_editions


def test_upgrade_endpoint_service_accepts_newer_body(alice):
    """Spec 2.9 #32: newer docs add an optional body; accept and ignore unknown fields."""
    svc = alice.service()
    resp = alice.raw.post(f"/v2/{alice.project_id}/vpc-endpoint-services/{svc.id}/upgrade",
                          body={"action": "upgrade", "enable_multi_server": False})
    assert resp.status_code in (200, 202, 204) or (resp.status_code == 400 and resp.json().get("error_code")), \
        resp.text


def test_upgrade_endpoint(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id)
    res = outcome(lambda: alice.vpcep.upgrade_endpoint(ep.UpgradeEndpointRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpgradeEndpointRequestBody(action="start"))))
    if not isinstance(res, ClientRequestException):
        assert res.status_code in (200, 202, 204)
    assert alice.get_endpoint(endpoint.id).id == endpoint.id


def test_upgrade_endpoint_bad_action_is_400(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id)
    expect_error(lambda: alice.vpcep.upgrade_endpoint(ep.UpgradeEndpointRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpgradeEndpointRequestBody(action="explode"))), 400)


def test_v2_operations_on_unknown_ids_are_404(alice):
    expect_error(lambda: alice.vpcep.upgrade_endpoint_service(
        ep.UpgradeEndpointServiceRequest(vpc_endpoint_service_id=random_id())), 404, NOT_FOUND)
    expect_error(lambda: alice.vpcep.upgrade_endpoint(ep.UpgradeEndpointRequest(
        vpc_endpoint_id=random_id(), body=ep.UpgradeEndpointRequestBody(action="start"))), 404, NOT_FOUND_ENDPOINT)
    expect_error(lambda: alice.vpcep.add_endpoint_service_server_resource(
        ep.AddEndpointServiceServerResourceRequest(
            vpc_endpoint_service_id=random_id(),
            body=ep.AddEndpointServiceServerResourceRequestBody(
                server_resources=[ep.ServerResource(resource_id=random_id())]))), 404, NOT_FOUND)

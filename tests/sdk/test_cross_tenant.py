"""Tenant isolation: every operation that names another tenant's service or endpoint
must answer exactly like it does for an id that does not exist (404, same code, same
message modulo the id) and must change nothing."""

import pytest

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    ACCEPTED,
    AVAILABLE,
    NOT_FOUND,
    NOT_FOUND_ENDPOINT,
    PENDING,
    batch_add_permissions,
    batch_remove_permissions,
    expect_error,
    ports,
    random_id,
    update_permission_desc,
    wait_status,
)

# operations on a service id: name → call(tenant, service_id)
SERVICE_PROBES = {
    "list_service_details": lambda t, sid: t.get_service(sid),
    "update_endpoint_service": lambda t, sid: t.update_service(sid, description="mine now"),
    "delete_endpoint_service": lambda t, sid: t.delete_service(sid, wait=False),
    "update_endpoint_service_name": lambda t, sid: t.vpcep.update_endpoint_service_name(
        ep.UpdateEndpointServiceNameRequest(vpc_endpoint_service_id=sid,
                                            body=ep.UpdateEndpointServiceNameRequestBody(endpoint_service_name="x"))),
    "list_service_connections": lambda t, sid: t.connections(sid),
    "accept_or_reject_endpoint": lambda t, sid: t.act_on(sid, "receive", [random_id()]),
    "update_endpoint_connections_desc": lambda t, sid: t.vpcep.update_endpoint_connections_desc(
        ep.UpdateEndpointConnectionsDescRequest(
            vpc_endpoint_service_id=sid, body=ep.UpdateEndpointConnectionsDescRequestBody(
                connections=[ep.ConnectionsDesc(id=random_id(), description="x")]))),
    "list_service_permissions_details": lambda t, sid: t.permissions(sid),
    "add_or_remove_service_permissions": lambda t, sid: t.permit(sid, [t.permission]),
    "batch_add_endpoint_service_permissions": lambda t, sid: batch_add_permissions(t, sid, [(t.permission, "x")]),
    "batch_remove_endpoint_service_permissions": lambda t, sid: batch_remove_permissions(t, sid, [random_id()]),
    "update_endpoint_service_permission_desc": lambda t, sid: update_permission_desc(t, sid, random_id(), "x"),
    "batch_add_or_remove_resource_instance": lambda t, sid: t.vpcep.batch_add_or_remove_resource_instance(
        ep.BatchAddOrRemoveResourceInstanceRequest(
            resource_type="endpoint_service", resource_id=sid,
            body=ep.BatchAddOrRemoveResourceInstanceRequestBody(
                action="create", tags=[ep.ResourceTag(key="owner", value="bob")]))),
    "add_endpoint_service_server_resource": lambda t, sid: t.vpcep.add_endpoint_service_server_resource(
        ep.AddEndpointServiceServerResourceRequest(
            vpc_endpoint_service_id=sid, body=ep.AddEndpointServiceServerResourceRequestBody(
                server_resources=[ep.ServerResource(resource_id=random_id())]))),
    "upgrade_endpoint_service": lambda t, sid: t.vpcep.upgrade_endpoint_service(
        ep.UpgradeEndpointServiceRequest(vpc_endpoint_service_id=sid)),
}

# operations on an endpoint id: name → call(tenant, endpoint_id)
ENDPOINT_PROBES = {
    "list_endpoint_info_details": lambda t, eid: t.get_endpoint(eid),
    "update_endpoint_white": lambda t, eid: t.vpcep.update_endpoint_white(ep.UpdateEndpointWhiteRequest(
        vpc_endpoint_id=eid, body=ep.UpdateEndpointWhiteRequestBody(whitelist=["10.0.0.1"], enable_whitelist=True))),
    "delete_endpoint": lambda t, eid: t.delete_endpoint(eid, wait=False),
    "update_endpoint_policy": lambda t, eid: t.vpcep.update_endpoint_policy(ep.UpdateEndpointPolicyRequest(
        vpc_endpoint_id=eid, body=ep.UpdateEndpointPolicyRequestBody(policy_statement=[ep.PolicyStatement(
            effect="Allow", action=["obs:*:*"], resource=["*"])]))),
    "delete_endpoint_policy": lambda t, eid: t.vpcep.delete_endpoint_policy(
        ep.DeleteEndpointPolicyRequest(vpc_endpoint_id=eid)),
    "update_endpoint_routetable": lambda t, eid: t.vpcep.update_endpoint_routetable(
        ep.UpdateEndpointRoutetableRequest(vpc_endpoint_id=eid,
                                           body=ep.UpdateEndpointRoutetableRequestBody(routetables=[random_id()]))),
    "upgrade_endpoint": lambda t, eid: t.vpcep.upgrade_endpoint(ep.UpgradeEndpointRequest(
        vpc_endpoint_id=eid, body=ep.UpgradeEndpointRequestBody(action="start"))),
    "batch_add_or_remove_resource_instance": lambda t, eid: t.vpcep.batch_add_or_remove_resource_instance(
        ep.BatchAddOrRemoveResourceInstanceRequest(
            resource_type="endpoint", resource_id=eid,
            body=ep.BatchAddOrRemoveResourceInstanceRequestBody(
                action="create", tags=[ep.ResourceTag(key="owner", value="bob")]))),
}


def same_as_missing(call, foreign_id, code):
    """call(id) on a foreign id and on a random id must fail identically with 404."""
    missing_id = random_id()
    foreign = expect_error(lambda: call(foreign_id), 404, code)
    missing = expect_error(lambda: call(missing_id), 404, code)
    assert foreign.error_code == missing.error_code
    assert foreign.error_msg.replace(foreign_id, "<id>") == missing.error_msg.replace(missing_id, "<id>")


@pytest.fixture
def alices_things(alice, bob):
    """alice's service (tagged, with bob whitelisted) and an accepted endpoint of hers."""
    svc = alice.service(service_name="private", approval_enabled=False, description="original",
                        ports=ports((8080, 80)))
    alice.permit(svc.id, [bob.permission])
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    return svc, endpoint


@pytest.mark.parametrize("op", sorted(SERVICE_PROBES))
def test_foreign_service_id_looks_missing(alice, bob, alices_things, op):
    svc, _ = alices_things
    same_as_missing(lambda sid: SERVICE_PROBES[op](bob, sid), svc.id, NOT_FOUND)
    after = alice.get_service(svc.id)
    assert (after.status, after.description, after.service_name) == (AVAILABLE, "original", svc.service_name)
    assert after.tags in ([], None)


@pytest.mark.parametrize("op", sorted(ENDPOINT_PROBES))
def test_foreign_endpoint_id_looks_missing(alice, bob, alices_things, op):
    _, endpoint = alices_things
    same_as_missing(lambda eid: ENDPOINT_PROBES[op](bob, eid), endpoint.id, NOT_FOUND_ENDPOINT)
    after = alice.get_endpoint(endpoint.id)
    assert (after.status, after.whitelist, after.ip) == (ACCEPTED, [], endpoint.ip)
    assert after.tags in ([], None)


def test_consumer_cannot_manage_the_providers_side(alice, bob):
    """Even a whitelisted consumer with a connection sees the service only via describe."""
    svc = alice.service(approval_enabled=True)
    alice.permit(svc.id, [bob.permission])
    bobs = bob.endpoint(svc.id, wanted=PENDING)
    expect_error(lambda: bob.get_service(svc.id), 404, NOT_FOUND)
    expect_error(lambda: bob.act_on(svc.id, "receive", [bobs.id]), 404, NOT_FOUND)
    expect_error(lambda: bob.connections(svc.id), 404, NOT_FOUND)
    assert wait_status(lambda: bob.get_endpoint(bobs.id), PENDING)


def test_lists_are_tenant_scoped(alice, bob, alices_things):
    svc, endpoint = alices_things
    assert bob.list_services().total_count == 0
    assert bob.list_services(id=svc.id).total_count == 0
    assert bob.list_endpoints().total_count == 0
    assert bob.list_endpoints(id=endpoint.id).total_count == 0
    assert bob.quotas() == {"endpoint_service": (0, 20), "endpoint": (0, 50)}
    res = bob.vpcep.list_resource_instances(ep.ListResourceInstancesRequest(
        resource_type="endpoint_service", body=ep.QueryResourceInstanceTagsBody(action="count")))
    assert res.total_count == 0


def test_foreign_network_resources_cannot_be_used(alice, bob, alices_things):
    svc, _ = alices_things
    alices_net = alice.network()
    alices_port = alice.create_port(alices_net.subnet_id)
    # bob's endpoint into alice's VPC/subnet
    expect_error(lambda: bob.create_endpoint(svc.id, alices_net), 400)
    # bob's service on alice's backend port
    expect_error(lambda: bob.vpcep.create_endpoint_service(ep.CreateEndpointServiceRequest(
        body=ep.CreateEndpointServiceRequestBody(port_id=alices_port.id, vpc_id=alices_net.vpc_id,
                                                 server_type="VM", ports=ports((80, 80))))), 400)
    assert bob.list_endpoints().total_count == 0 and bob.list_services().total_count == 0

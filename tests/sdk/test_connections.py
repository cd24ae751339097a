"""Provider-side connections and the cross-account flow of user guide 2.3
(spec 2.3, 6.3, 6.4): whitelist, approval, receive/reject, connection list and
descriptions, deletion rules."""

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    ACCEPTED,
    ANY_VPCEP_CODE,
    AVAILABLE,
    BAD_LIMIT,
    BAD_STATUS,
    CREATING,
    NOT_CONNECTED,
    NOT_FOUND,
    NOT_WHITELISTED,
    ONE_ENDPOINT_ONLY,
    PENDING,
    REJECTED,
    SERVICE_IN_USE,
    check_timestamps,
    describe_by_id,
    expect_error,
    random_id,
    raw_json,
    wait_status,
)


def describe_desc(tenant, service_id, items):
    return tenant.vpcep.update_endpoint_connections_desc(ep.UpdateEndpointConnectionsDescRequest(
        vpc_endpoint_service_id=service_id,
        body=ep.UpdateEndpointConnectionsDescRequestBody(
            connections=[ep.ConnectionsDesc(id=i, description=d) for i, d in items])))


# ---- user guide 2.3 ------------------------------------------------------------------------


def test_cross_account_flow(alice, bob):
    """Account B (alice) publishes an LB; account A (bob) connects after being
    whitelisted; alice approves."""
    svc = alice.service(alice.backend(lb=True), service_name="ug23", approval_enabled=True)
    consumer = bob.network("192.168.0.0/16", "192.168.0.0/24")
    # step 2: alice whitelists bob's account id
    res = alice.permit(svc.id, [bob.permission])
    assert bob.permission in res.permissions
    # step 3: bob verifies the service name, then creates the endpoint
    found = bob.vpcep.list_service_describe_details(
        ep.ListServiceDescribeDetailsRequest(endpoint_service_name=svc.service_name))
    assert found.id == svc.id
    created = bob.create_endpoint(svc.id, consumer)
    pending = wait_status(lambda: bob.get_endpoint(created.id), PENDING)
    assert pending.endpoint_service_id == svc.id and pending.project_id == bob.project_id
    # alice sees the pending connection with bob's account id
    conns = alice.connections(svc.id)
    assert conns.total_count == 1
    conn = conns.connections[0]
    assert (conn.id, conn.status, conn.domain_id, conn.marker_id) == \
        (created.id, PENDING, bob.domain_id, pending.marker_id)
    check_timestamps(raw_json(conns)["connections"][0])
    # approval
    done = alice.act_on(svc.id, "receive", [created.id])
    assert [(c.id, c.status) for c in done.connections] == [(created.id, ACCEPTED)]
    accepted = wait_status(lambda: bob.get_endpoint(created.id), ACCEPTED)
    assert consumer.contains(accepted.ip)
    assert alice.connections(svc.id, status=ACCEPTED).total_count == 1
    # the provider still cannot see bob's endpoint as an endpoint
    expect_error(lambda: alice.get_endpoint(created.id), 404)
    assert alice.list_endpoints().total_count == 0


def test_cross_account_without_approval(alice, bob):
    svc = alice.service(approval_enabled=False)
    alice.permit(svc.id, [bob.permission])
    assert bob.endpoint(svc.id).status == ACCEPTED


def test_wildcard_whitelist_admits_everyone(alice, bob, carol):
    svc = alice.service()
    expect_error(lambda: carol.create_endpoint(svc.id), 404, NOT_WHITELISTED)
    alice.permit(svc.id, ["*"])
    for tenant in (bob, carol):
        assert tenant.endpoint(svc.id).status == ACCEPTED


def test_whitelist_is_per_account(alice, bob, carol):
    svc = alice.service()
    alice.permit(svc.id, [bob.permission])
    bob.endpoint(svc.id)
    expect_error(lambda: carol.create_endpoint(svc.id), 404, NOT_WHITELISTED)


def test_removed_from_whitelist_cannot_connect_again(alice, bob):
    svc = alice.service()
    alice.permit(svc.id, [bob.permission])
    bob.endpoint(svc.id)
    alice.permit(svc.id, [bob.permission], action="remove")
    expect_error(lambda: bob.create_endpoint(svc.id), 404, NOT_WHITELISTED)


def test_same_account_needs_no_whitelist(alice):
    svc = alice.service()
    assert alice.permissions(svc.id).total_count == 0
    assert alice.endpoint(svc.id).status == ACCEPTED


# ---- receive / reject ---------------------------------------------------------------------------


def pending_endpoint(provider, consumer):
    svc = provider.service(approval_enabled=True)
    if consumer is not provider:
        provider.permit(svc.id, [consumer.permission])
    return svc, consumer.endpoint(svc.id, wanted=PENDING)


def test_reject_pending_endpoint(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    res = alice.act_on(svc.id, "reject", [endpoint.id])
    assert [(c.id, c.status) for c in res.connections] == [(endpoint.id, REJECTED)]
    assert wait_status(lambda: bob.get_endpoint(endpoint.id), REJECTED).status == REJECTED
    assert alice.connections(svc.id, status=REJECTED).total_count == 1
    assert alice.connections(svc.id, status=PENDING).total_count == 0
    assert alice.list_services(id=svc.id).endpoint_services[0].connection_count == 0
    # a rejected endpoint does not block deleting the service
    alice.delete_service(svc.id)


def test_reject_after_accept_keeps_ip(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    alice.act_on(svc.id, "receive", [endpoint.id])
    ip = wait_status(lambda: bob.get_endpoint(endpoint.id), ACCEPTED).ip
    alice.act_on(svc.id, "reject", [endpoint.id])
    rejected = wait_status(lambda: bob.get_endpoint(endpoint.id), REJECTED)
    assert rejected.ip == ip


def test_receiving_a_rejected_endpoint(alice, bob):
    """Unspecified transition: either it is accepted again, or refused with a 400."""
    svc, endpoint = pending_endpoint(alice, bob)
    alice.act_on(svc.id, "reject", [endpoint.id])
    wait_status(lambda: bob.get_endpoint(endpoint.id), REJECTED)
    try:
        alice.act_on(svc.id, "receive", [endpoint.id])
    except ClientRequestException as e:
        assert e.status_code == 400 and e.error_code, str(e)
        assert bob.get_endpoint(endpoint.id).status == REJECTED
    else:
        assert wait_status(lambda: bob.get_endpoint(endpoint.id), ACCEPTED).ip


def test_accept_or_reject_exactly_one_endpoint(alice, bob):
    svc, first = pending_endpoint(alice, bob)
    second = bob.endpoint(svc.id, wanted=PENDING)
    expect_error(lambda: alice.act_on(svc.id, "receive", [first.id, second.id]), 400, ONE_ENDPOINT_ONLY)
    expect_error(lambda: alice.act_on(svc.id, "reject", [first.id, second.id]), 400, ONE_ENDPOINT_ONLY)
    expect_error(lambda: alice.act_on(svc.id, "receive", []), 400, ANY_VPCEP_CODE)
    assert {c.status for c in alice.connections(svc.id).connections} == {PENDING}


@pytest.mark.parametrize("action", ["accept", "approve", "RECEIVE", ""])
def test_bad_connection_action(alice, bob, action):
    svc, endpoint = pending_endpoint(alice, bob)
    expect_error(lambda: alice.act_on(svc.id, action, [endpoint.id]), 400, ANY_VPCEP_CODE)
    assert bob.get_endpoint(endpoint.id).status == PENDING


def test_accept_endpoint_of_another_service(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    other = alice.service(approval_enabled=True)
    expect_error(lambda: alice.act_on(other.id, "receive", [endpoint.id]), 400, NOT_CONNECTED)
    assert bob.get_endpoint(endpoint.id).status == PENDING


def test_accept_unknown_endpoint(alice):
    svc = alice.service(approval_enabled=True)
    err = expect_error(lambda: alice.act_on(svc.id, "receive", [random_id()]), (400, 404))
    assert (err.status_code, err.error_code) in {(400, NOT_CONNECTED), (404, NOT_FOUND), (404, "EndPoint.2006")}


def test_only_the_provider_acts_on_connections(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    expect_error(lambda: bob.act_on(svc.id, "receive", [endpoint.id]), 404, NOT_FOUND)
    assert bob.get_endpoint(endpoint.id).status == PENDING


def test_approval_toggle_affects_new_endpoints_only(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    alice.update_service(svc.id, approval_enabled=False)
    assert bob.endpoint(svc.id).status == ACCEPTED
    assert bob.get_endpoint(endpoint.id).status == PENDING


# ---- connection list & descriptions ---------------------------------------------------------------


def test_list_connections_filters_and_paging(alice, bob):
    svc = alice.service(approval_enabled=True)
    alice.permit(svc.id, [bob.permission])
    net = bob.network()
    endpoints = [bob.endpoint(svc.id, net, wanted=PENDING) for _ in range(3)]
    alice.act_on(svc.id, "receive", [endpoints[0].id])
    wait_status(lambda: bob.get_endpoint(endpoints[0].id), ACCEPTED)
    assert alice.connections(svc.id).total_count == 3
    assert [c.id for c in alice.connections(svc.id, status=ACCEPTED).connections] == [endpoints[0].id]
    assert alice.connections(svc.id, status=PENDING).total_count == 2
    assert [c.id for c in alice.connections(svc.id, id=endpoints[1].id).connections] == [endpoints[1].id]
    by_marker = alice.connections(svc.id, marker_id=str(endpoints[2].marker_id)).connections
    assert [c.id for c in by_marker] == [endpoints[2].id]
    seen = []
    for offset in (0, 2):
        page = alice.connections(svc.id, limit=2, offset=offset, sort_key="create_at", sort_dir="asc")
        assert page.total_count == 3
        seen += [c.id for c in page.connections]
    assert sorted(seen) == sorted(e.id for e in endpoints)


@pytest.mark.parametrize("query, code", [
    ({"status": CREATING}, BAD_STATUS),
    ({"status": "bogus"}, BAD_STATUS),
    ({"limit": 1001}, BAD_LIMIT),
    ({"marker_id": "not-a-number"}, ("EndPoint.0021", "EndPoint.0002")),
])
def test_list_connections_bad_query(alice, query, code):
    svc = alice.service()
    expect_error(lambda: alice.connections(svc.id, **query), 400, code)


def test_connection_descriptions(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    res = describe_desc(alice, svc.id, [(endpoint.id, "customer bob")])
    assert res.status_code == 200
    assert [(c.id, c.description) for c in res.connections] == [(endpoint.id, "customer bob")]
    assert alice.connections(svc.id).connections[0].description == "customer bob"
    expect_error(lambda: describe_desc(alice, svc.id, [(endpoint.id, "<b>bold</b>")]), 400, ANY_VPCEP_CODE)
    expect_error(lambda: describe_desc(alice, svc.id, [(endpoint.id, "d" * 513)]), 400, ANY_VPCEP_CODE)
    assert alice.connections(svc.id).connections[0].description == "customer bob"


def test_connection_description_for_foreign_endpoint(alice, bob):
    svc = alice.service()
    other = bob.endpoint(bob.service().id)
    expect_error(lambda: describe_desc(alice, svc.id, [(other.id, "x")]), (400, 404))


def test_connections_of_unknown_service(alice):
    expect_error(lambda: alice.connections(random_id()), 404, NOT_FOUND)


# ---- deletion rules -----------------------------------------------------------------------------------


def test_provider_cannot_delete_service_in_use_by_other_account(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    alice.act_on(svc.id, "receive", [endpoint.id])
    wait_status(lambda: bob.get_endpoint(endpoint.id), ACCEPTED)
    expect_error(lambda: alice.delete_service(svc.id), 400, SERVICE_IN_USE)
    assert alice.get_service(svc.id).status == AVAILABLE
    bob.delete_endpoint(endpoint.id)
    alice.delete_service(svc.id)
    expect_error(lambda: describe_by_id(bob, svc.id), 404, NOT_FOUND)


def test_consumer_deleting_endpoint_removes_connection(alice, bob):
    svc, endpoint = pending_endpoint(alice, bob)
    bob.delete_endpoint(endpoint.id)
    assert alice.connections(svc.id).total_count == 0

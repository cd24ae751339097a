"""Endpoints, consumer side (spec 2.5, 3.2, 6.3, 6.6): the same-account flow of
user guide 2.2, addresses, marker ids, DNS names, whitelists, gateway endpoints,
policies, route tables, list and delete."""

import ipaddress
import re
import time

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpc.v2.model as vm
import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    ACCEPTED,
    ANY_VPCEP_CODE,
    BAD_LIMIT,
    BAD_OFFSET,
    BAD_SORT_DIR,
    BAD_SORT_KEY,
    CLIENT_ERRORS,
    CREATING,
    FAILED,
    MARKER_MIN,
    NOT_FOUND_ENDPOINT,
    PENDING,
    REGION,
    check_timestamps,
    expect_error,
    random_id,
    raw_json,
    wait_gone,
    wait_status,
)

DNS_NAME = re.compile(r"(?=.{1,253}$)([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z0-9-]{1,63}\.?")


def update_white(tenant, endpoint_id, whitelist, enable):
    return tenant.vpcep.update_endpoint_white(ep.UpdateEndpointWhiteRequest(
        vpc_endpoint_id=endpoint_id,
        body=ep.UpdateEndpointWhiteRequestBody(whitelist=whitelist, enable_whitelist=enable)))


# ---- user guide 2.2: same account, two VPCs ---------------------------------------------------


def test_same_account_flow_without_approval(alice):
    svc = alice.service(service_name="ug22", approval_enabled=False)
    consumer = alice.network("192.168.0.0/16", "192.168.1.0/24")
    created = alice.create_endpoint(svc.id, consumer, description="from vpc1")
    assert created.status_code == 200
    assert created.status == CREATING
    assert created.id and created.endpoint_service_id == svc.id
    assert (created.vpc_id, created.subnet_id) == (consumer.vpc_id, consumer.subnet_id)
    endpoint = wait_status(lambda: alice.get_endpoint(created.id), ACCEPTED)
    assert endpoint.endpoint_service_name == svc.service_name == f"{REGION}.ug22.{svc.id}"
    assert endpoint.service_type == "interface"
    assert endpoint.project_id == alice.project_id
    assert consumer.contains(endpoint.ip), endpoint.ip
    assert endpoint.ip != "192.168.1.1"
    assert isinstance(endpoint.marker_id, int) and MARKER_MIN <= endpoint.marker_id < 2 ** 32
    assert endpoint.whitelist == [] and endpoint.enable_whitelist is False
    assert endpoint.routetables in ([], None)
    assert endpoint.description == "from vpc1"
    assert endpoint.tags in ([], None)
    check_timestamps(raw_json(endpoint))
    # the provider sees the connection with the same marker id
    conns = alice.connections(svc.id).connections
    assert [(c.id, c.marker_id, c.status, c.domain_id) for c in conns] == \
        [(endpoint.id, endpoint.marker_id, ACCEPTED, alice.domain_id)]
    # and the service counts it
    assert alice.list_services(id=svc.id).endpoint_services[0].connection_count == 1


def test_same_account_flow_with_approval(alice):
    svc = alice.service(approval_enabled=True)
    endpoint = alice.endpoint(svc.id, wanted=PENDING)
    assert alice.get_endpoint(endpoint.id).status == PENDING
    res = alice.act_on(svc.id, "receive", [endpoint.id])
    assert [(c.id, c.status) for c in res.connections] == [(endpoint.id, ACCEPTED)]
    accepted = wait_status(lambda: alice.get_endpoint(endpoint.id), ACCEPTED)
    assert accepted.ip


def test_endpoint_to_service_that_is_still_creating_or_available(alice):
    """An endpoint may be requested right after the service create call returns."""
    sid = alice.create_service(approval_enabled=False).id
    try:
        endpoint = alice.endpoint(sid, wanted=ACCEPTED)
    except ClientRequestException as e:  # "service not available" (2004) is a documented refusal
        assert e.status_code == 400, str(e)
    else:
        assert endpoint.endpoint_service_id == sid


# ---- addresses & marker ids ---------------------------------------------------------------


def test_endpoints_get_distinct_addresses_and_marker_ids(alice):
    svc = alice.service()
    consumer = alice.network()
    endpoints = [alice.endpoint(svc.id, consumer, wanted=ACCEPTED) for _ in range(4)]
    ips = [e.ip for e in endpoints]
    markers = [e.marker_id for e in endpoints]
    assert len(set(ips)) == 4 and all(consumer.contains(ip) for ip in ips)
    assert len(set(markers)) == 4 and all(m >= MARKER_MIN for m in markers)
    # ports of the registry never collide with endpoint addresses
    port_ip = alice.create_port(consumer.subnet_id).fixed_ips[0].ip_address
    assert port_ip not in ips


def test_marker_ids_unique_across_tenants(alice, bob):
    markers = set()
    for tenant in (alice, bob):
        svc = tenant.service()
        for _ in range(2):
            markers.add(tenant.endpoint(svc.id, wanted=ACCEPTED).marker_id)
    assert len(markers) == 4


def test_requested_port_ip(alice):
    svc = alice.service()
    consumer = alice.network()
    endpoint = alice.endpoint(svc.id, consumer, port_ip="10.0.1.200", wanted=ACCEPTED)
    assert endpoint.ip == "10.0.1.200"
    # now taken: a second endpoint, or a registry port, cannot have it
    expect_error(lambda: alice.create_endpoint(svc.id, consumer, port_ip="10.0.1.200"), 400, ANY_VPCEP_CODE)
    with pytest.raises(ClientRequestException):
        alice.create_port(consumer.subnet_id, ip="10.0.1.200")


def test_port_ip_already_used_by_a_port(alice):
    svc = alice.service()
    consumer = alice.network()
    taken = alice.create_port(consumer.subnet_id).fixed_ips[0].ip_address
    expect_error(lambda: alice.create_endpoint(svc.id, consumer, port_ip=taken), 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("port_ip", ["10.0.2.5", "192.168.1.5", "not-an-ip", "10.0.1.300", "10.0.1.0", "10.0.1.255",
                                     "10.0.1.1"])
def test_bad_port_ip_refused(alice, port_ip):
    svc = alice.service()
    expect_error(lambda: alice.create_endpoint(svc.id, port_ip=port_ip), 400, ANY_VPCEP_CODE)


def test_pending_endpoint_ip_appears_on_accept(alice):
    svc = alice.service(approval_enabled=True)
    consumer = alice.network()
    endpoint = alice.endpoint(svc.id, consumer, wanted=PENDING)
    alice.act_on(svc.id, "receive", [endpoint.id])
    accepted = wait_status(lambda: alice.get_endpoint(endpoint.id), ACCEPTED)
    assert consumer.contains(accepted.ip)
    assert accepted.marker_id == endpoint.marker_id


# ---- request validation ----------------------------------------------------------------------


def test_subnet_must_belong_to_vpc(alice):
    svc = alice.service()
    first, second = alice.network(), alice.network()
    expect_error(lambda: alice.create_endpoint(svc.id, vpc_id=first.vpc_id, subnet_id=second.subnet_id),
                 400, ANY_VPCEP_CODE)


def test_unknown_vpc_or_subnet_refused(alice):
    svc = alice.service()
    net = alice.network()
    expect_error(lambda: alice.create_endpoint(svc.id, net, vpc_id=random_id()), 400, ANY_VPCEP_CODE)
    expect_error(lambda: alice.create_endpoint(svc.id, net, subnet_id=random_id()), 400, ANY_VPCEP_CODE)


def test_interface_endpoint_requires_subnet(alice):
    svc = alice.service()
    net = alice.network()
    expect_error(lambda: alice.create_endpoint(svc.id, vpc_id=net.vpc_id, subnet_id=None), 400, ANY_VPCEP_CODE)


def test_unknown_service_refused(alice):
    expect_error(lambda: alice.create_endpoint(random_id()), (400, 404), ANY_VPCEP_CODE)


@pytest.mark.parametrize("description", ["<", ">", "a<b>c"])
def test_endpoint_description_with_angle_brackets_refused(alice, description):
    svc = alice.service()
    expect_error(lambda: alice.create_endpoint(svc.id, description=description), 400, ANY_VPCEP_CODE)


def test_endpoint_description_length(alice):
    svc = alice.service()
    assert alice.endpoint(svc.id, description="e" * 512).description == "e" * 512
    expect_error(lambda: alice.create_endpoint(svc.id, description="e" * 513), 400, ANY_VPCEP_CODE)


def test_subnet_exhaustion_is_a_clean_error(alice):
    """A /29 has only a handful of usable addresses: once they are gone an endpoint is
    refused (400) or ends `failed` with an error — never a 5xx, never a duplicate IP."""
    svc = alice.service()
    net = alice.network("10.7.0.0/16", "10.7.0.0/29")
    ips, outcomes = [], []
    for _ in range(8):
        try:
            created = alice.create_endpoint(svc.id, net)
        except ClientRequestException as e:
            assert e.status_code == 400 and e.error_code and e.error_msg, str(e)
            outcomes.append("refused")
            continue
        done = wait_status(lambda: alice.get_endpoint(created.id), (ACCEPTED, FAILED))
        if done.status == ACCEPTED:
            ips.append(done.ip)
        else:
            assert done.error, "failed endpoint without error details"
        outcomes.append(done.status)
    assert len(ips) == len(set(ips)) and all(net.contains(ip) for ip in ips)
    assert 1 <= len(ips) <= 5 and outcomes[-1] != ACCEPTED


# ---- DNS -----------------------------------------------------------------------------------------


def test_enable_dns_gives_a_private_name(alice):
    svc = alice.service(service_name="dnsy")
    with_dns = alice.endpoint(svc.id, enable_dns=True, wanted=ACCEPTED)
    assert with_dns.enable_dns is True
    assert with_dns.dns_names and all(DNS_NAME.fullmatch(n) for n in with_dns.dns_names), with_dns.dns_names
    without = alice.endpoint(svc.id, enable_dns=False, wanted=ACCEPTED)
    assert without.enable_dns is False and not without.dns_names


def test_dns_names_are_unique_per_endpoint(alice):
    svc = alice.service()
    names = [alice.endpoint(svc.id, enable_dns=True, wanted=ACCEPTED).dns_names[0] for _ in range(2)]
    assert names[0] != names[1]


def test_only_one_dns_endpoint_per_vpc_and_service(alice):
    """Spec 6.3: one endpoint per (VPC, service) may have enable_dns=true."""
    svc = alice.service()
    vpc_id = alice.create_vpc()
    first, second = alice.create_subnet(vpc_id, "10.0.1.0/24"), alice.create_subnet(vpc_id, "10.0.2.0/24")
    alice.endpoint(svc.id, vpc_id=vpc_id, subnet_id=first, enable_dns=True, wanted=ACCEPTED)
    expect_error(lambda: alice.create_endpoint(svc.id, vpc_id=vpc_id, subnet_id=second, enable_dns=True),
                 400, ANY_VPCEP_CODE)
    assert alice.endpoint(svc.id, vpc_id=vpc_id, subnet_id=second, enable_dns=False, wanted=ACCEPTED)


# ---- endpoint whitelist (source ACL) --------------------------------------------------------------


def test_update_endpoint_whitelist(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    res = update_white(alice, endpoint.id, ["10.0.0.0/24", "192.168.1.7"], True)
    assert res.status_code == 200
    assert sorted(res.whitelist) == ["10.0.0.0/24", "192.168.1.7"] and res.enable_whitelist is True
    details = alice.get_endpoint(endpoint.id)
    assert sorted(details.whitelist) == ["10.0.0.0/24", "192.168.1.7"] and details.enable_whitelist is True
    res = update_white(alice, endpoint.id, [], False)
    assert res.whitelist == [] and res.enable_whitelist is False
    assert alice.get_endpoint(endpoint.id).whitelist == []


def test_whitelist_at_creation(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, whitelist=["172.16.0.0/12"], enable_whitelist=True)
    assert endpoint.whitelist == ["172.16.0.0/12"] and endpoint.enable_whitelist is True


@pytest.mark.parametrize("whitelist", [
    ["not-an-ip"], ["10.0.0.0/33"], ["300.1.1.1"], ["10.0.0.1/-1"], [""],
    [f"10.0.{i}.0/24" for i in range(21)],  # more than 20 entries
])
def test_bad_endpoint_whitelist_refused(alice, whitelist):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    expect_error(lambda: update_white(alice, endpoint.id, whitelist, True), 400, ANY_VPCEP_CODE)
    assert alice.get_endpoint(endpoint.id).whitelist == []


def test_twenty_whitelist_entries_accepted(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    twenty = [f"10.0.{i}.0/24" for i in range(20)]
    assert sorted(update_white(alice, endpoint.id, twenty, True).whitelist) == sorted(twenty)


# ---- gateway endpoints, route tables and policies ---------------------------------------------------


def default_route_table(tenant, vpc_id):
    tables = tenant.vpc.list_route_tables(vm.ListRouteTablesRequest(vpc_id=vpc_id)).routetables
    return next(t.id for t in tables if t.default)


def new_route_table(tenant, vpc_id):
    body = vm.CreateRoutetableReqBody(routetable=vm.CreateRouteTableReq(name="rt-extra", vpc_id=vpc_id))
    return tenant.vpc.create_route_table(vm.CreateRouteTableRequest(body=body)).routetable.id


def test_interface_public_service_endpoint(alice, public_services):
    endpoint = alice.endpoint(public_services["dns"]["id"], wanted=ACCEPTED)
    assert endpoint.service_type == "interface" and endpoint.ip


def routes_to(tenant, routetable_id, destination):
    table = tenant.vpc.show_route_table(vm.ShowRouteTableRequest(routetable_id=routetable_id)).routetable
    return [r for r in table.routes or [] if r.destination == destination]


def test_gateway_endpoint_uses_default_route_table(alice, public_services):
    vpc_id = alice.create_vpc()
    endpoint = alice.endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None, enable_dns=True,
                              wanted=ACCEPTED)
    assert endpoint.service_type == "gateway"
    assert endpoint.routetables == [default_route_table(alice, vpc_id)]
    assert not endpoint.ip
    assert not endpoint.dns_names  # enable_dns is ignored for gateway services


def test_gateway_endpoint_routes_follow_its_route_tables(alice, public_services):
    """Spec 6.6: the service CIDR is routed in the chosen route tables."""
    cidr = public_services["obs"]["cidr"]
    vpc_id = alice.create_vpc()
    default, extra = default_route_table(alice, vpc_id), new_route_table(alice, vpc_id)
    endpoint = alice.endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None, wanted=ACCEPTED)
    assert routes_to(alice, default, cidr) and not routes_to(alice, extra, cidr)
    alice.vpcep.update_endpoint_routetable(ep.UpdateEndpointRoutetableRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpdateEndpointRoutetableRequestBody(routetables=[extra])))
    assert routes_to(alice, extra, cidr) and not routes_to(alice, default, cidr)
    alice.delete_endpoint(endpoint.id)
    assert not routes_to(alice, extra, cidr) and not routes_to(alice, default, cidr)


def test_gateway_endpoint_has_no_source_whitelist(alice, public_services):
    vpc_id = alice.create_vpc()
    endpoint = alice.endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None, wanted=ACCEPTED)
    expect_error(lambda: update_white(alice, endpoint.id, ["10.0.0.0/8"], True), 400, ANY_VPCEP_CODE)


def test_gateway_endpoint_route_table_update(alice, public_services):
    vpc_id = alice.create_vpc()
    extra = new_route_table(alice, vpc_id)
    default = default_route_table(alice, vpc_id)
    endpoint = alice.endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None,
                              routetables=[extra], wanted=ACCEPTED)
    assert endpoint.routetables == [extra]
    res = alice.vpcep.update_endpoint_routetable(ep.UpdateEndpointRoutetableRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpdateEndpointRoutetableRequestBody(routetables=[extra, default])))
    assert res.status_code == 200
    assert sorted(res.routetables) == sorted([extra, default])
    assert not any((e.bind_failed or e.unbind_failed) for e in (res.error or []))
    assert sorted(alice.get_endpoint(endpoint.id).routetables) == sorted([extra, default])


def test_route_table_update_on_interface_endpoint_refused(alice):
    svc = alice.service()
    net = alice.network()
    endpoint = alice.endpoint(svc.id, net, wanted=ACCEPTED)
    rt = default_route_table(alice, net.vpc_id)
    expect_error(lambda: alice.vpcep.update_endpoint_routetable(ep.UpdateEndpointRoutetableRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpdateEndpointRoutetableRequestBody(routetables=[rt]))),
        400, ANY_VPCEP_CODE)


def test_gateway_endpoint_with_foreign_route_table_refused(alice, public_services):
    vpc_id, other_vpc = alice.create_vpc(), alice.create_vpc()
    expect_error(lambda: alice.create_endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None,
                                               routetables=[default_route_table(alice, other_vpc)]),
                 400, ANY_VPCEP_CODE)


OBS_POLICY = [ep.PolicyStatement(effect="Allow", action=["obs:*:*"], resource=["obs:*:*:*:*/*", "obs:*:*:*:*"])]


def test_endpoint_policy_update_and_delete(alice, public_services):
    vpc_id = alice.create_vpc()
    endpoint = alice.endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None, wanted=ACCEPTED)
    try:
        res = alice.vpcep.update_endpoint_policy(ep.UpdateEndpointPolicyRequest(
            vpc_endpoint_id=endpoint.id, body=ep.UpdateEndpointPolicyRequestBody(policy_statement=OBS_POLICY)))
    except ClientRequestException as e:  # the operator service may not enable policies
        assert e.status_code == 400 and e.error_code, str(e)
        expect_error(lambda: alice.vpcep.delete_endpoint_policy(
            ep.DeleteEndpointPolicyRequest(vpc_endpoint_id=endpoint.id)), 400, ANY_VPCEP_CODE)
        return
    assert res.id == endpoint.id
    assert [(p.effect, p.action) for p in res.policy_statement] == [("Allow", ["obs:*:*"])]
    stored = alice.get_endpoint(endpoint.id).policy_statement
    assert [(p.effect, p.action, p.resource) for p in stored] == \
        [("Allow", ["obs:*:*"], ["obs:*:*:*:*/*", "obs:*:*:*:*"])]
    deleted = alice.vpcep.delete_endpoint_policy(ep.DeleteEndpointPolicyRequest(vpc_endpoint_id=endpoint.id))
    assert deleted.id == endpoint.id and not deleted.policy_statement
    assert not alice.get_endpoint(endpoint.id).policy_statement


def test_invalid_endpoint_policy_refused(alice, public_services):
    vpc_id = alice.create_vpc()
    endpoint = alice.endpoint(public_services["obs"]["id"], vpc_id=vpc_id, subnet_id=None, wanted=ACCEPTED)
    bad = [ep.PolicyStatement(effect="Perhaps", action=["obs:*:*"], resource=["*"])]
    expect_error(lambda: alice.vpcep.update_endpoint_policy(ep.UpdateEndpointPolicyRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpdateEndpointPolicyRequestBody(policy_statement=bad))),
        400, ANY_VPCEP_CODE)


def test_policy_on_interface_endpoint_without_policy_support(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    expect_error(lambda: alice.vpcep.update_endpoint_policy(ep.UpdateEndpointPolicyRequest(
        vpc_endpoint_id=endpoint.id, body=ep.UpdateEndpointPolicyRequestBody(policy_statement=OBS_POLICY))),
        400, ANY_VPCEP_CODE)


# ---- list & delete ---------------------------------------------------------------------------------


def test_list_endpoints_filters(alice, bob):
    web = alice.service(service_name="WebSvc")
    db = alice.service(service_name="DbSvc")
    net_a, net_b = alice.network(), alice.network()
    e1 = alice.endpoint(web.id, net_a)
    e2 = alice.endpoint(db.id, net_a)
    e3 = alice.endpoint(db.id, net_b)
    bob.endpoint(bob.service(service_name="WebSvc").id)
    assert alice.list_endpoints().total_count == 3
    assert {e.id for e in alice.list_endpoints(vpc_id=net_a.vpc_id).endpoints} == {e1.id, e2.id}
    assert [e.id for e in alice.list_endpoints(id=e3.id).endpoints] == [e3.id]
    by_name = alice.list_endpoints(endpoint_service_name="dbsvc")
    assert {e.id for e in by_name.endpoints} == {e2.id, e3.id} and by_name.total_count == 2
    row = alice.list_endpoints(id=e1.id).endpoints[0]
    assert row.endpoint_service_name == web.service_name and row.marker_id == e1.marker_id


def test_list_endpoints_sort_order(alice):
    svc = alice.service()
    net = alice.network()
    first = alice.create_endpoint(svc.id, net).id
    time.sleep(1.1)  # timestamps have one-second resolution
    second = alice.create_endpoint(svc.id, net).id
    asc = [e.id for e in alice.list_endpoints(sort_key="create_at", sort_dir="asc").endpoints]
    desc = [e.id for e in alice.list_endpoints(sort_key="created_at", sort_dir="desc").endpoints]
    default = [e.id for e in alice.list_endpoints().endpoints]
    assert asc == [first, second] and desc == [second, first] and default == [second, first]


def test_list_endpoints_pagination(alice):
    svc = alice.service()
    net = alice.network()
    ids = {alice.create_endpoint(svc.id, net).id for _ in range(5)}
    seen = []
    for offset in range(0, 5, 2):
        page = alice.list_endpoints(limit=2, offset=offset, sort_key="create_at", sort_dir="desc")
        assert page.total_count == 5
        seen += [e.id for e in page.endpoints]
    assert sorted(seen) == sorted(ids)


@pytest.mark.parametrize("query, code", [
    ({"limit": 1001}, BAD_LIMIT),
    ({"limit": -5}, BAD_LIMIT),
    ({"offset": -1}, BAD_OFFSET),
    ({"sort_key": "ip"}, BAD_SORT_KEY),
    ({"sort_dir": "sideways"}, BAD_SORT_DIR),
])
def test_list_endpoints_bad_query(alice, query, code):
    expect_error(lambda: alice.list_endpoints(**query), 400, code)


def test_delete_endpoint(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    res = alice.vpcep.delete_endpoint(ep.DeleteEndpointRequest(vpc_endpoint_id=endpoint.id))
    assert res.status_code == 204
    wait_gone(lambda: alice.get_endpoint(endpoint.id))
    assert alice.list_endpoints(id=endpoint.id).total_count == 0
    assert alice.connections(svc.id).total_count == 0
    assert alice.list_services(id=svc.id).endpoint_services[0].connection_count == 0


def test_deleted_endpoint_address_is_reusable(alice):
    svc = alice.service()
    net = alice.network()
    first = alice.endpoint(svc.id, net, port_ip="10.0.1.50", wanted=ACCEPTED)
    alice.delete_endpoint(first.id)
    assert alice.endpoint(svc.id, net, port_ip="10.0.1.50", wanted=ACCEPTED).ip == "10.0.1.50"


def test_deleting_endpoint_cannot_be_modified(alice):
    """Right after DELETE the endpoint is `deleting` (EndPoint.2018) or already gone."""
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    alice.delete_endpoint(endpoint.id, wait=False)
    err = expect_error(lambda: update_white(alice, endpoint.id, ["10.0.0.1"], True), (400, 404))
    assert (err.status_code, err.error_code) in {(400, "EndPoint.2018")} | {(404, c) for c in NOT_FOUND_ENDPOINT}
    wait_gone(lambda: alice.get_endpoint(endpoint.id))


def test_creating_endpoint_is_modified_only_once_created(alice):
    """Right after create the endpoint is `creating` (EndPoint.2019) or already done."""
    svc = alice.service()
    created = alice.create_endpoint(svc.id)
    try:
        update_white(alice, created.id, ["10.0.0.1"], True)
    except ClientRequestException as e:
        assert (e.status_code, e.error_code) == (400, "EndPoint.2019"), str(e)
    wait_status(lambda: alice.get_endpoint(created.id), ACCEPTED)
    assert update_white(alice, created.id, ["10.0.0.2"], True).whitelist == ["10.0.0.2"]


def test_endpoint_of_deleted_service(alice):
    """Open question 10: a pending endpoint whose service goes away ends `failed` with
    an error (or disappears); a failed endpoint cannot be modified (EndPoint.2047) but
    can be deleted."""
    svc = alice.service(approval_enabled=True)
    endpoint = alice.endpoint(svc.id, wanted=PENDING)
    alice.delete_service(svc.id)
    try:
        orphan = wait_status(lambda: alice.get_endpoint(endpoint.id), FAILED)
    except ClientRequestException as e:
        assert e.status_code == 404, str(e)
        return
    assert orphan.error and orphan.error[0].error_code and orphan.error[0].error_message
    expect_error(lambda: update_white(alice, endpoint.id, ["10.0.0.1"], True), 400, "EndPoint.2047")
    alice.delete_endpoint(endpoint.id)


def test_missing_endpoint_is_404(alice):
    expect_error(lambda: alice.get_endpoint(random_id()), 404, NOT_FOUND_ENDPOINT)
    expect_error(lambda: alice.delete_endpoint(random_id()), 404, NOT_FOUND_ENDPOINT)
    expect_error(lambda: update_white(alice, random_id(), [], False), 404, NOT_FOUND_ENDPOINT)


def test_subnet_in_use_by_endpoint_cannot_be_deleted(alice):
    """The registry must not pull a subnet from under an endpoint."""
    svc = alice.service()
    net = alice.network()
    alice.endpoint(svc.id, net, wanted=ACCEPTED)
    expect_error(lambda: alice.vpc.delete_subnet(vm.DeleteSubnetRequest(vpc_id=net.vpc_id, subnet_id=net.subnet_id)),
                 CLIENT_ERRORS)


def test_endpoint_ip_within_small_subnet(alice):
    svc = alice.service()
    net = alice.network("10.9.0.0/16", "10.9.0.0/29")
    endpoint = alice.endpoint(svc.id, net, wanted=ACCEPTED)
    assert ipaddress.ip_address(endpoint.ip) in ipaddress.ip_network("10.9.0.0/29")

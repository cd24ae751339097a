"""Endpoint services (spec 2.2, 3.1, 6.1, 6.2, 6.4): create, show, list, update,
rename, delete, describe, public services."""

import time

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    ACCEPTED,
    ANY_VPCEP_CODE,
    AVAILABLE,
    BAD_LIMIT,
    BAD_OFFSET,
    BAD_SORT_DIR,
    BAD_SORT_KEY,
    BAD_STATUS,
    CLIENT_ERRORS,
    CREATING,
    DELETING,
    FAILED,
    NOT_FOUND,
    PENDING,
    REGION,
    REJECTED,
    SERVICE_IN_USE,
    check_timestamps,
    describe_by_id,
    expect_error,
    port_dicts,
    ports,
    random_id,
    raw_json,
    wait_gone,
    wait_status,
)

# ---- create & show ---------------------------------------------------------------------


def test_create_service_then_available(alice):
    backend = alice.backend()
    created = alice.create_service(backend, service_name="web", description="front end",
                                   ports=ports((8080, 80), (8443, 443)))
    assert created.status_code == 200
    assert created.status == CREATING
    assert created.id and created.service_name == f"{REGION}.web.{created.id}"
    assert (created.port_id, created.vpc_id, created.server_type) == (backend.port_id, backend.net.vpc_id, "VM")
    assert created.project_id == alice.project_id
    details = wait_status(lambda: alice.get_service(created.id), AVAILABLE)
    assert details.id == created.id
    assert details.service_name == f"{REGION}.web.{created.id}"
    assert (details.port_id, details.vpc_id, details.server_type) == (backend.port_id, backend.net.vpc_id, "VM")
    assert details.service_type == "interface"
    assert details.approval_enabled is False
    assert details.description == "front end"
    assert details.project_id == alice.project_id
    assert port_dicts(details.ports) == [(8080, 80, "TCP"), (8443, 443, "TCP")]
    check_timestamps(raw_json(details))
    assert details.tags == [] or details.tags is None


def test_create_service_defaults(alice):
    """approval_enabled defaults to true, tcp_proxy to close, protocol to TCP."""
    backend = alice.backend()
    sid = alice.vpcep.create_endpoint_service(ep.CreateEndpointServiceRequest(
        body=ep.CreateEndpointServiceRequestBody(
            port_id=backend.port_id, vpc_id=backend.net.vpc_id, server_type="VM",
            ports=[ep.PortList(client_port=80, server_port=8080)]))).id
    details = wait_status(lambda: alice.get_service(sid), AVAILABLE)
    assert details.approval_enabled is True
    assert details.tcp_proxy == "close"
    assert details.service_type == "interface"
    assert port_dicts(details.ports) == [(80, 8080, "TCP")]
    assert details.service_name == f"{REGION}.{sid}"


@pytest.mark.parametrize("name", ["", "a", "A-Za-z0_9", "x" * 16, "___", "---"])
def test_service_name_accepted(alice, name):
    created = alice.create_service(service_name=name)
    expected = f"{REGION}.{name}.{created.id}" if name else f"{REGION}.{created.id}"
    assert created.service_name == expected
    assert alice.get_service(created.id).service_name == expected


@pytest.mark.parametrize("name", ["x" * 17, "a.b", "a b", "名字", "a/b", "a*"])
def test_service_name_refused(alice, name):
    expect_error(lambda: alice.create_service(service_name=name), 400, ANY_VPCEP_CODE)


def test_udp_and_tcp_on_same_client_port(alice):
    svc = alice.service(ports=ports((53, 53, "UDP"), (53, 53, "TCP")))
    assert port_dicts(svc.ports) == [(53, 53, "TCP"), (53, 53, "UDP")]


def test_fifty_port_mappings_is_the_limit(alice):
    fifty = ports(*[(1000 + i, 2000 + i) for i in range(50)])
    svc = alice.service(ports=fifty)
    assert len(svc.ports) == 50
    fifty_one = ports(*[(1000 + i, 2000 + i) for i in range(51)])
    expect_error(lambda: alice.create_service(ports=fifty_one), 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("mappings", [
    [(0, 80)], [(80, 0)], [(65536, 80)], [(80, 65536)], [(-1, 80)],
    [(80, 80, "ICMP")], [(80, 80, "HTTP")],
    [(80, 80), (80, 81)],                     # duplicate (client_port, TCP)
    [(53, 53, "UDP"), (53, 54, "UDP")],       # duplicate (client_port, UDP)
])
def test_bad_port_mappings_refused(alice, mappings):
    expect_error(lambda: alice.create_service(ports=ports(*mappings)), 400, ANY_VPCEP_CODE)


def test_port_range_edges_accepted(alice):
    svc = alice.service(ports=ports((1, 65535), (65535, 1)))
    assert port_dicts(svc.ports) == [(1, 65535, "TCP"), (65535, 1, "TCP")]


def test_missing_ports_refused(alice):
    expect_error(lambda: alice.create_service(ports=None), 400, ANY_VPCEP_CODE)


def test_lb_backend_requires_lb_port(alice):
    lb = alice.backend(lb=True)
    svc = alice.service(lb)
    assert svc.server_type == "LB" and svc.port_id == lb.port_id
    vm_backend = alice.backend()
    expect_error(lambda: alice.create_service(vm_backend, server_type="LB"), 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("server_type", ["BMS2", "vm", "", "LOADBALANCER"])
def test_bad_server_type_refused(alice, server_type):
    expect_error(lambda: alice.create_service(server_type=server_type), 400, ANY_VPCEP_CODE)


def test_backend_port_must_exist(alice):
    backend = alice.backend()
    expect_error(lambda: alice.create_service(backend, port_id=random_id()), 400, ANY_VPCEP_CODE)


def test_backend_port_must_be_in_the_given_vpc(alice):
    backend = alice.backend()
    other_vpc = alice.create_vpc()
    expect_error(lambda: alice.create_service(backend, vpc_id=other_vpc), 400, ANY_VPCEP_CODE)


def test_backend_vpc_must_exist(alice):
    expect_error(lambda: alice.create_service(vpc_id=random_id()), 400, ANY_VPCEP_CODE)


def test_backend_of_another_tenant_refused(alice, bob):
    bobs_backend = bob.backend()
    expect_error(lambda: alice.create_service(bobs_backend), 400, ANY_VPCEP_CODE)


def test_tenant_cannot_create_gateway_service(alice):
    expect_error(lambda: alice.create_service(service_type="gateway"), 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("tcp_proxy", ["close", "proxy_open", "open"])
def test_tcp_proxy_values(alice, tcp_proxy):
    assert alice.service(tcp_proxy=tcp_proxy).tcp_proxy == tcp_proxy


def test_toa_is_refused_clearly(alice):
    """TOA (a TCP option) is not carried by the gateway; PROXY v2 is the supported way."""
    err = expect_error(lambda: alice.create_service(tcp_proxy="toa_open"), 400, ANY_VPCEP_CODE)
    assert "not supported" in err.error_msg


def test_bad_tcp_proxy_refused(alice):
    expect_error(lambda: alice.create_service(tcp_proxy="sometimes"), 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("description", ["<script>", "a > b", "x<"])
def test_description_with_angle_brackets_refused(alice, description):
    expect_error(lambda: alice.create_service(description=description), 400, ANY_VPCEP_CODE)


def test_description_length(alice):
    assert alice.service(description="d" * 512).description == "d" * 512
    expect_error(lambda: alice.create_service(description="d" * 513), 400, ANY_VPCEP_CODE)


def test_non_ascii_description_round_trips(alice):
    text = "中文描述 – ünïcode ✓"
    svc = alice.service(description=text)
    assert svc.description == text
    assert alice.update_service(svc.id, description=text + "!").description == text + "!"


def test_services_sharing_a_backend_port_need_distinct_server_ports(alice):
    """Spec 6.2: across services on the same port_id, (server_port, protocol) is unique."""
    backend = alice.backend()
    alice.service(backend, ports=ports((8080, 80)))
    expect_error(lambda: alice.create_service(backend, ports=ports((9090, 80))), 400, "EndPoint.3044")
    assert alice.service(backend, ports=ports((9090, 81)))
    assert alice.service(backend, ports=ports((9090, 80, "UDP")))


def test_deleted_service_frees_its_backend_ports(alice):
    backend = alice.backend()
    first = alice.service(backend, ports=ports((8080, 80)))
    alice.delete_service(first.id)
    assert alice.service(backend, ports=ports((8080, 80)))


def test_show_unknown_service_is_404(alice):
    expect_error(lambda: alice.get_service(random_id()), 404, NOT_FOUND)


# ---- update ------------------------------------------------------------------------------


def test_update_service_fields(alice):
    svc = alice.service(approval_enabled=False, ports=ports((8080, 80)))
    res = alice.update_service(svc.id, approval_enabled=True, description="changed", tcp_proxy="proxy_open")
    assert res.status_code == 200
    assert (res.id, res.approval_enabled, res.description, res.tcp_proxy) == (svc.id, True, "changed", "proxy_open")
    details = alice.get_service(svc.id)
    assert (details.approval_enabled, details.description, details.tcp_proxy) == (True, "changed", "proxy_open")
    assert port_dicts(details.ports) == [(8080, 80, "TCP")]


def test_update_service_name_via_update(alice):
    svc = alice.service(service_name="old")
    res = alice.update_service(svc.id, service_name="new-name")
    assert res.service_name == f"{REGION}.new-name.{svc.id}"
    assert alice.get_service(svc.id).service_name == f"{REGION}.new-name.{svc.id}"
    expect_error(lambda: alice.update_service(svc.id, service_name="bad.name"), 400, ANY_VPCEP_CODE)


def test_update_with_same_ports_is_a_noop(alice):
    svc = alice.service(ports=ports((8080, 80), (53, 53, "UDP")))
    res = alice.update_service(svc.id, ports=ports((8080, 80), (53, 53, "UDP")), description="same ports")
    assert port_dicts(res.ports) == [(53, 53, "UDP"), (8080, 80, "TCP")]
    assert port_dicts(alice.get_service(svc.id).ports) == [(53, 53, "UDP"), (8080, 80, "TCP")]


@pytest.mark.parametrize("new_ports", [
    [(8080, 81)],                 # changed server port
    [(8080, 80), (9090, 90)],     # added mapping
    [],                           # removed every mapping
    [(8080, 80, "UDP")],          # changed protocol
])
def test_port_mappings_are_immutable(alice, new_ports):
    svc = alice.service(ports=ports((8080, 80)))
    expect_error(lambda: alice.update_service(svc.id, ports=ports(*new_ports)), 400, ANY_VPCEP_CODE)
    assert port_dicts(alice.get_service(svc.id).ports) == [(8080, 80, "TCP")]


def test_update_refuses_bad_description(alice):
    svc = alice.service()
    expect_error(lambda: alice.update_service(svc.id, description="<b>"), 400, ANY_VPCEP_CODE)
    assert alice.get_service(svc.id).description in ("", None)


def test_update_backend_port(alice):
    backend = alice.backend()
    svc = alice.service(backend)
    other_port = alice.create_port(backend.net.subnet_id).id
    assert alice.update_service(svc.id, port_id=other_port).port_id == other_port
    assert alice.get_service(svc.id).port_id == other_port
    foreign_vpc_port = alice.backend().port_id
    expect_error(lambda: alice.update_service(svc.id, port_id=foreign_vpc_port), 400, ANY_VPCEP_CODE)
    assert alice.get_service(svc.id).port_id == other_port


def test_update_port_id_and_ip_together_refused(alice):
    backend = alice.backend()
    svc = alice.service(backend)
    other_port = alice.create_port(backend.net.subnet_id).id
    expect_error(lambda: alice.update_service(svc.id, port_id=other_port, ip="10.0.1.200"), 400, ANY_VPCEP_CODE)
    assert alice.get_service(svc.id).port_id == backend.port_id


def test_update_unknown_service_is_404(alice):
    expect_error(lambda: alice.update_service(random_id(), description="x"), 404, NOT_FOUND)


def test_update_endpoint_service_name(alice):
    svc = alice.service(service_name="first")
    res = alice.vpcep.update_endpoint_service_name(ep.UpdateEndpointServiceNameRequest(
        vpc_endpoint_service_id=svc.id,
        body=ep.UpdateEndpointServiceNameRequestBody(endpoint_service_name="second")))
    full = f"{REGION}.second.{svc.id}"
    assert res.endpoint_service_name in (full, "second")
    assert alice.get_service(svc.id).service_name == full


@pytest.mark.parametrize("name", ["x" * 17, "dots.not.allowed", "<x>"])
def test_update_endpoint_service_name_refuses_bad_names(alice, name):
    svc = alice.service(service_name="keep")
    expect_error(lambda: alice.vpcep.update_endpoint_service_name(ep.UpdateEndpointServiceNameRequest(
        vpc_endpoint_service_id=svc.id,
        body=ep.UpdateEndpointServiceNameRequestBody(endpoint_service_name=name))), 400, ANY_VPCEP_CODE)
    assert alice.get_service(svc.id).service_name == f"{REGION}.keep.{svc.id}"


# ---- list ----------------------------------------------------------------------------------


def test_list_services_filters(alice, bob):
    web = alice.service(service_name="WebFront")
    db = alice.service(service_name="database")
    bob.service(service_name="webfront")
    everything = alice.list_services()
    assert everything.total_count == 2
    assert {s.id for s in everything.endpoint_services} == {web.id, db.id}
    by_name = alice.list_services(endpoint_service_name="webf")  # case-insensitive substring
    assert [s.id for s in by_name.endpoint_services] == [web.id] and by_name.total_count == 1
    by_id = alice.list_services(id=db.id)
    assert [s.id for s in by_id.endpoint_services] == [db.id]
    assert alice.list_services(status=AVAILABLE).total_count == 2
    assert alice.list_services(status=FAILED).total_count == 0
    row = by_id.endpoint_services[0]
    assert row.service_name == f"{REGION}.database.{db.id}"
    assert row.domain_id == alice.domain_id and row.project_id == alice.project_id
    assert row.connection_count == 0


def test_list_services_pagination(alice):
    ids = {alice.create_service().id for _ in range(5)}
    seen = []
    for offset in (0, 2, 4):
        page = alice.list_services(limit=2, offset=offset, sort_key="create_at", sort_dir="asc")
        assert page.total_count == 5
        assert len(page.endpoint_services) == (2 if offset < 4 else 1)
        seen += [s.id for s in page.endpoint_services]
    assert sorted(seen) == sorted(ids)
    assert alice.list_services(offset=5).endpoint_services == []
    assert alice.list_services(offset=100).total_count == 5
    assert len(alice.list_services().endpoint_services) == 5  # default limit 10
    assert alice.list_services(limit=0).total_count == 5


def test_list_services_sorted_by_time(alice):
    older = alice.service().id
    time.sleep(1.1)  # timestamps have one-second resolution
    newer = alice.service().id

    def order(**q):
        return [s.id for s in alice.list_services(**q).endpoint_services]

    assert order() == [newer, older]  # default: create time, descending
    assert order(sort_key="create_at", sort_dir="asc") == [older, newer]
    assert order(sort_key="created_at", sort_dir="desc") == [newer, older]
    time.sleep(1.1)
    alice.update_service(older, description="touched")
    assert order(sort_key="update_at", sort_dir="desc") == [older, newer]
    assert order(sort_key="updated_at", sort_dir="asc") == [newer, older]


@pytest.mark.parametrize("sort_key", ["create_at", "update_at", "created_at", "updated_at"])
def test_list_services_sort_order(alice, sort_key):
    for _ in range(3):
        alice.create_service()
    attr = "updated_at" if "update" in sort_key else "created_at"
    asc = alice.list_services(sort_key=sort_key, sort_dir="asc").endpoint_services
    desc = alice.list_services(sort_key=sort_key, sort_dir="desc").endpoint_services
    default = alice.list_services().endpoint_services
    assert [getattr(s, attr) for s in asc] == sorted(getattr(s, attr) for s in asc)
    assert [getattr(s, attr) for s in desc] == sorted((getattr(s, attr) for s in desc), reverse=True)
    assert {s.id for s in asc} == {s.id for s in desc}
    if sort_key == "create_at":  # default order: create time, descending
        assert [s.created_at for s in default] == sorted((s.created_at for s in default), reverse=True)


@pytest.mark.parametrize("query, code", [
    ({"limit": 1001}, BAD_LIMIT),
    ({"limit": -1}, BAD_LIMIT),
    ({"offset": -1}, BAD_OFFSET),
    ({"status": "running"}, BAD_STATUS),
    ({"sort_key": "name"}, BAD_SORT_KEY),
    ({"sort_dir": "up"}, BAD_SORT_DIR),
])
def test_list_services_bad_query(alice, query, code):
    expect_error(lambda: alice.list_services(**query), 400, code)


# ---- delete --------------------------------------------------------------------------------


def test_delete_service(alice):
    svc = alice.service()
    res = alice.vpcep.delete_endpoint_service(ep.DeleteEndpointServiceRequest(vpc_endpoint_service_id=svc.id))
    assert res.status_code == 204
    wait_gone(lambda: alice.get_service(svc.id))
    assert alice.list_services(id=svc.id).total_count == 0


def test_delete_unknown_service_is_404(alice):
    expect_error(lambda: alice.delete_service(random_id()), 404, NOT_FOUND)


def test_service_with_accepted_endpoint_cannot_be_deleted(alice):
    svc = alice.service(approval_enabled=False)
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    expect_error(lambda: alice.delete_service(svc.id), 400, SERVICE_IN_USE)
    assert alice.get_service(svc.id).status == AVAILABLE
    assert alice.list_services(id=svc.id).endpoint_services[0].connection_count == 1
    alice.delete_endpoint(endpoint.id)
    alice.delete_service(svc.id)


def test_service_with_creating_endpoint_cannot_be_deleted(alice):
    """Right after create_endpoint the endpoint is `creating` (or already `accepted`):
    both block deletion."""
    svc = alice.service(approval_enabled=False)
    net = alice.network()
    created = alice.create_endpoint(svc.id, net)
    expect_error(lambda: alice.delete_service(svc.id), 400, SERVICE_IN_USE)
    wait_status(lambda: alice.get_endpoint(created.id), ACCEPTED)
    assert alice.get_service(svc.id).status == AVAILABLE


def test_service_with_only_pending_endpoint_can_be_deleted(alice):
    svc = alice.service(approval_enabled=True)
    endpoint = alice.endpoint(svc.id, wanted=PENDING)
    assert alice.list_services(id=svc.id).endpoint_services[0].connection_count == 0
    alice.delete_service(svc.id)
    # spec open question 10: the orphaned endpoint is kept (failed) or removed — never 5xx
    try:
        status = alice.get_endpoint(endpoint.id).status
    except ClientRequestException as e:
        assert e.status_code == 404, str(e)
    else:
        assert status in (FAILED, DELETING, PENDING, REJECTED)


# ---- describe & public services ----------------------------------------------------------


def test_describe_own_service_by_id_and_name(alice):
    svc = alice.service(service_name="describeme")
    by_id = describe_by_id(alice, svc.id)
    by_name = alice.vpcep.list_service_describe_details(
        ep.ListServiceDescribeDetailsRequest(endpoint_service_name=svc.service_name))
    for res in (by_id, by_name):
        assert (res.id, res.service_name, res.service_type) == (svc.id, svc.service_name, "interface")
        check_timestamps(raw_json(res), "created_at")


def test_describe_finds_services_shared_with_the_caller_only(alice, bob):
    """Describe is how a consumer finds a provider's service. A service not shared with
    the caller looks exactly like a missing one (tenancy rule); once the provider adds
    the caller to the whitelist, describe finds it by id and by name."""
    svc = alice.service(service_name="shared")
    hidden = expect_error(lambda: describe_by_id(bob, svc.id), 404, NOT_FOUND)
    missing = expect_error(lambda: describe_by_id(bob, "00000000-0000-0000-0000-000000000000"), 404, NOT_FOUND)
    assert hidden.error_msg == missing.error_msg
    alice.permit(svc.id, [bob.permission])
    res = describe_by_id(bob, svc.id)
    assert (res.id, res.service_name, res.service_type) == (svc.id, svc.service_name, "interface")
    by_name = bob.vpcep.list_service_describe_details(
        ep.ListServiceDescribeDetailsRequest(endpoint_service_name=svc.service_name))
    assert by_name.id == svc.id


def test_describe_does_not_expose_backend_details(alice, bob):
    svc = alice.service(service_name="shared")
    alice.permit(svc.id, [bob.permission])
    raw = raw_json(describe_by_id(bob, svc.id))
    assert raw["id"] == svc.id
    for secret in ("port_id", "vpc_id", "project_id", "ip", "pool_id"):
        assert secret not in raw, f"describe leaks {secret}: {raw}"


def test_describe_requires_exactly_one_selector(alice):
    svc = alice.service()
    expect_error(lambda: alice.vpcep.list_service_describe_details(ep.ListServiceDescribeDetailsRequest()),
                 400, ANY_VPCEP_CODE)
    expect_error(lambda: alice.vpcep.list_service_describe_details(
        ep.ListServiceDescribeDetailsRequest(id=svc.id, endpoint_service_name=svc.service_name)),
        400, ANY_VPCEP_CODE)


def test_describe_unknown_is_404(alice):
    expect_error(lambda: describe_by_id(alice, random_id()), 404, NOT_FOUND)
    expect_error(lambda: alice.vpcep.list_service_describe_details(
        ep.ListServiceDescribeDetailsRequest(endpoint_service_name=f"{REGION}.nothing.{random_id()}")),
        404, NOT_FOUND)


def public_list(tenant, **query):
    return tenant.vpcep.list_service_public_details(ep.ListServicePublicDetailsRequest(**query))


def test_public_services_visible_to_everyone(alice, bob, public_services):
    for tenant in (alice, bob):
        res = public_list(tenant, limit=1000)
        rows = {s.id: s for s in res.endpoint_services}
        assert res.total_count >= 2
        dns, obs = rows[public_services["dns"]["id"]], rows[public_services["obs"]["id"]]
        assert dns.service_type == "interface" and obs.service_type == "gateway"
        for row in (dns, obs):
            assert row.service_name and isinstance(row.is_charge, bool)
        for row in raw_json(res)["endpoint_services"]:
            check_timestamps(row, "created_at")
    # tenant services are not public
    svc = alice.service()
    assert svc.id not in {s.id for s in public_list(bob, limit=1000).endpoint_services}


def test_public_services_filter_and_paging(alice, public_services):
    dns_id = public_services["dns"]["id"]
    res = public_list(alice, id=dns_id)
    assert [s.id for s in res.endpoint_services] == [dns_id] and res.total_count == 1
    name = public_services["dns"]["service_name"]
    res = public_list(alice, endpoint_service_name=name.upper())
    assert dns_id in {s.id for s in res.endpoint_services}
    total = public_list(alice).total_count
    page = public_list(alice, limit=1, offset=0, sort_dir="asc")
    assert len(page.endpoint_services) == 1 and page.total_count == total
    expect_error(lambda: public_list(alice, limit=1001), 400, BAD_LIMIT)


def test_describe_public_service_by_name(bob, public_services):
    obs = public_services["obs"]
    res = bob.vpcep.list_service_describe_details(
        ep.ListServiceDescribeDetailsRequest(endpoint_service_name=obs["service_name"]))
    assert res.id == obs["id"] and res.service_type == "gateway"


def test_tenant_cannot_delete_public_service(alice, public_services):
    sid = public_services["dns"]["id"]
    expect_error(lambda: alice.delete_service(sid, wait=False), CLIENT_ERRORS)
    assert sid in {s.id for s in public_list(alice, limit=1000).endpoint_services}

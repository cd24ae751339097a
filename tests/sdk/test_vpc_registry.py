"""The VPC registry the endpoint services and endpoints live in, driven through
huaweicloudsdkvpc v2: VPCs, subnets, ports (NICs and LB VIPs), route tables."""

import ipaddress

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpc.v2.model as vm
from conftest import LB_DEVICE_OWNER, random_id


def expect_vpc_error(call, statuses=(400,)):
    """The VPC API error shape is not ours to pin down: a 4xx from the wanted set."""
    with pytest.raises(ClientRequestException) as ei:
        call()
    assert ei.value.status_code in statuses, str(ei.value)
    return ei.value


def test_create_show_list_delete_vpc(alice):
    vpc_id = alice.create_vpc("10.8.0.0/16", name="registry-vpc")
    shown = alice.vpc.show_vpc(vm.ShowVpcRequest(vpc_id=vpc_id)).vpc
    assert (shown.id, shown.name, shown.cidr) == (vpc_id, "registry-vpc", "10.8.0.0/16")
    assert vpc_id in {v.id for v in alice.vpc.list_vpcs(vm.ListVpcsRequest()).vpcs}
    alice.vpc.delete_vpc(vm.DeleteVpcRequest(vpc_id=vpc_id))
    expect_vpc_error(lambda: alice.vpc.show_vpc(vm.ShowVpcRequest(vpc_id=vpc_id)), (404,))


def test_vpc_gets_a_default_route_table(alice):
    vpc_id = alice.create_vpc()
    tables = alice.vpc.list_route_tables(vm.ListRouteTablesRequest(vpc_id=vpc_id)).routetables
    assert len(tables) == 1 and tables[0].default is True and tables[0].vpc_id == vpc_id
    shown = alice.vpc.show_route_table(vm.ShowRouteTableRequest(routetable_id=tables[0].id)).routetable
    assert shown.id == tables[0].id and shown.vpc_id == vpc_id


def test_create_custom_route_table(alice):
    vpc_id = alice.create_vpc()
    body = vm.CreateRoutetableReqBody(routetable=vm.CreateRouteTableReq(name="custom-rt", vpc_id=vpc_id))
    created = alice.vpc.create_route_table(vm.CreateRouteTableRequest(body=body)).routetable
    assert created.id and created.vpc_id == vpc_id and not created.default
    tables = alice.vpc.list_route_tables(vm.ListRouteTablesRequest(vpc_id=vpc_id)).routetables
    assert {t.id for t in tables} >= {created.id} and len(tables) == 2


def test_subnet_lifecycle(alice):
    vpc_id = alice.create_vpc("172.16.0.0/16")
    subnet_id = alice.create_subnet(vpc_id, "172.16.5.0/24")
    shown = alice.vpc.show_subnet(vm.ShowSubnetRequest(subnet_id=subnet_id)).subnet
    assert (shown.cidr, shown.vpc_id, shown.gateway_ip) == ("172.16.5.0/24", vpc_id, "172.16.5.1")
    listed = alice.vpc.list_subnets(vm.ListSubnetsRequest(vpc_id=vpc_id)).subnets
    assert [s.id for s in listed] == [subnet_id]
    alice.vpc.delete_subnet(vm.DeleteSubnetRequest(vpc_id=vpc_id, subnet_id=subnet_id))
    expect_vpc_error(lambda: alice.vpc.show_subnet(vm.ShowSubnetRequest(subnet_id=subnet_id)), (404,))


def test_overlapping_cidrs_across_vpcs_are_allowed(alice):
    first, second = alice.network(), alice.network()
    assert first.vpc_id != second.vpc_id and first.cidr == second.cidr


@pytest.mark.parametrize("subnet_cidr", ["198.19.128.0/24", "198.19.255.0/24", "198.19.0.0/16"])
def test_subnet_overlapping_vpcep_range_is_refused(alice, subnet_cidr):
    """198.19.128.0/17 is reserved for VPCEP (spec 6.6)."""
    try:
        vpc_id = alice.create_vpc("198.19.0.0/16")
    except ClientRequestException as e:  # refusing the VPC itself is acceptable too
        assert e.status_code == 400, str(e)
        return
    expect_vpc_error(lambda: alice.create_subnet(vpc_id, subnet_cidr))


def test_subnet_next_to_vpcep_range_is_fine(alice):
    vpc_id = alice.create_vpc("198.19.0.0/17")
    assert alice.create_subnet(vpc_id, "198.19.127.0/24")


def test_subnet_outside_vpc_cidr_is_refused(alice):
    vpc_id = alice.create_vpc("10.0.0.0/16")
    expect_vpc_error(lambda: alice.create_subnet(vpc_id, "10.1.0.0/24"))


def test_overlapping_subnets_in_one_vpc_are_refused(alice):
    vpc_id = alice.create_vpc("10.0.0.0/16")
    alice.create_subnet(vpc_id, "10.0.1.0/24")
    expect_vpc_error(lambda: alice.create_subnet(vpc_id, "10.0.1.128/25"), (400, 409))


def test_port_gets_an_address_in_its_subnet(alice):
    net = alice.network()
    port = alice.create_port(net.subnet_id)
    assert port.id and len(port.fixed_ips) == 1
    # Huawei style: the port's network_id is the VPC-API subnet id, fixed_ips carry the
    # neutron subnet id
    subnet = alice.vpc.show_subnet(vm.ShowSubnetRequest(subnet_id=net.subnet_id)).subnet
    assert port.network_id == net.subnet_id
    assert port.fixed_ips[0].subnet_id in (net.subnet_id, subnet.neutron_subnet_id)
    ip = port.fixed_ips[0].ip_address
    assert net.contains(ip) and ip != "10.0.1.1"  # not the gateway
    shown = alice.vpc.show_port(vm.ShowPortRequest(port_id=port.id)).port
    assert shown.fixed_ips[0].ip_address == ip


def test_port_with_requested_address(alice):
    net = alice.network()
    port = alice.create_port(net.subnet_id, ip="10.0.1.77")
    assert port.fixed_ips[0].ip_address == "10.0.1.77"
    expect_vpc_error(lambda: alice.create_port(net.subnet_id, ip="10.0.1.77"), (400, 409))
    expect_vpc_error(lambda: alice.create_port(net.subnet_id, ip="10.0.2.5"))


def test_auto_allocated_port_addresses_are_distinct(alice):
    net = alice.network()
    ips = [alice.create_port(net.subnet_id).fixed_ips[0].ip_address for _ in range(5)]
    assert len(set(ips)) == 5 and all(net.contains(ip) for ip in ips)


def test_lb_port_is_marked(alice):
    net = alice.network()
    port = alice.create_port(net.subnet_id, lb=True)
    assert port.device_owner == LB_DEVICE_OWNER
    listed = alice.vpc.list_ports(vm.ListPortsRequest(network_id=net.subnet_id)).ports
    assert port.id in {p.id for p in listed}


def test_delete_port(alice):
    net = alice.network()
    port = alice.create_port(net.subnet_id)
    alice.vpc.delete_port(vm.DeletePortRequest(port_id=port.id))
    expect_vpc_error(lambda: alice.vpc.show_port(vm.ShowPortRequest(port_id=port.id)), (404,))


def test_port_in_unknown_subnet_is_refused(alice):
    expect_vpc_error(lambda: alice.create_port(random_id()), (400, 404))


def test_registry_is_tenant_scoped(alice, bob):
    net = alice.network()
    port = alice.create_port(net.subnet_id)
    expect_vpc_error(lambda: bob.vpc.show_vpc(vm.ShowVpcRequest(vpc_id=net.vpc_id)), (404,))
    expect_vpc_error(lambda: bob.vpc.show_subnet(vm.ShowSubnetRequest(subnet_id=net.subnet_id)), (404,))
    expect_vpc_error(lambda: bob.vpc.show_port(vm.ShowPortRequest(port_id=port.id)), (404,))
    assert net.vpc_id not in {v.id for v in bob.vpc.list_vpcs(vm.ListVpcsRequest()).vpcs}
    assert port.id not in {p.id for p in bob.vpc.list_ports(vm.ListPortsRequest()).ports}
    # bob cannot put a subnet into alice's VPC nor a port into her subnet
    expect_vpc_error(lambda: bob.create_subnet(net.vpc_id, "10.0.9.0/24"), (400, 404))
    expect_vpc_error(lambda: bob.create_port(net.subnet_id), (400, 404))


def test_subnet_address_math(alice):
    """Sanity of the helper: ports come from the usable host range."""
    net = alice.network("192.168.0.0/16", "192.168.10.0/28")
    hosts = set(map(str, ipaddress.ip_network(net.cidr).hosts()))
    ip = alice.create_port(net.subnet_id).fixed_ips[0].ip_address
    assert ip in hosts

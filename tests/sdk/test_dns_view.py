"""The read-only DNS v2 view of endpoints' private names, through the official
`huaweicloudsdkdns` client: the user guide's "see the record in the DNS console" step."""

import pytest
from huaweicloudsdkcore.auth.credentials import BasicCredentials
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException
from huaweicloudsdkdns.v2 import DnsClient
from huaweicloudsdkdns.v2 import model as dm

from conftest import ACCEPTED, http_config


def dns_client(tenant) -> DnsClient:
    return (DnsClient.new_builder().with_http_config(http_config())
            .with_credentials(BasicCredentials(tenant.ak, tenant.sk, tenant.project_id))
            .with_endpoint(tenant.server.url).build())


def private_zones(dns):
    return dns.list_private_zones(dm.ListPrivateZonesRequest(type="private")).zones or []


def test_named_endpoint_appears_in_its_vpc_zone_and_goes_with_it(alice, bob):
    svc = alice.service()
    alice.permit(svc.id, [bob.permission])
    net = bob.network()
    endpoint = bob.endpoint(svc.id, net, wanted=ACCEPTED, enable_dns=True)
    name = endpoint.dns_names[0]
    dns = dns_client(bob)

    zones = [z for z in private_zones(dns) if z.routers and z.routers[0].router_id == net.vpc_id]
    assert len(zones) == 1, zones
    zone = zones[0]
    assert zone.name == "vpcep.local-1.internal." and zone.zone_type == "private"
    assert zone.record_num == 1

    shown = dns.show_private_zone(dm.ShowPrivateZoneRequest(zone_id=zone.id))
    assert shown.id == zone.id and shown.routers[0].router_id == net.vpc_id

    sets = dns.list_record_sets_by_zone(dm.ListRecordSetsByZoneRequest(zone_id=zone.id)).recordsets
    assert [(s.name, s.type, s.records) for s in sets] == [(name + ".", "A", [endpoint.ip])]
    one = dns.show_record_set(dm.ShowRecordSetRequest(zone_id=zone.id, recordset_id=sets[0].id))
    assert one.records == [endpoint.ip] and one.zone_name == zone.name

    listed = dns.list_record_sets(dm.ListRecordSetsRequest(zone_type="private", name=endpoint.id))
    assert listed.metadata.total_count == 1 and listed.recordsets[0].name == name + "."

    # Another tenant sees none of it.
    assert not [z for z in private_zones(dns_client(alice)) if z.id == zone.id]
    with pytest.raises(ClientRequestException) as e:
        dns_client(alice).show_private_zone(dm.ShowPrivateZoneRequest(zone_id=zone.id))
    assert e.value.status_code == 404

    bob.delete_endpoint(endpoint.id)
    assert not [z for z in private_zones(dns) if z.id == zone.id]
    assert dns.list_record_sets(dm.ListRecordSetsRequest(zone_type="private")).metadata.total_count == 0


def test_endpoint_without_a_name_publishes_nothing(alice):
    svc = alice.service()
    endpoint = alice.endpoint(svc.id, wanted=ACCEPTED)
    assert not endpoint.dns_names
    dns = dns_client(alice)
    records = dns.list_record_sets(dm.ListRecordSetsRequest(zone_type="private")).recordsets or []
    assert all(endpoint.id not in r.name for r in records)
    assert dns.list_private_zones(dm.ListPrivateZonesRequest(type="public")).zones in (None, [])

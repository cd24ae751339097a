"""Quotas (spec 2.6, 6.5): default 20 endpoint services and 50 endpoints per account,
used/quota reporting, Endpoint.1018 on excess, and atomicity under concurrency.
Every test uses its own fresh accounts (the `alice`/`bob` fixtures are per test)."""

import re
import threading

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    ACCEPTED,
    ANY_VPCEP_CODE,
    QUOTA_EXCEEDED,
    expect_error,
    ports,
    vpcep_client,
    wait_status,
)


def test_fresh_account_quotas(alice):
    res = alice.vpcep.list_quota_details(ep.ListQuotaDetailsRequest())
    assert res.status_code == 200
    assert alice.quotas() == {"endpoint_service": (0, 20), "endpoint": (0, 50)}


@pytest.mark.parametrize("kind", ["endpoint_service", "endpoint"])
def test_quota_type_filter(alice, kind):
    assert list(alice.quotas(kind)) == [kind]


def test_quota_bad_type(alice):
    expect_error(lambda: alice.quotas("vpc"), 400, ANY_VPCEP_CODE)


def test_used_counts_follow_creates_and_deletes(alice, bob):
    svc = alice.service()
    assert alice.quotas()["endpoint_service"] == (1, 20)
    alice.permit(svc.id, [bob.permission])
    endpoint = bob.endpoint(svc.id)
    # the endpoint counts for the consumer, not the provider
    assert bob.quotas() == {"endpoint_service": (0, 20), "endpoint": (1, 50)}
    assert alice.quotas()["endpoint"] == (0, 50)
    bob.delete_endpoint(endpoint.id)
    assert bob.quotas()["endpoint"] == (0, 50)
    alice.delete_service(svc.id)
    assert alice.quotas()["endpoint_service"] == (0, 20)


def test_default_service_quota_is_20(alice):
    backend = alice.backend()
    for i in range(20):
        alice.create_service(backend, ports=ports((80, 1000 + i)))
    assert alice.quotas()["endpoint_service"] == (20, 20)
    expect_error(lambda: alice.create_service(backend, ports=ports((80, 2000))), 400, QUOTA_EXCEEDED)
    assert alice.list_services().total_count == 20


def test_default_endpoint_quota_is_50(alice):
    svc = alice.service()
    net = alice.network("10.0.0.0/16", "10.0.0.0/22")
    for _ in range(50):
        alice.create_endpoint(svc.id, net)
    assert alice.quotas()["endpoint"] == (50, 50)
    expect_error(lambda: alice.create_endpoint(svc.id, net), 400, QUOTA_EXCEEDED)
    assert alice.list_endpoints().total_count == 50


def test_admin_quota_change(alice):
    alice.set_quota(endpoint_services=2, endpoints=1)
    assert alice.quotas() == {"endpoint_service": (0, 2), "endpoint": (0, 1)}
    svc = alice.service()
    alice.service()
    expect_error(lambda: alice.create_service(), 400, QUOTA_EXCEEDED)
    alice.endpoint(svc.id)
    expect_error(lambda: alice.create_endpoint(svc.id), 400, QUOTA_EXCEEDED)
    # raising the quota lets the next create through
    alice.set_quota(endpoint_services=3)
    assert alice.quotas()["endpoint_service"] == (2, 3)
    alice.service()


def test_freed_quota_can_be_reused(alice):
    alice.set_quota(endpoints=1)
    svc = alice.service()
    first = alice.endpoint(svc.id, wanted=ACCEPTED)
    expect_error(lambda: alice.create_endpoint(svc.id), 400, QUOTA_EXCEEDED)
    alice.delete_endpoint(first.id)
    assert alice.endpoint(svc.id, wanted=ACCEPTED)


def test_quota_is_per_account(alice, bob):
    alice.set_quota(endpoint_services=0)
    expect_error(lambda: alice.create_service(), 400, QUOTA_EXCEEDED)
    assert bob.service()
    assert bob.quotas()["endpoint_service"] == (1, 20)


def run_concurrently(n: int, fn):
    """Run fn(i) in n threads released at once; return the list of results or
    exceptions, in thread order."""
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def worker(i):
        barrier.wait()
        try:
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001 - collected and checked by the caller
            results[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return results


def split_outcomes(results, refusal=QUOTA_EXCEEDED):
    """(successes, refusals); anything but a 400 matching `refusal` fails the test."""
    ok = [r for r in results if not isinstance(r, Exception)]
    errors = [r for r in results if isinstance(r, Exception)]
    unexpected = [e for e in errors
                  if not (isinstance(e, ClientRequestException) and e.status_code == 400
                          and re.fullmatch(refusal, e.error_code or ""))]
    assert not unexpected, f"unexpected failures: {[str(e) for e in unexpected]}"
    return ok, errors


def clients_of(tenant, n):
    """n independent SDK clients (own HTTP sessions) of one tenant."""
    return [vpcep_client(tenant.server.url, tenant.ak, tenant.sk, tenant.project_id) for _ in range(n)]


def create_endpoints_concurrently(tenant, service_id, net, n, refusal=QUOTA_EXCEEDED, **fields):
    clients = clients_of(tenant, n)
    body = ep.CreateEndpointRequestBody(endpoint_service_id=service_id, vpc_id=net.vpc_id, subnet_id=net.subnet_id,
                                        **fields)
    return split_outcomes(run_concurrently(n, lambda i: clients[i].create_endpoint(
        ep.CreateEndpointRequest(body=body))), refusal)


def test_concurrent_endpoint_creates_respect_quota(alice):
    alice.set_quota(endpoints=3)
    svc = alice.service()
    net = alice.network()
    ok, errors = create_endpoints_concurrently(alice, svc.id, net, 10)
    assert len(ok) == 3 and len(errors) == 7
    assert alice.list_endpoints().total_count == 3
    assert alice.quotas()["endpoint"] == (3, 3)
    for created in ok:
        wait_status(lambda: alice.get_endpoint(created.id), ACCEPTED)
    # distinct addresses even when allocated concurrently
    ips = {alice.get_endpoint(c.id).ip for c in ok}
    assert len(ips) == 3


def test_concurrent_service_creates_respect_quota(alice):
    alice.set_quota(endpoint_services=2)
    backends = [alice.backend() for _ in range(8)]
    clients = clients_of(alice, 8)

    def create(i):
        b = backends[i]
        return clients[i].create_endpoint_service(ep.CreateEndpointServiceRequest(
            body=ep.CreateEndpointServiceRequestBody(port_id=b.port_id, vpc_id=b.net.vpc_id, server_type="VM",
                                                     ports=ports((80, 80)))))

    ok, errors = split_outcomes(run_concurrently(8, create))
    assert len(ok) == 2 and len(errors) == 6
    assert alice.list_services().total_count == 2
    assert alice.quotas()["endpoint_service"] == (2, 2)


def test_concurrent_creates_allocate_unique_addresses_and_markers(alice):
    svc = alice.service()
    net = alice.network()
    ok, errors = create_endpoints_concurrently(alice, svc.id, net, 10)
    assert len(ok) == 10
    done = [wait_status(lambda: alice.get_endpoint(c.id), ACCEPTED) for c in ok]
    assert len({d.ip for d in done}) == 10 and all(net.contains(d.ip) for d in done)
    assert len({d.marker_id for d in done}) == 10


def test_concurrent_creates_for_the_same_port_ip(alice):
    """Only one of several simultaneous requests for one address may get it."""
    svc = alice.service()
    net = alice.network()
    ok, errors = create_endpoints_concurrently(alice, svc.id, net, 6, refusal=ANY_VPCEP_CODE.pattern,
                                               port_ip="10.0.1.99")
    assert len(ok) == 1 and len(errors) == 5
    assert wait_status(lambda: alice.get_endpoint(ok[0].id), ACCEPTED).ip == "10.0.1.99"

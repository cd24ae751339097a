"""Tags (spec 2.7, 3.8, 6.8): tags at creation, batch create/delete, project tag
list, resource_instances filter/count."""

import pytest

import huaweicloudsdkvpcep.v1.model as ep
from conftest import (
    ANY_VPCEP_CODE,
    BAD_RESOURCE_TYPE,
    expect_error,
    random_id,
)

SERVICE, ENDPOINT = "endpoint_service", "endpoint"


def tags(**kv):
    return [ep.TagList(key=k, value=v) for k, v in kv.items()]


def tag_dict(tag_list):
    return {t.key: t.value for t in tag_list or []}


def tag_action(tenant, resource_type, resource_id, action, items):
    """items: [(key, value or None)]"""
    return tenant.vpcep.batch_add_or_remove_resource_instance(ep.BatchAddOrRemoveResourceInstanceRequest(
        resource_type=resource_type, resource_id=resource_id,
        body=ep.BatchAddOrRemoveResourceInstanceRequestBody(
            action=action, tags=[ep.ResourceTag(key=k, value=v) for k, v in items])))


def project_tags(tenant, resource_type):
    res = tenant.vpcep.list_query_project_resource_tags(
        ep.ListQueryProjectResourceTagsRequest(resource_type=resource_type))
    return {t.key: sorted(t.values) for t in res.tags}


def query(tenant, resource_type, action="filter", **body):
    return tenant.vpcep.list_resource_instances(ep.ListResourceInstancesRequest(
        resource_type=resource_type, body=ep.QueryResourceInstanceTagsBody(action=action, **body)))


def tv(key, *values):
    return ep.TagValuesList(key=key, values=list(values))


def ids(res):
    return {r.resource_id for r in res.resources}


# ---- tags on resources ---------------------------------------------------------------------


def test_tags_at_creation(alice):
    svc = alice.service(tags=tags(env="prod", team="net"))
    assert tag_dict(svc.tags) == {"env": "prod", "team": "net"}
    endpoint = alice.endpoint(svc.id, tags=tags(env="dev"))
    assert tag_dict(endpoint.tags) == {"env": "dev"}
    assert tag_dict(alice.list_services(id=svc.id).endpoint_services[0].tags) == {"env": "prod", "team": "net"}


@pytest.mark.parametrize("resource_type", [SERVICE, ENDPOINT])
def test_batch_create_and_delete_tags(alice, resource_type):
    svc = alice.service()
    rid = svc.id if resource_type == SERVICE else alice.endpoint(svc.id).id
    get = (lambda: alice.get_service(rid)) if resource_type == SERVICE else (lambda: alice.get_endpoint(rid))
    res = tag_action(alice, resource_type, rid, "create", [("a", "1"), ("b", "2"), ("c", "")])
    assert res.status_code == 204
    assert tag_dict(get().tags) == {"a": "1", "b": "2", "c": ""}
    tag_action(alice, resource_type, rid, "create", [("a", "overwritten")])
    assert tag_dict(get().tags) == {"a": "overwritten", "b": "2", "c": ""}
    tag_action(alice, resource_type, rid, "delete", [("b", None)])
    assert tag_dict(get().tags) == {"a": "overwritten", "c": ""}
    tag_action(alice, resource_type, rid, "delete", [("a", "wrong value")])
    assert tag_dict(get().tags) == {"a": "overwritten", "c": ""}
    tag_action(alice, resource_type, rid, "delete", [("a", "overwritten"), ("c", None)])
    assert tag_dict(get().tags) == {}


def test_twenty_tags_is_the_limit(alice):
    svc = alice.service(tags=[ep.TagList(key=f"k{i}", value="v") for i in range(20)])
    assert len(svc.tags) == 20
    expect_error(lambda: tag_action(alice, SERVICE, svc.id, "create", [("one-more", "v")]), 400, ANY_VPCEP_CODE)
    tag_action(alice, SERVICE, svc.id, "create", [("k0", "replaced")])  # overwriting needs no room
    expect_error(lambda: alice.create_service(tags=[ep.TagList(key=f"k{i}", value="v") for i in range(21)]),
                 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("key, value", [
    ("", "v"),
    ("k" * 129, "v"),
    ("k", "v" * 256),
    (" lead", "v"),
    ("trail ", "v"),
    ("_sys_reserved", "v"),
    ("a<b", "v"),
    ("k", "v>w"),
])
def test_bad_tags_refused(alice, key, value):
    svc = alice.service()
    expect_error(lambda: tag_action(alice, SERVICE, svc.id, "create", [(key, value)]), 400, ANY_VPCEP_CODE)
    expect_error(lambda: alice.create_service(tags=[ep.TagList(key=key, value=value)]), 400, ANY_VPCEP_CODE)
    assert tag_dict(alice.get_service(svc.id).tags) == {}


def test_tag_charset_and_length_edges_accepted(alice):
    svc = alice.service()
    edge = [("k" * 128, "v" * 255), ("标签 _.:=+-@", "值 _.:/=+-@"), ("empty", "")]
    tag_action(alice, SERVICE, svc.id, "create", edge)
    assert tag_dict(alice.get_service(svc.id).tags) == dict(edge)


def test_duplicate_keys_in_one_request_refused(alice):
    svc = alice.service()
    expect_error(lambda: alice.create_service(tags=tags(a="1") + tags(a="2")), 400, ANY_VPCEP_CODE)
    expect_error(lambda: tag_action(alice, SERVICE, svc.id, "create", [("a", "1"), ("a", "2")]),
                 400, ANY_VPCEP_CODE)


def test_create_tag_needs_value(alice):
    svc = alice.service()
    expect_error(lambda: tag_action(alice, SERVICE, svc.id, "create", [("novalue", None)]), 400, ANY_VPCEP_CODE)


@pytest.mark.parametrize("action", ["upsert", "CREATE", ""])
def test_bad_tag_action(alice, action):
    svc = alice.service()
    expect_error(lambda: tag_action(alice, SERVICE, svc.id, action, [("a", "1")]), 400, ANY_VPCEP_CODE)


def test_bad_resource_type_is_3070(alice):
    svc = alice.service()
    expect_error(lambda: tag_action(alice, "vpc", svc.id, "create", [("a", "1")]), 400, BAD_RESOURCE_TYPE)
    expect_error(lambda: project_tags(alice, "endpoint_services"), 400, BAD_RESOURCE_TYPE)
    expect_error(lambda: query(alice, "instance"), 400, BAD_RESOURCE_TYPE)


def test_tags_on_unknown_resource_are_404(alice):
    svc = alice.service()
    expect_error(lambda: tag_action(alice, SERVICE, random_id(), "create", [("a", "1")]), 404)
    # the id of a service is not an endpoint id
    expect_error(lambda: tag_action(alice, ENDPOINT, svc.id, "create", [("a", "1")]), 404)


# ---- project tags and resource queries -------------------------------------------------------------


def test_project_tags(alice, bob):
    alice.service(tags=tags(env="prod", team="net"))
    alice.service(tags=tags(env="dev"))
    svc = alice.service(tags=tags(env="prod"))
    alice.endpoint(svc.id, tags=tags(owner="ops"))
    bob.service(tags=tags(secret="bob"))
    assert project_tags(alice, SERVICE) == {"env": ["dev", "prod"], "team": ["net"]}
    assert project_tags(alice, ENDPOINT) == {"owner": ["ops"]}
    assert project_tags(bob, ENDPOINT) == {}
    doomed = alice.service(tags=tags(doomed="yes"))
    assert "doomed" in project_tags(alice, SERVICE)
    alice.delete_service(doomed.id)
    assert "doomed" not in project_tags(alice, SERVICE)
    assert doomed.id not in ids(query(alice, SERVICE))


@pytest.fixture
def tagged(alice, bob):
    """Four services of alice with different tags (+ one of bob to stay invisible)."""
    made = {
        "prod_net": alice.service(service_name="alpha", tags=tags(env="prod", team="net")).id,
        "prod": alice.service(service_name="beta", tags=tags(env="prod")).id,
        "dev_db": alice.service(service_name="gamma", tags=tags(env="dev", team="db")).id,
        "untagged": alice.service(service_name="alphabet").id,
    }
    bob.service(service_name="alpha", tags=tags(env="prod"))
    return made


def test_resource_instances_filters(alice, tagged):
    t = tagged
    assert ids(query(alice, SERVICE, tags=[tv("env", "prod")])) == {t["prod_net"], t["prod"]}
    assert ids(query(alice, SERVICE, tags=[tv("env", "prod"), tv("team")])) == {t["prod_net"]}
    assert ids(query(alice, SERVICE, tags=[tv("env", "prod", "dev")])) == {t["prod_net"], t["prod"], t["dev_db"]}
    assert ids(query(alice, SERVICE, tags_any=[tv("team", "db"), tv("env", "prod")])) == \
        {t["prod_net"], t["prod"], t["dev_db"]}
    assert ids(query(alice, SERVICE, not_tags=[tv("env", "prod")])) == {t["dev_db"], t["untagged"]}
    assert ids(query(alice, SERVICE, not_tags_any=[tv("team"), tv("env", "dev")])) == {t["prod"], t["untagged"]}
    assert ids(query(alice, SERVICE, without_any_tag=True)) == {t["untagged"]}
    assert ids(query(alice, SERVICE)) == set(t.values())


def test_resource_instances_rows(alice, tagged):
    res = query(alice, SERVICE, tags=[tv("team", "net")])
    assert res.total_count == 1
    row = res.resources[0]
    assert row.resource_id == tagged["prod_net"]
    assert tag_dict(row.tags) == {"env": "prod", "team": "net"}
    assert "alpha" in row.resource_name


def test_resource_instances_matches_name(alice, tagged):
    res = query(alice, SERVICE, matches=[ep.Match(key="resource_name", value="ALPHA")])
    assert ids(res) == {tagged["prod_net"], tagged["untagged"]}
    res = query(alice, SERVICE, matches=[ep.Match(key="resource_name", value="alpha")], tags=[tv("env")])
    assert ids(res) == {tagged["prod_net"]}


def test_resource_instances_count_and_paging(alice, tagged):
    counted = query(alice, SERVICE, action="count", tags=[tv("env")])
    assert counted.total_count == 3 and not counted.resources
    pages = [query(alice, SERVICE, limit="2", offset=str(off)) for off in (0, 2)]
    assert all(p.total_count == 4 for p in pages)
    assert [len(p.resources) for p in pages] == [2, 2]
    assert set().union(*map(ids, pages)) == set(tagged.values())


def test_resource_instances_for_endpoints(alice):
    svc = alice.service()
    tagged_ep = alice.endpoint(svc.id, tags=tags(role="client"))
    plain_ep = alice.endpoint(svc.id)
    assert ids(query(alice, ENDPOINT, tags=[tv("role", "client")])) == {tagged_ep.id}
    assert ids(query(alice, ENDPOINT, without_any_tag=True)) == {plain_ep.id}
    assert query(alice, ENDPOINT, action="count").total_count == 2


@pytest.mark.parametrize("body", [
    {"action": "list"},
    {"action": "filter", "limit": "0"},
    {"action": "filter", "limit": "1001"},
    {"action": "filter", "limit": "ten"},
    {"action": "filter", "offset": "-1"},
    {"action": "filter", "matches": [ep.Match(key="name", value="x")]},
    {"action": "filter", "tags": [tv("")]},
    {"action": "filter", "tags": [tv("k"), tv("k")]},
    {"action": "filter", "tags": [tv("k", "v", "v")]},
    {"action": "filter", "tags": [tv(f"k{i}") for i in range(21)]},
])
def test_resource_instances_bad_body(alice, body):
    action = body.pop("action")
    expect_error(lambda: query(alice, SERVICE, action=action, **body), 400, ANY_VPCEP_CODE)

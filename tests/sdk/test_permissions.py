"""Service whitelists (spec 2.4, 3.4, 6.7): add/remove, batch add/remove,
descriptions, list, validation of entries."""

import pytest
from huaweicloudsdkcore.exceptions.exceptions import ClientRequestException

from conftest import (
    ANY_VPCEP_CODE,
    BAD_LIMIT,
    EMPTY_PERMISSIONS,
    NOT_FOUND,
    batch_add_permissions,
    batch_remove_permissions,
    check_timestamps,
    expect_error,
    random_domain_id,
    random_id,
    raw_json,
    update_permission_desc,
)


def listed(tenant, service_id, **query):
    return {p.permission: p for p in tenant.permissions(service_id, limit=500, **query).permissions}


def test_add_list_remove_permissions(alice):
    svc = alice.service()
    one, two = f"iam:domain::{random_domain_id()}", f"iam:domain::{random_domain_id()}"
    res = alice.permit(svc.id, [one, two, "*"])
    assert res.status_code == 200
    assert sorted(res.permissions) == sorted([one, two, "*"])
    assert res.permission_type in (None, "domainId")
    page = alice.permissions(svc.id)
    assert page.total_count == 3
    for row in page.permissions:
        assert row.id and row.permission in (one, two, "*")
        assert row.permission_type == "domainId"
    for row in raw_json(page)["permissions"]:
        check_timestamps(row, "created_at")
    removed = alice.permit(svc.id, [one, "*"], action="remove")
    assert sorted(removed.permissions) == sorted([one, "*"])
    assert set(listed(alice, svc.id)) == {two}


def test_owner_is_not_listed(alice):
    svc = alice.service()
    assert alice.permissions(svc.id).total_count == 0


def test_adding_twice_keeps_one_row(alice):
    svc = alice.service()
    entry = f"iam:domain::{random_domain_id()}"
    alice.permit(svc.id, [entry])
    try:
        alice.permit(svc.id, [entry])
    except ClientRequestException as e:  # refusing the duplicate is acceptable too
        assert e.status_code == 400, str(e)
    assert alice.permissions(svc.id).total_count == 1


def test_permission_filter_and_paging(alice):
    svc = alice.service()
    ids = [random_domain_id() for _ in range(5)]
    alice.permit(svc.id, [f"iam:domain::{i}" for i in ids])
    fuzzy = alice.permissions(svc.id, permission=ids[2][4:20])
    assert [p.permission for p in fuzzy.permissions] == [f"iam:domain::{ids[2]}"] and fuzzy.total_count == 1
    seen = []
    for offset in (0, 2, 4):
        page = alice.permissions(svc.id, limit=2, offset=offset, sort_dir="asc")
        assert page.total_count == 5
        seen += [p.permission for p in page.permissions]
    assert sorted(seen) == sorted(f"iam:domain::{i}" for i in ids)
    assert len(alice.permissions(svc.id, limit=500).permissions) == 5
    expect_error(lambda: alice.permissions(svc.id, limit=501), 400, BAD_LIMIT)


@pytest.mark.parametrize("entry", [
    "iam:domain::" + "A" * 32,                 # upper-case hex
    "iam:domain::" + "a" * 31,                 # too short
    "iam:domain::" + "a" * 33,                 # too long
    "iam:domain::" + "g" * 32,                 # not hex
    "iam:domain::",
    "domain::" + "a" * 32,
    "iam:user::" + "a" * 32,
    "a" * 32,
    "**",
    "",
])
def test_invalid_permission_refused(alice, entry):
    svc = alice.service()
    expect_error(lambda: alice.permit(svc.id, [entry]), 400, ANY_VPCEP_CODE)
    expect_error(lambda: batch_add_permissions(alice, svc.id, [(entry, "bad")]), 400, ANY_VPCEP_CODE)
    assert alice.permissions(svc.id).total_count == 0


def test_invalid_entry_rejects_the_whole_request(alice):
    svc = alice.service()
    good = f"iam:domain::{random_domain_id()}"
    expect_error(lambda: alice.permit(svc.id, [good, "iam:domain::nothex"]), 400, ANY_VPCEP_CODE)
    assert alice.permissions(svc.id).total_count == 0


def test_empty_permission_list_is_3036(alice):
    svc = alice.service()
    expect_error(lambda: alice.permit(svc.id, []), 400, EMPTY_PERMISSIONS)
    expect_error(lambda: alice.permit(svc.id, [], action="remove"), 400, EMPTY_PERMISSIONS)


@pytest.mark.parametrize("action", ["grant", "ADD", "", "delete"])
def test_bad_permission_action(alice, action):
    svc = alice.service()
    expect_error(lambda: alice.permit(svc.id, ["*"], action=action), 400, ("EndPoint.3035", "EndPoint.0002"))


def test_batch_add_update_remove(alice):
    svc = alice.service()
    one, two = f"iam:domain::{random_domain_id()}", f"iam:domain::{random_domain_id()}"
    res = batch_add_permissions(alice, svc.id, [(one, "partner one"), (two, "partner two")])
    assert res.status_code == 200
    rows = {p.permission: p for p in res.permissions}
    assert set(rows) == {one, two}
    assert rows[one].description == "partner one" and rows[one].id
    assert rows[one].permission_type in (None, "domainId")
    stored = listed(alice, svc.id)
    assert set(stored) == {one, two} and stored[one].id == rows[one].id
    updated = update_permission_desc(alice, svc.id, rows[one].id, "renamed partner")
    assert updated.status_code == 200
    # the response lists the updated row (it may list the others too)
    assert {p.id: p.description for p in updated.permissions}[rows[one].id] == "renamed partner"
    assert listed(alice, svc.id)[one].id == rows[one].id
    raw_rows = {r["id"]: r for r in raw_json(alice.permissions(svc.id))["permissions"]}
    assert raw_rows[rows[one].id].get("description") == "renamed partner"  # spec 3.4: list rows carry it
    removed = batch_remove_permissions(alice, svc.id, [rows[two].id])
    assert removed.status_code == 200
    assert set(listed(alice, svc.id)) == {one}


def test_batch_add_then_connect(alice, bob):
    svc = alice.service()
    batch_add_permissions(alice, svc.id, [(bob.permission, "bob's account")])
    assert bob.endpoint(svc.id).endpoint_service_id == svc.id


def test_permission_description_rules(alice):
    svc = alice.service()
    entry = f"iam:domain::{random_domain_id()}"
    expect_error(lambda: batch_add_permissions(alice, svc.id, [(entry, "<script>")]), 400, ANY_VPCEP_CODE)
    row_id = batch_add_permissions(alice, svc.id, [(entry, "ok")]).permissions[0].id
    expect_error(lambda: update_permission_desc(alice, svc.id, row_id, "a>b"), 400, ANY_VPCEP_CODE)
    expect_error(lambda: update_permission_desc(alice, svc.id, row_id, "x" * 513), 400, ANY_VPCEP_CODE)


def test_unknown_permission_rows(alice):
    svc = alice.service()
    expect_error(lambda: update_permission_desc(alice, svc.id, random_id(), "x"), 404)
    expect_error(lambda: batch_remove_permissions(alice, svc.id, [random_id()]), (400, 404))
    expect_error(lambda: batch_remove_permissions(alice, svc.id, []), 400, ANY_VPCEP_CODE)


def test_permission_row_of_another_service(alice):
    first, second = alice.service(), alice.service()
    row_id = batch_add_permissions(alice, first.id, [(f"iam:domain::{random_domain_id()}", "x")]).permissions[0].id
    expect_error(lambda: update_permission_desc(alice, second.id, row_id, "y"), 404)
    assert alice.permissions(first.id).permissions[0].id == row_id


def test_permissions_of_unknown_service(alice):
    sid = random_id()
    expect_error(lambda: alice.permissions(sid), 404, NOT_FOUND)
    expect_error(lambda: alice.permit(sid, ["*"]), 404, NOT_FOUND)
    expect_error(lambda: batch_add_permissions(alice, sid, [("*", "x")]), 404, NOT_FOUND)
    expect_error(lambda: batch_remove_permissions(alice, sid, [random_id()]), 404, NOT_FOUND)
    expect_error(lambda: update_permission_desc(alice, sid, random_id(), "x"), 404, NOT_FOUND)

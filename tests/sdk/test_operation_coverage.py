"""Every one of the 33 VpcepClient operations of spec 2.1 is exercised by this suite.

Where each operation is covered (besides the cross-tenant probes, which touch all
id-taking operations):

| # | operation                                  | main tests                                   |
|---|--------------------------------------------|----------------------------------------------|
| 1 | create_endpoint_service                    | test_services.py                             |
| 2 | list_endpoint_service                      | test_services.py (filters, paging, sort)     |
| 3 | list_service_details                       | test_services.py                             |
| 4 | update_endpoint_service                    | test_services.py (fields, immutable ports)   |
| 5 | delete_endpoint_service                    | test_services.py, test_connections.py        |
| 6 | update_endpoint_service_name               | test_services.py                             |
| 7 | list_service_describe_details              | test_services.py, test_connections.py        |
| 8 | list_service_public_details                | test_services.py                             |
| 9 | list_service_connections                   | test_connections.py                          |
|10 | accept_or_reject_endpoint                  | test_connections.py                          |
|11 | update_endpoint_connections_desc           | test_connections.py                          |
|12 | list_service_permissions_details           | test_permissions.py                          |
|13 | add_or_remove_service_permissions          | test_permissions.py, test_connections.py     |
|14 | batch_add_endpoint_service_permissions     | test_permissions.py                          |
|15 | batch_remove_endpoint_service_permissions  | test_permissions.py                          |
|16 | update_endpoint_service_permission_desc    | test_permissions.py                          |
|17 | create_endpoint                            | test_endpoints.py, test_quotas.py            |
|18 | list_endpoints                             | test_endpoints.py                            |
|19 | list_endpoint_info_details                 | test_endpoints.py                            |
|20 | update_endpoint_white                      | test_endpoints.py                            |
|21 | delete_endpoint                            | test_endpoints.py                            |
|22 | update_endpoint_policy                     | test_endpoints.py                            |
|23 | delete_endpoint_policy                     | test_endpoints.py                            |
|24 | update_endpoint_routetable                 | test_endpoints.py                            |
|25 | list_quota_details                         | test_quotas.py                               |
|26 | batch_add_or_remove_resource_instance      | test_tags.py                                 |
|27 | list_query_project_resource_tags           | test_tags.py                                 |
|28 | list_resource_instances                    | test_tags.py                                 |
|29 | list_version_details                       | test_versions_v2.py                          |
|30 | list_specified_version_details             | test_versions_v2.py                          |
|31 | add_endpoint_service_server_resource       | test_versions_v2.py                          |
|32 | upgrade_endpoint_service                   | test_versions_v2.py                          |
|33 | upgrade_endpoint                           | test_versions_v2.py                          |

At run time conftest.RecordingClient records the operations actually called; the
terminal summary prints "VpcepClient operations exercised: N/33".
"""

import re
from pathlib import Path

from conftest import VPCEP_OPERATIONS

HERE = Path(__file__).parent


def test_spec_lists_33_operations():
    assert len(VPCEP_OPERATIONS) == 33


def test_every_operation_is_called_somewhere():
    called = set()
    for source in HERE.glob("*.py"):
        called |= set(re.findall(r"\.vpcep\.([a-z_]+)\(", source.read_text()))
    missing = sorted(VPCEP_OPERATIONS - called)
    assert not missing, f"operations never called by the suite: {missing}"


def test_coverage_table_is_complete():
    table = set(re.findall(r"^\|\s*\d+\s*\|\s*([a-z_]+)\s*\|", __doc__, re.M))
    assert table == VPCEP_OPERATIONS

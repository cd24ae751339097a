"""What choosing an endpoint's SNAT address costs inside the create transaction.

Runs the store's own query (read out of crates/store/src/sqlite/endpoints.rs) on a
database made by the store's own migrations, with a provider VPC holding 0 to 4,093
addresses, next to the marker-id query that every create already ran. Prints a
Markdown table of microseconds per query (the best of 5 repeats of 200).

Usage, from the repository root: python3 bench/snat_alloc.py
"""

import glob
import re
import sqlite3
import timeit

source = open("crates/store/src/sqlite/endpoints.rs").read()
body = source[source.index("async fn free_snat_host") :]
literal = re.search(r'query_scalar\(\s*"(.*?)",\s*\)', body, re.S).group(1)
FREE = re.sub(r"\\\n\s*", "", literal)
MARKER = "SELECT COALESCE(MAX(marker_id) + 1, 16777216) FROM endpoints"

db = sqlite3.connect(":memory:")
for script in sorted(glob.glob("crates/store/src/migrations/*.sql")):
    db.executescript(open(script).read())
marker = iter(range(16777216, 1 << 32))


def fill(vpc, holes=()):
    """Endpoints towards `vpc` holding hosts 1 to 4,093, less `holes`."""
    db.executemany(
        "INSERT INTO endpoints (id, project_id, domain_id, service_id, service_name, "
        "service_type, vpc_id, subnet_id, ip, status, marker_id, enable_dns, dns_name, "
        "whitelist, enable_whitelist, routetables, description, conn_description, "
        "policy_statement, policy_document, edition, error, created_at, updated_at, "
        "snat_vpc_id, snat_host) VALUES (?, 'p', 'd', 's', 'n', 'interface', 'c', 's', "
        "'10.0.0.9', 'accepted', ?, 0, '', '[]', 0, '[]', '', '', '', '', 'default', '', "
        "0, 0, ?, ?)",
        [
            (f"{vpc}-{h}", next(marker), vpc, h)
            for h in range(1, 4094)
            if h not in holes
        ],
    )


def micros(sql, *args):
    run = lambda: db.execute(sql, args).fetchone()
    return min(timeit.repeat(run, number=200, repeat=5)) / 200 * 1e6


fill("full")
fill("gap-at-2", {2})
fill("gap-at-4000", {4000})
assert db.execute(FREE, ("full",)).fetchone() == (4094,)
assert db.execute(FREE, ("gap-at-2",)).fetchone() == (2,)
assert db.execute(FREE, ("gap-at-4000",)).fetchone() == (4000,)

print(f"SQLite {sqlite3.sqlite_version}\n")
print("| query | µs |")
print("|---|---:|")
print(f"| marker id, MAX + 1 (every create ran it before) | {micros(MARKER):.1f} |")
for vpc, what in [
    ("none", "no endpoint towards the VPC"),
    ("full", "4,093 held, no gap (the count answers)"),
    ("gap-at-2", "4,092 held, lowest gap at 2 (count, then a short walk)"),
    ("gap-at-4000", "4,092 held, lowest gap at 4,000 (count, then a long walk)"),
]:
    print(f"| free SNAT host: {what} | {micros(FREE, vpc):.1f} |")

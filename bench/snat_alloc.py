"""What choosing an endpoint's SNAT address costs inside the create transaction.

Runs the store's own queries (read out of crates/store/src/sqlite/) on a database made
by the store's own migrations, with a provider VPC holding 0 to 4,093 addresses: version
4's walk to the first gap (kept for migration 2's row work, in sqlite/migrate.rs) next to
the lookup of the held runs that replaced it (sqlite/runs.rs, take_lowest: the first two
runs, which tell the number and the runs it joins; one write follows, or two when it
joins two runs), and the marker-id query that every create runs anyway. The runs are filled by migration 5's own statements. Prints a Markdown
table of microseconds per query (the best of 5 repeats of 200).

Usage, from the repository root: python3 bench/snat_alloc.py
"""

import glob
import re
import sqlite3
import timeit


def literal(path, fn, start):
    """The SQL string literal beginning with `start` in function `fn` of `path`."""
    source = open(path).read()
    body = source[source.index(f"async fn {fn}") :]
    found = re.search(r'"(' + re.escape(start) + r'.*?)"', body, re.S).group(1)
    return re.sub(r"\\\n\s*", "", found)


WALK = literal("crates/store/src/sqlite/migrate.rs", "assign_snat_addresses", "SELECT CASE")
RUNS = "crates/store/src/sqlite/runs.rs"
TAKE = literal(RUNS, "take_lowest", "SELECT lo, hi")
MARKER = "SELECT COALESCE(MAX(marker_id) + 1, 16777216) FROM endpoints"

db = sqlite3.connect(":memory:")
scripts = sorted(glob.glob("crates/store/src/migrations/*.sql"))
for script in scripts:
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
    run = lambda: db.execute(sql, args).fetchall()
    return min(timeit.repeat(run, number=200, repeat=5)) / 200 * 1e6


def lowest_free(vpc):
    """The number take_lowest (sqlite/runs.rs) reads off the first run."""
    run = db.execute(TAKE, ("snat", vpc)).fetchone()
    return run[1] + 1 if run and run[0] <= 1 else 1


fill("full")
fill("gap-at-2", {2})
fill("gap-at-4000", {4000})
# The runs of what the rows hold, by migration 5's own statements.
migration5 = open(next(s for s in scripts if "/0005_" in s)).read()
db.execute("DELETE FROM held_runs")
db.executescript(migration5[migration5.index("INSERT INTO held_runs") :])
for vpc, want in [("none", 1), ("full", 4094), ("gap-at-2", 2), ("gap-at-4000", 4000)]:
    walked = db.execute(WALK, (vpc,)).fetchone()[0]
    assert walked == want and lowest_free(vpc) == want, (vpc, walked, lowest_free(vpc))

print(f"SQLite {sqlite3.sqlite_version}\n")
print(f"marker id, MAX + 1 (every create runs it): {micros(MARKER):.1f} µs\n")
print("| SNAT addresses held towards the provider VPC | walk to the first gap (version 4), µs | first two held runs, µs |")
print("|---|---:|---:|")
for vpc, what in [
    ("none", "none"),
    ("full", "4,093, no gap (the count answers)"),
    ("gap-at-2", "4,092, lowest gap at 2 (count, then a short walk)"),
    ("gap-at-4000", "4,092, lowest gap at 4,000 (count, then a long walk)"),
]:
    print(f"| {what} | {micros(WALK, vpc):.1f} | {micros(TAKE, 'snat', vpc):.1f} |")

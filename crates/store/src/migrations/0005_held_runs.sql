-- Schema version 5: the lowest free address of a subnet, and the lowest free SNAT host
-- number towards a provider VPC, are found by one index lookup instead of by walking
-- the held numbers from the bottom to the first gap. What each pool holds is also kept
-- as runs of consecutive numbers, lo to hi, disjoint and never touching, so that a free
-- number follows every run: the lowest free number is the pool's first one, or the one
-- after its first run. The store changes the runs in the transaction that changes the
-- rows they sum up (sqlite/runs.rs); the unique indexes of those rows stay the backstop.
-- Portable SQL.
CREATE TABLE held_runs (
    -- 'address': the addresses held in a subnet, its reserved ones included (pool = the
    -- subnet's id, numbers = IPv4 addresses as integers, as addresses.ip_num);
    -- 'snat': the SNAT host numbers (1 to 4094) that endpoints hold towards a provider
    -- VPC (pool = the VPC's id, as endpoints.snat_vpc_id and snat_host).
    kind TEXT NOT NULL,
    pool TEXT NOT NULL,
    lo INTEGER NOT NULL,
    hi INTEGER NOT NULL,
    PRIMARY KEY (kind, pool, lo)
);

-- The runs of what is held now. Along a run of consecutive numbers, a number less its
-- rank in the pool is the same, and it differs from run to run.
INSERT INTO held_runs (kind, pool, lo, hi)
SELECT 'address', subnet_id, MIN(ip_num), MAX(ip_num)
FROM (SELECT subnet_id, ip_num,
             ip_num - ROW_NUMBER() OVER (PARTITION BY subnet_id ORDER BY ip_num) AS run
      FROM addresses) AS ranked
GROUP BY subnet_id, run;

INSERT INTO held_runs (kind, pool, lo, hi)
SELECT 'snat', snat_vpc_id, MIN(snat_host), MAX(snat_host)
FROM (SELECT snat_vpc_id, snat_host,
             snat_host - ROW_NUMBER() OVER (PARTITION BY snat_vpc_id ORDER BY snat_host) AS run
      FROM endpoints
      WHERE snat_vpc_id IS NOT NULL AND snat_host IS NOT NULL) AS ranked
GROUP BY snat_vpc_id, run;

-- Schema version 8, portable: deployments across machines. Machines register when their
-- `vpcep gateway --role` reports; hosts are placed on compute machines; every subnet has
-- a VXLAN network identifier (VNI) of its own, from a pool kept as runs (kind 'vni',
-- pool '') like the addresses and SNAT numbers.

CREATE TABLE machines (
    name TEXT PRIMARY KEY,
    -- 'compute' or 'gateway'.
    role TEXT NOT NULL,
    zone TEXT NOT NULL,
    underlay TEXT NOT NULL,
    registered_at BIGINT NOT NULL,
    -- When it last reported (not a change of the desired state).
    seen_at BIGINT NOT NULL,
    -- The revision that last changed its role, zone or underlay.
    rev BIGINT NOT NULL
);
CREATE INDEX machines_rev ON machines (rev);

-- The compute machine a host is placed on (NULL: the one machine).
ALTER TABLE ports ADD COLUMN machine TEXT;

ALTER TABLE subnets ADD COLUMN vni BIGINT NOT NULL DEFAULT 0;
UPDATE subnets SET vni = (SELECT COUNT(*) FROM subnets s2
                          WHERE s2.created_at < subnets.created_at
                             OR (s2.created_at = subnets.created_at AND s2.id <= subnets.id));
INSERT INTO held_runs (kind, pool, lo, hi)
SELECT 'vni', '', 1, COUNT(*) FROM subnets HAVING COUNT(*) > 0;
CREATE UNIQUE INDEX subnets_vni ON subnets (vni);

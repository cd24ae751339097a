-- Schema version 6 of vpcep on PostgreSQL, created whole in an empty database: the
-- schema SQLite reaches with migrations 1 to 6 (src/migrations/0001..0006_*.sql), so the
-- store's SQL runs unchanged on both engines. Same tables, columns in the same order
-- (the columns later SQLite migrations added come last, as SQLite has them), keys,
-- foreign keys, indexes (same names) and meta rows. Every integer is BIGINT (flags stay
-- 0/1), every text TEXT COLLATE "C" (ORDER BY sorts as SQLite's binary collation does).
-- Migration 3's triggers (rev columns, the gone tombstones) are PL/pgSQL here, with the
-- same effect. PostgreSQL databases start at version 6: later versions are one script
-- per engine, never an edit of this one.

CREATE TABLE meta (k TEXT COLLATE "C" PRIMARY KEY, v BIGINT NOT NULL);
INSERT INTO meta (k, v) VALUES ('revision', 0), ('schema', 6), ('gone_floor', 0);

CREATE TABLE accounts (
    domain_id TEXT COLLATE "C" PRIMARY KEY,
    name TEXT COLLATE "C" NOT NULL UNIQUE,
    password_hash TEXT COLLATE "C" NOT NULL,
    service_quota BIGINT NOT NULL,
    endpoint_quota BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE projects (
    id TEXT COLLATE "C" PRIMARY KEY,
    domain_id TEXT COLLATE "C" NOT NULL REFERENCES accounts(domain_id),
    region TEXT COLLATE "C" NOT NULL,
    UNIQUE (domain_id, region)
);
CREATE TABLE credentials (
    access_key TEXT COLLATE "C" PRIMARY KEY,
    domain_id TEXT COLLATE "C" NOT NULL REFERENCES accounts(domain_id),
    secret_sealed TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE TABLE tokens (
    token_hash TEXT COLLATE "C" PRIMARY KEY,
    domain_id TEXT COLLATE "C" NOT NULL REFERENCES accounts(domain_id),
    project_id TEXT COLLATE "C" NOT NULL,
    expires_at BIGINT NOT NULL
);

CREATE TABLE vpcs (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    name TEXT COLLATE "C" NOT NULL,
    cidr TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    -- Small stable number (lowest free from 1): the VPC's 127.N.0.0/16 in loopback mode.
    seq BIGINT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX vpcs_project ON vpcs (project_id);
CREATE INDEX vpcs_rev ON vpcs (rev);

CREATE TABLE subnets (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    vpc_id TEXT COLLATE "C" NOT NULL REFERENCES vpcs(id),
    name TEXT COLLATE "C" NOT NULL,
    cidr TEXT COLLATE "C" NOT NULL,
    gateway_ip TEXT COLLATE "C" NOT NULL,
    neutron_subnet_id TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX subnets_vpc ON subnets (vpc_id);
CREATE INDEX subnets_rev ON subnets (rev);

-- Every address taken in a subnet: NIC ports, endpoint IPs, and the reserved ones
-- (network, broadcast, gateway, router, resolver; owner = the subnet itself).
CREATE TABLE addresses (
    subnet_id TEXT COLLATE "C" NOT NULL REFERENCES subnets(id),
    ip_num BIGINT NOT NULL,
    ip TEXT COLLATE "C" NOT NULL,
    owner_id TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (subnet_id, ip_num)
);
CREATE INDEX addresses_owner ON addresses (owner_id);

CREATE TABLE ports (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    vpc_id TEXT COLLATE "C" NOT NULL,
    subnet_id TEXT COLLATE "C" NOT NULL REFERENCES subnets(id),
    name TEXT COLLATE "C" NOT NULL,
    ip TEXT COLLATE "C" NOT NULL,
    mac TEXT COLLATE "C" NOT NULL,
    device_owner TEXT COLLATE "C" NOT NULL,
    device_id TEXT COLLATE "C" NOT NULL,
    -- 1 when the data plane stands a host (namespace) up for this port.
    is_host BIGINT NOT NULL DEFAULT 0,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX ports_project ON ports (project_id);
CREATE INDEX ports_rev ON ports (rev);

CREATE TABLE route_tables (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    vpc_id TEXT COLLATE "C" NOT NULL REFERENCES vpcs(id),
    name TEXT COLLATE "C" NOT NULL,
    is_default BIGINT NOT NULL,
    routes TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX route_tables_rev ON route_tables (rev);

CREATE TABLE services (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    domain_id TEXT COLLATE "C" NOT NULL,
    short_name TEXT COLLATE "C" NOT NULL,
    service_name TEXT COLLATE "C" NOT NULL,
    vpc_id TEXT COLLATE "C" NOT NULL,
    port_id TEXT COLLATE "C" NOT NULL,
    backend_ip TEXT COLLATE "C" NOT NULL,
    server_type TEXT COLLATE "C" NOT NULL,
    service_type TEXT COLLATE "C" NOT NULL,
    approval_enabled BIGINT NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    tcp_proxy TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    is_public BIGINT NOT NULL,
    cidr TEXT COLLATE "C" NOT NULL,
    ports TEXT COLLATE "C" NOT NULL,
    editions TEXT COLLATE "C" NOT NULL,
    server_resources TEXT COLLATE "C" NOT NULL,
    error TEXT COLLATE "C" NOT NULL,
    -- Concurrent sessions each endpoint of the service may carry.
    connection_limit BIGINT NOT NULL DEFAULT 3000,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX services_project ON services (project_id);
CREATE INDEX services_rev ON services (rev);
CREATE INDEX services_status ON services (status);

CREATE TABLE permissions (
    id TEXT COLLATE "C" PRIMARY KEY,
    service_id TEXT COLLATE "C" NOT NULL,
    permission TEXT COLLATE "C" NOT NULL,
    permission_type TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (service_id, permission)
);

CREATE TABLE endpoints (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    domain_id TEXT COLLATE "C" NOT NULL,
    service_id TEXT COLLATE "C" NOT NULL,
    service_name TEXT COLLATE "C" NOT NULL,
    service_type TEXT COLLATE "C" NOT NULL,
    vpc_id TEXT COLLATE "C" NOT NULL,
    subnet_id TEXT COLLATE "C" NOT NULL,
    ip TEXT COLLATE "C" NOT NULL,
    status TEXT COLLATE "C" NOT NULL,
    marker_id BIGINT NOT NULL UNIQUE,
    enable_dns BIGINT NOT NULL,
    dns_name TEXT COLLATE "C" NOT NULL,
    whitelist TEXT COLLATE "C" NOT NULL,
    enable_whitelist BIGINT NOT NULL,
    routetables TEXT COLLATE "C" NOT NULL,
    description TEXT COLLATE "C" NOT NULL,
    conn_description TEXT COLLATE "C" NOT NULL,
    policy_statement TEXT COLLATE "C" NOT NULL,
    policy_document TEXT COLLATE "C" NOT NULL,
    edition TEXT COLLATE "C" NOT NULL,
    error TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    -- Version 2: the endpoint's source (SNAT) address towards a tenant service's VPC,
    -- 198.19.128.0 + snat_host (1 to 4094); both NULL for an operator service's.
    snat_vpc_id TEXT COLLATE "C",
    snat_host BIGINT,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX endpoints_project ON endpoints (project_id);
-- Two endpoints towards one VPC never share an address, whatever the writer.
CREATE UNIQUE INDEX endpoints_snat ON endpoints (snat_vpc_id, snat_host);
CREATE INDEX endpoints_rev ON endpoints (rev);
CREATE INDEX endpoints_status ON endpoints (status);
CREATE INDEX endpoints_vpc ON endpoints (vpc_id);
-- The DNS v2 API's published private names (sqlite/dns.rs states the same terms).
CREATE INDEX endpoints_named ON endpoints (project_id, vpc_id, created_at, id)
    WHERE service_type = 'interface' AND enable_dns = 1 AND status = 'accepted' AND dns_name != '';
-- A service's connection count, in one index range.
CREATE INDEX endpoints_service_status ON endpoints (service_id, status);

CREATE TABLE tags (
    resource_type TEXT COLLATE "C" NOT NULL,
    resource_id TEXT COLLATE "C" NOT NULL,
    project_id TEXT COLLATE "C" NOT NULL,
    k TEXT COLLATE "C" NOT NULL,
    v TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (resource_type, resource_id, k)
);
CREATE INDEX tags_project ON tags (project_id, resource_type);

-- Data centres attached to a VPC (the user guide's VPN / Direct Connect scenario): a
-- range of their own, routed to and from the VPC.
CREATE TABLE idcs (
    id TEXT COLLATE "C" PRIMARY KEY,
    project_id TEXT COLLATE "C" NOT NULL,
    vpc_id TEXT COLLATE "C" NOT NULL REFERENCES vpcs(id),
    name TEXT COLLATE "C" NOT NULL,
    cidr TEXT COLLATE "C" NOT NULL,
    ip TEXT COLLATE "C" NOT NULL,
    created_at BIGINT NOT NULL,
    rev BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX idcs_vpc ON idcs (vpc_id);
CREATE INDEX idcs_rev ON idcs (rev);

-- Every deleted row the data plane's desired state is built from leaves its id, and the
-- VPC it was part of, here (version 3).
CREATE TABLE gone (
    kind TEXT COLLATE "C" NOT NULL,
    id TEXT COLLATE "C" NOT NULL,
    -- The VPC a deleted subnet, port, route table or data centre belonged to.
    parent TEXT COLLATE "C" NOT NULL,
    rev BIGINT NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX gone_rev ON gone (kind, rev);

-- What each pool of numbers holds, as runs lo to hi, disjoint and never touching
-- (version 5; sqlite/runs.rs keeps them). kind 'address': pool = a subnet's id;
-- kind 'snat': pool = a provider VPC's id.
CREATE TABLE held_runs (
    kind TEXT COLLATE "C" NOT NULL,
    pool TEXT COLLATE "C" NOT NULL,
    lo BIGINT NOT NULL,
    hi BIGINT NOT NULL,
    PRIMARY KEY (kind, pool, lo)
);

-- Revisions (version 3): every row of vpcs, subnets, ports, route_tables, idcs, services
-- and endpoints carries the revision that last wrote it, which is the one after meta's
-- current revision (the store advances meta's revision last, in the same transaction).
-- An insert takes it and clears the row's tombstone; an update takes it unless the
-- statement set rev itself; a delete leaves (or renews) a tombstone in gone. The trigger
-- argument names the column holding the row's VPC, '' for none.
CREATE FUNCTION vpcep_row_written() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.rev := (SELECT v + 1 FROM meta WHERE k = 'revision');
    DELETE FROM gone WHERE kind = TG_TABLE_NAME::text AND id = NEW.id;
    RETURN NEW;
END
$$;

CREATE FUNCTION vpcep_row_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.rev = OLD.rev THEN
        NEW.rev := (SELECT v + 1 FROM meta WHERE k = 'revision');
    END IF;
    RETURN NEW;
END
$$;

CREATE FUNCTION vpcep_row_gone() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parent_id TEXT COLLATE "C" := '';
BEGIN
    IF TG_NARGS > 0 AND TG_ARGV[0] <> '' THEN
        parent_id := to_jsonb(OLD) ->> TG_ARGV[0];
    END IF;
    INSERT INTO gone (kind, id, parent, rev)
    VALUES (TG_TABLE_NAME::text, OLD.id, parent_id, (SELECT v + 1 FROM meta WHERE k = 'revision'))
    ON CONFLICT (kind, id) DO UPDATE SET parent = EXCLUDED.parent, rev = EXCLUDED.rev;
    RETURN NULL;
END
$$;

-- Every table the desired state is built from gets the three, named as SQLite's are:
-- {table}_written, {table}_changed, {table}_gone (with the column naming the VPC a
-- deleted row belonged to, or none).
DO $$
DECLARE
    t RECORD;
BEGIN
    FOR t IN SELECT * FROM (VALUES ('vpcs', ''), ('subnets', 'vpc_id'), ('ports', 'vpc_id'),
                                   ('route_tables', 'vpc_id'), ('idcs', 'vpc_id'),
                                   ('services', ''), ('endpoints', '')) AS r(name, parent)
    LOOP
        EXECUTE format('CREATE TRIGGER %I BEFORE INSERT ON %I FOR EACH ROW EXECUTE FUNCTION vpcep_row_written()',
                       t.name || '_written', t.name);
        EXECUTE format('CREATE TRIGGER %I BEFORE UPDATE ON %I FOR EACH ROW EXECUTE FUNCTION vpcep_row_changed()',
                       t.name || '_changed', t.name);
        EXECUTE format('CREATE TRIGGER %I AFTER DELETE ON %I FOR EACH ROW EXECUTE FUNCTION vpcep_row_gone(%L)',
                       t.name || '_gone', t.name, t.parent);
    END LOOP;
END
$$;

-- vpcep schema, version 1. Portable SQL: TEXT ids, INTEGER times (unix microseconds),
-- JSON kept in TEXT columns. Applied once by SqliteStore::open.
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v INTEGER NOT NULL);
INSERT OR IGNORE INTO meta (k, v) VALUES ('revision', 0), ('schema', 1);

CREATE TABLE IF NOT EXISTS accounts (
    domain_id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    service_quota INTEGER NOT NULL,
    endpoint_quota INTEGER NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS projects (
    id TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES accounts(domain_id),
    region TEXT NOT NULL,
    UNIQUE (domain_id, region)
);
CREATE TABLE IF NOT EXISTS credentials (
    access_key TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES accounts(domain_id),
    secret_sealed TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY,
    domain_id TEXT NOT NULL REFERENCES accounts(domain_id),
    project_id TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS vpcs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    description TEXT NOT NULL,
    -- Small stable number (lowest free from 1): the VPC's 127.N.0.0/16 in loopback mode.
    seq INTEGER NOT NULL UNIQUE,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS vpcs_project ON vpcs (project_id);
CREATE TABLE IF NOT EXISTS subnets (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    gateway_ip TEXT NOT NULL,
    neutron_subnet_id TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS subnets_vpc ON subnets (vpc_id);
-- Every address taken in a subnet: NIC ports, endpoint IPs, and the reserved ones
-- (network, broadcast, gateway, router, resolver; owner = the subnet itself).
CREATE TABLE IF NOT EXISTS addresses (
    subnet_id TEXT NOT NULL REFERENCES subnets(id),
    ip_num INTEGER NOT NULL,
    ip TEXT NOT NULL,
    owner_id TEXT NOT NULL,
    PRIMARY KEY (subnet_id, ip_num)
);
CREATE INDEX IF NOT EXISTS addresses_owner ON addresses (owner_id);
CREATE TABLE IF NOT EXISTS ports (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    vpc_id TEXT NOT NULL,
    subnet_id TEXT NOT NULL REFERENCES subnets(id),
    name TEXT NOT NULL,
    ip TEXT NOT NULL,
    mac TEXT NOT NULL,
    device_owner TEXT NOT NULL,
    device_id TEXT NOT NULL,
    -- 1 when the data plane stands a host (namespace) up for this port.
    is_host INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS ports_project ON ports (project_id);
CREATE TABLE IF NOT EXISTS route_tables (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    name TEXT NOT NULL,
    is_default INTEGER NOT NULL,
    routes TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS services (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    short_name TEXT NOT NULL,
    service_name TEXT NOT NULL,
    vpc_id TEXT NOT NULL,
    port_id TEXT NOT NULL,
    backend_ip TEXT NOT NULL,
    server_type TEXT NOT NULL,
    service_type TEXT NOT NULL,
    approval_enabled INTEGER NOT NULL,
    status TEXT NOT NULL,
    tcp_proxy TEXT NOT NULL,
    description TEXT NOT NULL,
    is_public INTEGER NOT NULL,
    cidr TEXT NOT NULL,
    ports TEXT NOT NULL,
    editions TEXT NOT NULL,
    server_resources TEXT NOT NULL,
    error TEXT NOT NULL,
    -- Concurrent sessions each endpoint of the service may carry.
    connection_limit INTEGER NOT NULL DEFAULT 3000,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS services_project ON services (project_id);
CREATE TABLE IF NOT EXISTS permissions (
    id TEXT PRIMARY KEY,
    service_id TEXT NOT NULL,
    permission TEXT NOT NULL,
    permission_type TEXT NOT NULL,
    description TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    UNIQUE (service_id, permission)
);
CREATE TABLE IF NOT EXISTS endpoints (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    domain_id TEXT NOT NULL,
    service_id TEXT NOT NULL,
    service_name TEXT NOT NULL,
    service_type TEXT NOT NULL,
    vpc_id TEXT NOT NULL,
    subnet_id TEXT NOT NULL,
    ip TEXT NOT NULL,
    status TEXT NOT NULL,
    marker_id INTEGER NOT NULL UNIQUE,
    enable_dns INTEGER NOT NULL,
    dns_name TEXT NOT NULL,
    whitelist TEXT NOT NULL,
    enable_whitelist INTEGER NOT NULL,
    routetables TEXT NOT NULL,
    description TEXT NOT NULL,
    conn_description TEXT NOT NULL,
    policy_statement TEXT NOT NULL,
    policy_document TEXT NOT NULL,
    edition TEXT NOT NULL,
    error TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS endpoints_project ON endpoints (project_id);
CREATE INDEX IF NOT EXISTS endpoints_service ON endpoints (service_id);
-- The published private names (sqlite/dns.rs states the same terms).
CREATE INDEX IF NOT EXISTS endpoints_named ON endpoints (project_id, vpc_id, created_at, id) WHERE service_type = 'interface' AND enable_dns = 1 AND status = 'accepted' AND dns_name != '';
CREATE TABLE IF NOT EXISTS tags (
    resource_type TEXT NOT NULL,
    resource_id TEXT NOT NULL,
    project_id TEXT NOT NULL,
    k TEXT NOT NULL,
    v TEXT NOT NULL,
    PRIMARY KEY (resource_type, resource_id, k)
);
CREATE INDEX IF NOT EXISTS tags_project ON tags (project_id, resource_type);

-- Data centres attached to a VPC (the user guide's VPN / Direct Connect scenario): a
-- range of their own, routed to and from the VPC.
CREATE TABLE IF NOT EXISTS idcs (
    id TEXT PRIMARY KEY,
    project_id TEXT NOT NULL,
    vpc_id TEXT NOT NULL REFERENCES vpcs(id),
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    ip TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS idcs_vpc ON idcs (vpc_id);

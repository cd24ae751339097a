-- Schema version 7, portable: the processes that serve one database and what gateway
-- nodes report, so that replicas of a PostgreSQL database share them (the one SQLite
-- server keeps a row for itself too).

-- Every server process, as it last said (`seen_at`, every few seconds); the one that
-- holds the controller lease has `leader_since` > 0.
CREATE TABLE replicas (
    name TEXT PRIMARY KEY,
    address TEXT NOT NULL,
    version TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at BIGINT NOT NULL,
    leader_since BIGINT NOT NULL DEFAULT 0
);

-- What each remote gateway node runs, whichever replica it reported to: the revision it
-- applied and when it said so, and per endpoint `error` NULL when up.
CREATE TABLE gateway_nodes (
    node TEXT PRIMARY KEY,
    revision BIGINT NOT NULL,
    reported_at BIGINT NOT NULL
);
CREATE TABLE gateway_endpoints (
    node TEXT NOT NULL REFERENCES gateway_nodes (node) ON DELETE CASCADE,
    endpoint_id TEXT NOT NULL,
    error TEXT,
    PRIMARY KEY (node, endpoint_id)
);
CREATE INDEX gateway_endpoints_endpoint ON gateway_endpoints (endpoint_id);

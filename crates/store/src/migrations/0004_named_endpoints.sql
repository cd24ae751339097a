-- Schema version 4: the DNS v2 API reads a project's published private names through
-- an index of just those (sqlite/dns.rs states the same terms). Portable SQL.
CREATE INDEX endpoints_named ON endpoints (project_id, vpc_id, created_at, id) WHERE service_type = 'interface' AND enable_dns = 1 AND status = 'accepted' AND dns_name != '';

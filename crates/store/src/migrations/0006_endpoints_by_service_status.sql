-- Schema version 6: a service's connection count (its endpoints being created or
-- accepted, read with every service) is counted in one index range instead of row by
-- row; the index it replaces was its prefix. Portable SQL.
CREATE INDEX endpoints_service_status ON endpoints (service_id, status);
DROP INDEX endpoints_service;

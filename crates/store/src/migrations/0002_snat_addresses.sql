-- Schema version 2: every endpoint of a tenant service holds a source (SNAT) address of
-- its own towards the service's VPC, 198.19.128.0 + snat_host (1 to 4094), from its
-- creation until its row is deleted. Operator services have no VPC: their endpoints hold
-- none (both columns NULL). Portable SQL.
ALTER TABLE endpoints ADD COLUMN snat_vpc_id TEXT;
ALTER TABLE endpoints ADD COLUMN snat_host INTEGER;

UPDATE endpoints SET snat_vpc_id = (
    SELECT s.vpc_id FROM services s WHERE s.id = endpoints.service_id AND s.is_public = 0
);
-- Version 1 derived the address from the marker id (marker ids start at 16777216). Each
-- endpoint keeps that address, so the kernel path's live sessions survive the upgrade...
UPDATE endpoints SET snat_host = (marker_id - 16777216) % 4094 + 1
WHERE snat_vpc_id IS NOT NULL;
-- ...unless another endpoint towards the same VPC has it too: then only the one that
-- comes first keeps it (an accepted endpoint before one that forwards nothing, then the
-- lower marker id), and the others are given free addresses after this script.
UPDATE endpoints SET snat_host = NULL
WHERE snat_host IS NOT NULL AND EXISTS (
    SELECT 1 FROM endpoints f
    WHERE f.snat_vpc_id = endpoints.snat_vpc_id AND f.snat_host = endpoints.snat_host
      AND f.id <> endpoints.id
      AND (CASE WHEN f.status = 'accepted' THEN 0 ELSE 1 END,
           f.marker_id)
          < (CASE WHEN endpoints.status = 'accepted' THEN 0 ELSE 1 END,
             endpoints.marker_id)
);

-- Two endpoints towards one VPC never share an address, whatever the writer.
CREATE UNIQUE INDEX endpoints_snat ON endpoints (snat_vpc_id, snat_host);

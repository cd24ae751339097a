-- Schema version 3: the data plane's desired state is read as what changed since a
-- revision (`Store::changes_since`) instead of whole after every commit. Every row it is
-- built from carries the revision that last wrote it (`rev`), and every such row that is
-- deleted leaves its id, and the VPC it was part of, in `gone`. Triggers keep both,
-- whoever writes (the server, `vpcep admin`): a write transaction commits as the
-- revision after the current one (the store advances `meta`'s revision last, inside the
-- same transaction). Portable SQL.

ALTER TABLE vpcs ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subnets ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE ports ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE route_tables ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE idcs ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE services ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;
ALTER TABLE endpoints ADD COLUMN rev INTEGER NOT NULL DEFAULT 0;

CREATE INDEX vpcs_rev ON vpcs (rev);
CREATE INDEX subnets_rev ON subnets (rev);
CREATE INDEX ports_rev ON ports (rev);
CREATE INDEX route_tables_rev ON route_tables (rev);
CREATE INDEX idcs_rev ON idcs (rev);
CREATE INDEX services_rev ON services (rev);
CREATE INDEX endpoints_rev ON endpoints (rev);

CREATE TABLE gone (
    kind TEXT NOT NULL,
    id TEXT NOT NULL,
    -- The VPC a deleted subnet, port, route table or data centre belonged to.
    parent TEXT NOT NULL,
    rev INTEGER NOT NULL,
    PRIMARY KEY (kind, id)
);
CREATE INDEX gone_rev ON gone (kind, rev);
-- Tombstones older than this revision were pruned: a reader further behind reads whole.
INSERT INTO meta (k, v) VALUES ('gone_floor', 0);

-- What the controller looks for after every commit, and the endpoints of a VPC.
CREATE INDEX endpoints_status ON endpoints (status);
CREATE INDEX services_status ON services (status);
CREATE INDEX endpoints_vpc ON endpoints (vpc_id);

CREATE TRIGGER vpcs_written AFTER INSERT ON vpcs BEGIN
    UPDATE vpcs SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'vpcs' AND id = NEW.id;
END;
CREATE TRIGGER vpcs_changed AFTER UPDATE ON vpcs WHEN NEW.rev = OLD.rev BEGIN
    UPDATE vpcs SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER vpcs_gone AFTER DELETE ON vpcs BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('vpcs', OLD.id, '', (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;
CREATE TRIGGER subnets_written AFTER INSERT ON subnets BEGIN
    UPDATE subnets SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'subnets' AND id = NEW.id;
END;
CREATE TRIGGER subnets_changed AFTER UPDATE ON subnets WHEN NEW.rev = OLD.rev BEGIN
    UPDATE subnets SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER subnets_gone AFTER DELETE ON subnets BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('subnets', OLD.id, OLD.vpc_id, (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;
CREATE TRIGGER ports_written AFTER INSERT ON ports BEGIN
    UPDATE ports SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'ports' AND id = NEW.id;
END;
CREATE TRIGGER ports_changed AFTER UPDATE ON ports WHEN NEW.rev = OLD.rev BEGIN
    UPDATE ports SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER ports_gone AFTER DELETE ON ports BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('ports', OLD.id, OLD.vpc_id, (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;
CREATE TRIGGER route_tables_written AFTER INSERT ON route_tables BEGIN
    UPDATE route_tables SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'route_tables' AND id = NEW.id;
END;
CREATE TRIGGER route_tables_changed AFTER UPDATE ON route_tables WHEN NEW.rev = OLD.rev BEGIN
    UPDATE route_tables SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER route_tables_gone AFTER DELETE ON route_tables BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('route_tables', OLD.id, OLD.vpc_id, (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;
CREATE TRIGGER idcs_written AFTER INSERT ON idcs BEGIN
    UPDATE idcs SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'idcs' AND id = NEW.id;
END;
CREATE TRIGGER idcs_changed AFTER UPDATE ON idcs WHEN NEW.rev = OLD.rev BEGIN
    UPDATE idcs SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER idcs_gone AFTER DELETE ON idcs BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('idcs', OLD.id, OLD.vpc_id, (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;
CREATE TRIGGER services_written AFTER INSERT ON services BEGIN
    UPDATE services SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'services' AND id = NEW.id;
END;
CREATE TRIGGER services_changed AFTER UPDATE ON services WHEN NEW.rev = OLD.rev BEGIN
    UPDATE services SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER services_gone AFTER DELETE ON services BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('services', OLD.id, '', (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;
CREATE TRIGGER endpoints_written AFTER INSERT ON endpoints BEGIN
    UPDATE endpoints SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
    DELETE FROM gone WHERE kind = 'endpoints' AND id = NEW.id;
END;
CREATE TRIGGER endpoints_changed AFTER UPDATE ON endpoints WHEN NEW.rev = OLD.rev BEGIN
    UPDATE endpoints SET rev = (SELECT v + 1 FROM meta WHERE k = 'revision') WHERE id = NEW.id;
END;
CREATE TRIGGER endpoints_gone AFTER DELETE ON endpoints BEGIN
    INSERT OR REPLACE INTO gone (kind, id, parent, rev)
    VALUES ('endpoints', OLD.id, '', (SELECT v + 1 FROM meta WHERE k = 'revision'));
END;

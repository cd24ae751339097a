-- Schema version 9, portable: the gateway pair is kept, not recomputed. The control
-- plane's controller gives two gateway machines a slot each (0 leads at start) and
-- declares machines down when they stop reporting; a slot whose machine is down passes
-- to a spare gateway machine, while the other keeps its own, so the survivor of a pair
-- never restarts its routers' keepers.
ALTER TABLE machines ADD COLUMN slot BIGINT;
ALTER TABLE machines ADD COLUMN down BIGINT NOT NULL DEFAULT 0;
CREATE UNIQUE INDEX machines_slot ON machines (slot);

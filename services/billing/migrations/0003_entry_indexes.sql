-- Entries by their movement: the deferred balance check of every new entry
-- (0001's check_movement_balanced) and statements read a movement's entries.
-- Without it each check scanned the whole ledger, so a reservation grew
-- slower with every movement ever made.
CREATE INDEX entries_by_movement ON entries (movement_id);
-- A hold's movements (HOLD, then CAPTURE or RELEASE), for audits of a hold.
CREATE INDEX movements_by_hold ON movements (hold_id) WHERE hold_id IS NOT NULL;

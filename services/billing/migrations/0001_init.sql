-- A double-entry ledger. A movement is a balanced set of entries (they sum
-- to zero) with a reason and a reference; balances are sums of entries.
-- Accounts are named: `users/<id>/available` (spendable), `users/<id>/held` (reserved
-- by jobs), and system accounts such as `system/payments`.
CREATE TABLE movements (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    reason smallint NOT NULL,
    reference text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entries (
    id bigserial PRIMARY KEY,
    movement_id uuid NOT NULL REFERENCES movements (id),
    account text NOT NULL,
    amount bigint NOT NULL CHECK (amount <> 0),
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX entries_by_account ON entries (account, id);

-- The ledger is append-only: history is corrected by new movements, never edited.
CREATE FUNCTION refuse_ledger_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER entries_append_only BEFORE UPDATE OR DELETE ON entries
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();
CREATE TRIGGER movements_append_only BEFORE UPDATE OR DELETE ON movements
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();

-- Every movement balances, checked when its transaction commits.
CREATE FUNCTION check_movement_balanced() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF (SELECT sum(amount) FROM entries WHERE movement_id = NEW.movement_id) <> 0 THEN
        RAISE EXCEPTION 'movement % does not balance', NEW.movement_id;
    END IF;
    RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER entries_balanced AFTER INSERT ON entries
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION check_movement_balanced();

-- Accounts, holds, checkouts and webhook deliveries around the ledger of 0001.
--
-- Numbers stored as smallint are the API's enum values (billing.proto):
-- movements.reason is a TransactionReason, holds.state a HoldState,
-- holds.kind a JobKind, checkouts.state a CheckoutState.

-- What a statement shows for a movement. Nothing wrote movements before this
-- migration, but user_id stays nullable so that an older row could not stop it.
ALTER TABLE movements
    ADD COLUMN user_id uuid,                 -- whose credits moved
    ADD COLUMN hold_id uuid,                 -- for HOLD, CAPTURE and RELEASE
    ADD COLUMN description text NOT NULL DEFAULT '',
    ADD COLUMN request_id text,              -- GrantCredits' idempotency key
    ADD COLUMN request_hash bytea;           -- ... and the request it was first used for
CREATE INDEX movements_by_user ON movements (user_id, created_at DESC, id DESC);
CREATE UNIQUE INDEX movements_by_request_id ON movements (request_id) WHERE request_id IS NOT NULL;

-- One row per user: the sums of the entries of `users/<id>/available` and
-- `users/<id>/held`, kept by the trigger below from every entry inserted, so
-- reading a balance is one row. Every change to a user's credits locks this
-- row first (SELECT ... FOR UPDATE): that serializes them, and a check under
-- the lock cannot be overtaken. The CHECKs make an overdraft impossible even
-- for a bug that skips the check.
CREATE TABLE accounts (
    user_id uuid PRIMARY KEY,
    available bigint NOT NULL DEFAULT 0 CHECK (available >= 0),
    held bigint NOT NULL DEFAULT 0 CHECK (held >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION post_entry_to_account() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    parts text[] := string_to_array(NEW.account, '/');
BEGIN
    IF parts[1] <> 'users' THEN
        RETURN NULL;
    END IF;
    UPDATE accounts SET
        available = available + CASE WHEN parts[3] = 'available' THEN NEW.amount ELSE 0 END,
        held = held + CASE WHEN parts[3] = 'held' THEN NEW.amount ELSE 0 END,
        updated_at = NEW.created_at
    WHERE user_id = parts[2]::uuid;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'entry on % but that user has no account', NEW.account;
    END IF;
    RETURN NULL;
END $$;
CREATE TRIGGER entries_post_to_accounts AFTER INSERT ON entries
    FOR EACH ROW EXECUTE FUNCTION post_entry_to_account();

-- Balances change only by posting entries (the trigger above runs at depth 2).
CREATE FUNCTION refuse_direct_balance_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF pg_trigger_depth() < 2 THEN
        RAISE EXCEPTION 'balances change only through ledger entries: % on accounts refused', TG_OP;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER accounts_from_entries_only BEFORE UPDATE ON accounts
    FOR EACH ROW EXECUTE FUNCTION refuse_direct_balance_change();

-- Credits reserved for a job, one per reference (the idempotency key).
CREATE TABLE holds (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES accounts (user_id),
    reference text NOT NULL UNIQUE,
    credits bigint NOT NULL CHECK (credits > 0),
    captured_credits bigint NOT NULL DEFAULT 0 CHECK (captured_credits BETWEEN 0 AND credits),
    state smallint NOT NULL,
    -- The usage it was priced from (a repeat must ask for the same).
    kind smallint NOT NULL,
    duration_ns bigint NOT NULL,
    target_language_count integer NOT NULL,
    description text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- A hold settles once: from HELD (1) to CAPTURED (2) or RELEASED (3), never
-- back and never again, whatever the code above it does.
CREATE FUNCTION settle_hold_once() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF OLD.state <> 1 OR NEW.state NOT IN (2, 3) THEN
        RAISE EXCEPTION 'hold % is already settled (state %): change to state % refused', OLD.id, OLD.state, NEW.state;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER holds_settle_once BEFORE UPDATE ON holds
    FOR EACH ROW EXECUTE FUNCTION settle_hold_once();
CREATE TRIGGER holds_never_deleted BEFORE DELETE ON holds
    FOR EACH ROW EXECUTE FUNCTION refuse_ledger_change();

-- A purchase of a credit pack through the payments provider. The pack's
-- credits and price are copied: a later change of the packs on sale does not
-- change what this checkout buys.
CREATE TABLE checkouts (
    id uuid PRIMARY KEY,
    user_id uuid NOT NULL,
    credit_pack text NOT NULL,
    credits bigint NOT NULL CHECK (credits > 0),
    price_minor_units bigint NOT NULL,
    currency text NOT NULL,
    state smallint NOT NULL,
    url text NOT NULL,
    success_url text NOT NULL,
    cancel_url text NOT NULL,
    provider_checkout_id text NOT NULL UNIQUE,
    provider_order_id text UNIQUE,           -- set when the order is paid: one payment per checkout
    refunded_credits bigint NOT NULL DEFAULT 0,  -- credits owed back by refunds so far
    request_id text,
    request_hash bytea,
    created_at timestamptz NOT NULL DEFAULT now(),
    expire_time timestamptz NOT NULL,
    complete_time timestamptz,
    UNIQUE (user_id, request_id)
);

-- Every webhook applied, by its webhook-id: a redelivery finds its row and
-- changes nothing. Written in the transaction that applies the event.
CREATE TABLE webhook_events (
    id text PRIMARY KEY,
    type text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);

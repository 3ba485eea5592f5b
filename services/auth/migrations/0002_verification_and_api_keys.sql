-- Email verification tokens and API keys. Only hashes of either are stored.

-- A verification token is sent by email, works once, and expires.
CREATE TABLE email_verifications (
    token_hash bytea PRIMARY KEY,
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL,
    used_at timestamptz
);
CREATE INDEX email_verifications_by_user ON email_verifications (user_id);

-- A key is `oct_<prefix>_<secret>`; secret_hash is the SHA-256 of all of it. Deleting a
-- key deletes its row: from then on the hash matches nothing.
CREATE TABLE api_keys (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    user_id uuid NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    display_name text NOT NULL,
    prefix text NOT NULL,
    secret_hash bytea NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now(),
    last_used_at timestamptz
);
-- ListApiKeys: a user's keys, newest first.
CREATE INDEX api_keys_by_user ON api_keys (user_id, created_at DESC, id DESC);

-- Jobs: the columns the service filters and sorts on, plus the Job message
-- as the client asked for it (options and all), serialized protobuf.
CREATE TABLE jobs (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id uuid NOT NULL,
    kind smallint NOT NULL,
    state smallint NOT NULL,
    spec bytea NOT NULL,
    request_id text,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, request_id)
);
CREATE INDEX jobs_by_owner ON jobs (owner_id, created_at DESC, id DESC);

-- The orchestrator's state beside each job, and the outbox.
--
-- spec holds the whole Job message (stages, progress, artifacts, error), the
-- other columns what is filtered on or only the orchestrator needs.
ALTER TABLE jobs
    ADD COLUMN request_hash bytea,
    -- Increases with every committed change; JobEvent.sequence.
    ADD COLUMN event_seq bigint NOT NULL DEFAULT 0,
    -- Running stages' deadlines: {"<stage index>": <unix seconds>}.
    ADD COLUMN deadlines jsonb NOT NULL DEFAULT '{}',
    -- Frame rate of the probed video (0: none), for subtitle timing.
    ADD COLUMN frame_rate double precision NOT NULL DEFAULT 0;

CREATE INDEX jobs_unfinished ON jobs (updated_at) WHERE state IN (1, 2, 3);

-- Stage tasks written in the same transaction as the state change that causes
-- them; the relay publishes them to JetStream (Nats-Msg-Id = msg_id) and
-- deletes them.
CREATE TABLE outbox (
    id bigserial PRIMARY KEY,
    subject text NOT NULL,
    msg_id text NOT NULL,
    payload bytea NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Uploads: a file on its way in. The client PUTs the bytes to a signed URL for
-- staging_key, then completes the upload; completion moves the blob to the
-- asset's own key (so a late PUT to the still-valid URL cannot replace a
-- checked file), probes it, and creates the asset with the upload's id.
-- state is an octavia.media.v1.UploadState value.
CREATE TABLE uploads (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id uuid NOT NULL,
    filename text NOT NULL,
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes > 0),
    state smallint NOT NULL,
    staging_key text NOT NULL UNIQUE,
    request_id text,
    asset_id uuid REFERENCES assets (id) ON DELETE SET NULL,
    failure_reason text,
    expire_time timestamptz NOT NULL,
    -- While a CompleteUpload works on it (its lease), a second one waits its turn.
    completing_until timestamptz,
    -- Set once the sweeper has deleted whatever a late PUT may have left at staging_key.
    swept boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (owner_id, request_id)
);
CREATE INDEX uploads_to_sweep ON uploads (expire_time) WHERE NOT swept;

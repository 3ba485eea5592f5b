-- Assets: uploads a user completed and artifacts jobs produced. The bytes
-- live in blob storage under storage_key; probe results are a serialized
-- octavia.media.v1.MediaInfo.
CREATE TABLE assets (
    id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    owner_id uuid NOT NULL,
    kind smallint NOT NULL,
    filename text NOT NULL,
    content_type text NOT NULL,
    size_bytes bigint NOT NULL CHECK (size_bytes >= 0),
    media_info bytea,
    job_id uuid,
    storage_key text NOT NULL UNIQUE,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX assets_by_owner ON assets (owner_id, created_at DESC, id DESC);
CREATE INDEX assets_by_job ON assets (job_id) WHERE job_id IS NOT NULL;

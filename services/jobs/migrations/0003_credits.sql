-- Credits: the hold each job reserved with billing, and what billing is owed
-- once a job ends.
ALTER TABLE jobs ADD COLUMN hold text;  -- holds/{hold}; NULL for jobs from before billing

-- A hold asked for before its job row exists (CreateJob reserves first, so that
-- "not enough credits" leaves no job behind). The row goes in the transaction
-- that creates the job; one left over means the job was never created, and
-- the sweeper releases its hold.
CREATE TABLE reservations (
    job_id uuid PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- Written in the transaction that ends a job (or deletes an unfinished one):
-- capture the hold of a job that succeeded, release it otherwise. A loop
-- delivers them to billing, which makes both idempotent; no foreign key, so a
-- deleted job still settles.
CREATE TABLE settlements (
    job_id uuid PRIMARY KEY,
    hold text NOT NULL,
    capture boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    -- Deliveries that failed so far (billing away): for an operator asking what is still owed, and since when.
    attempts integer NOT NULL DEFAULT 0
);

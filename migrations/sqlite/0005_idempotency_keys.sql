-- Idempotency-Key of POST /v1/jobs: the job a key created and the hash of the request that
-- created it. Never edit an applied migration: add a new one (see migrations/README.md).

-- The primary key is what makes two identical submissions racing each other create one job:
-- the second's insert fails, its whole transaction (job and files) rolls back, and it
-- answers with the first's job. A key goes with its job (forgotten, pruned or swept).
CREATE TABLE idempotency_keys (
    key           TEXT    PRIMARY KEY,
    -- Hex SHA-256 of the normalized request: the same key with another request is refused.
    request_hash  TEXT    NOT NULL,
    job_id        TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    created_at    INTEGER NOT NULL
);

-- What deleting a job cascades through.
CREATE INDEX idempotency_keys_job ON idempotency_keys (job_id);

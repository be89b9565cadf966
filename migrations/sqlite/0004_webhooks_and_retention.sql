-- Webhooks (a job's own callback URL, and the log of deliveries) and history retention.
-- Never edit an applied migration: add a new one (see migrations/README.md).

-- Where the job's events are POSTed besides the global subscriptions. It may carry the
-- receiver's token in its query: never returned by the API.
ALTER TABLE jobs ADD COLUMN callback_url TEXT;

-- One row per event and receiver, updated after each attempt. Rows go with their job.
CREATE TABLE webhook_deliveries (
    -- Also the X-Haul-Delivery header: the same on every attempt of the delivery.
    id            TEXT    PRIMARY KEY,
    job_id        TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    event_seq     INTEGER NOT NULL,
    event_type    TEXT    NOT NULL,
    -- Redacted: no user-info, no query.
    url           TEXT    NOT NULL,
    target        TEXT    NOT NULL CHECK (target IN ('callback', 'subscription')),
    status        TEXT    NOT NULL CHECK (status IN ('retrying', 'delivered', 'failed', 'dropped')),
    attempts      INTEGER NOT NULL,
    http_status   INTEGER,
    error         TEXT,
    created_at    INTEGER NOT NULL,
    updated_at    INTEGER NOT NULL,
    delivered_at  INTEGER
);

-- A job's deliveries in event order; also what deleting a job cascades through.
CREATE INDEX webhook_deliveries_job ON webhook_deliveries (job_id, event_seq);

-- The retention sweep: finished jobs, oldest first.
CREATE INDEX jobs_finished_at ON jobs (finished_at) WHERE finished_at IS NOT NULL;

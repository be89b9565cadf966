-- Jobs, their files and each file's byte ranges. Times are Unix milliseconds (UTC).
-- Never edit an applied migration: add a new one (see migrations/README.md).

CREATE TABLE jobs (
    -- Insertion order: the list cursor and the tie-break between equal priorities.
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    id                TEXT    NOT NULL UNIQUE,
    status            TEXT    NOT NULL
        CHECK (status IN ('queued', 'running', 'paused', 'completed', 'failed', 'cancelled')),
    priority          INTEGER NOT NULL,
    description       TEXT,
    dest              TEXT,
    on_conflict       TEXT    NOT NULL CHECK (on_conflict IN ('rename', 'overwrite', 'skip')),
    -- Secrets: JSON array of [name, value] pairs, and a bearer token. Never returned by the API.
    headers           TEXT    NOT NULL DEFAULT '[]',
    access_token      TEXT,
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    started_at        INTEGER,
    finished_at       INTEGER,
    error_type        TEXT,
    error_message     TEXT,
    error_http_status INTEGER,
    -- The claim: which daemon instance runs the job, until when, and how many claims so far.
    lease_owner       TEXT,
    lease_expires_at  INTEGER,
    attempt           INTEGER NOT NULL DEFAULT 0
);

-- claim_next: the lowest priority number, then the oldest, among queued jobs.
CREATE INDEX jobs_claim_order ON jobs (status, priority, seq);

CREATE TABLE files (
    id                TEXT    PRIMARY KEY,
    job_id            TEXT    NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    url               TEXT    NOT NULL,
    -- Relative to the download root. Fixed once path_claimed = 1 (conflict policy applied).
    path              TEXT    NOT NULL,
    path_claimed      INTEGER NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL
        CHECK (status IN ('queued', 'downloading', 'verifying', 'complete', 'skipped', 'failed')),
    sha256            TEXT,
    bytes_done        INTEGER NOT NULL DEFAULT 0,
    bytes_total       INTEGER,
    -- Validators from the first response, sent as If-Range when resuming.
    etag              TEXT,
    last_modified     TEXT,
    cached            INTEGER NOT NULL DEFAULT 0,
    error_type        TEXT,
    error_message     TEXT,
    error_http_status INTEGER,
    UNIQUE (job_id, idx)
);

CREATE TABLE segments (
    file_id           TEXT    NOT NULL REFERENCES files (id) ON DELETE CASCADE,
    idx               INTEGER NOT NULL,
    range_start       INTEGER NOT NULL,
    -- Exclusive; NULL while the file's length is unknown (read to the end of the body).
    range_end         INTEGER,
    -- Bytes from range_start that are in NAME.part and were fsynced before this was saved.
    written           INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (file_id, idx),
    CHECK (written >= 0),
    CHECK (range_end IS NULL OR range_start + written <= range_end)
);

-- Listing jobs of one status newest first (GET /v1/jobs?status=...) walks this index instead
-- of sorting every job of that status: a page costs the same with 100 000 jobs as with 100.
CREATE INDEX jobs_status_seq ON jobs (status, seq);

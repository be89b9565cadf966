-- Issue 4, sources: a job's own proxy (stored, never returned: it may carry a password) and
-- each file's mirrors (a JSON array of URLs serving the same bytes; NULL: none).
ALTER TABLE jobs ADD COLUMN proxy TEXT;
ALTER TABLE files ADD COLUMN mirrors TEXT;

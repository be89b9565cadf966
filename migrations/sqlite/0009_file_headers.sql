-- A file's own extra request headers (files[].headers), over its job's: a JSON array of
-- [name, value] pairs, NULL for none. Secrets, like jobs.headers: never returned.
ALTER TABLE files ADD COLUMN headers TEXT;

-- A file whose name was not given (a directory `dest`, no `files[].path`) may be renamed after
-- the first response names it (Content-Disposition); its name until then comes from the URL.
ALTER TABLE files ADD COLUMN auto_name INTEGER NOT NULL DEFAULT 0;

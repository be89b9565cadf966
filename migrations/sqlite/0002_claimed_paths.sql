-- claim_path checks that no other unfinished file owns a destination (and its .part).
CREATE INDEX files_claimed_path ON files (path) WHERE path_claimed = 1;

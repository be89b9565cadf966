-- Per-job overrides of the engine's limits (NULL: the daemon's settings apply).
ALTER TABLE jobs ADD COLUMN max_connections INTEGER;
ALTER TABLE jobs ADD COLUMN min_segment_size INTEGER;
ALTER TABLE jobs ADD COLUMN max_bytes_per_second INTEGER;

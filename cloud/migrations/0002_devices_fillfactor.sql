-- Every ingest transaction updates the registry row of each device it saw (last_seen, status,
-- battery). Leaving room on each page lets PostgreSQL make those HOT updates (no index entries,
-- less WAL): measured about 40 % cheaper for 20,000 devices per transaction.
ALTER TABLE devices SET (fillfactor = 60);

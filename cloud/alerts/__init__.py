"""Alert rules (issue 11): the feed the ingest writes, and the service that reads it."""

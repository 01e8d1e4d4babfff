-- One device's hourly history (the API's most common query) reads the rollup by device and
-- metric, not by hour: without this index it scanned every device's rows of the range. The
-- aggregates are included so the rows come from the index alone (an index-only scan).
CREATE INDEX readings_hourly_rollup_device_idx ON readings_hourly_rollup (device_id, metric, bucket)
    INCLUDE (n, sum, min, max);

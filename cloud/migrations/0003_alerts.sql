-- Alert rules (issue 11). docs/storage.md describes every table.

-- What the ingest committed, one row per (ingest transaction, community), in commit order.
-- feed_seq is allocated under a transaction-level advisory lock taken just before COMMIT, so
-- feed_seq order is commit order: a reader that saw feed_seq N has seen every row below N.
CREATE TABLE alert_feed (
    feed_seq       bigserial PRIMARY KEY,
    community_id   text        NOT NULL,
    community_hash integer     NOT NULL,   -- zlib.crc32(community_id.encode()) & 0x7fffffff
    committed_at   timestamptz NOT NULL DEFAULT now(),
    readings       integer     NOT NULL,
    batches        bytea       NOT NULL,   -- MessagePack array of the envelopes stored (duplicates left out)
    statuses       jsonb       NOT NULL DEFAULT '[]'  -- [{"gateway_id","state","at_us"}] gateway statuses received
);
-- The batches are large (some 160 bytes per reading) and written once, inside every ingest
-- transaction: lz4 compresses them about as well as the default pglz at a quarter of the cost
-- (measured per 8 MB: 30 vs 122 ms, 19 vs 18 MB). A server built without lz4 keeps pglz.
DO $$
BEGIN
    EXECUTE 'ALTER TABLE alert_feed ALTER COLUMN batches SET COMPRESSION lz4';
EXCEPTION WHEN feature_not_supported THEN
    RAISE NOTICE 'lz4 is not available: alert_feed.batches keeps the default compression';
END $$;
-- How far each alert service partition has read the feed.
CREATE TABLE alert_checkpoints (
    partition  text        PRIMARY KEY,   -- "0/1", "1/2", ...
    feed_seq   bigint      NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
-- The rule engine's state per partition, saved with the checkpoint.
CREATE TABLE alert_state (
    partition text  NOT NULL,
    key       text  NOT NULL,              -- engine-defined
    state     bytea NOT NULL,              -- engine-defined (msgspec MessagePack)
    PRIMARY KEY (partition, key)
);
-- What the alert service found: one row per incident, re-fired occurrences counted on it.
CREATE TABLE incidents (
    incident_id        bigserial   PRIMARY KEY,
    rule               text        NOT NULL,
    subject            text        NOT NULL,  -- device id, resident id or gateway id
    subject_kind       text        NOT NULL CHECK (subject_kind IN ('device', 'resident', 'gateway')),
    severity           text        NOT NULL CHECK (severity IN ('critical', 'major', 'minor', 'info')),
    state              text        NOT NULL DEFAULT 'detected',
    latched            boolean     NOT NULL,
    community_id       text        NOT NULL,
    gateway_id         text,
    device_id          text,
    resident_id        text,
    title_zh           text        NOT NULL,
    title_en           text        NOT NULL,
    detail_zh          text        NOT NULL,
    detail_en          text        NOT NULL,
    started_at         timestamptz NOT NULL,  -- (device) time the condition began
    detected_at        timestamptz NOT NULL,  -- engine time it fired
    created_at         timestamptz NOT NULL DEFAULT now(),  -- wall clock of the commit
    cleared_at         timestamptz,           -- engine time a non-latched condition cleared
    closed_at          timestamptz,           -- set by the workflow (next issue)
    occurrences        integer     NOT NULL DEFAULT 1,
    last_occurrence_at timestamptz NOT NULL,
    evidence           jsonb       NOT NULL,  -- [{"time": iso, "device_id", "metric"|"event", "value"?}]
    feed_seq           bigint      NOT NULL
);
-- One open incident per (rule, subject).
CREATE UNIQUE INDEX incidents_open_key ON incidents (rule, subject) WHERE closed_at IS NULL;
CREATE INDEX incidents_community_idx ON incidents (community_id, detected_at DESC);
-- Each fire, clear and repeat of an incident, with the feed row that caused it.
CREATE TABLE incident_occurrences (
    occurrence_id bigserial PRIMARY KEY,
    incident_id bigint      NOT NULL REFERENCES incidents (incident_id),
    at          timestamptz NOT NULL,
    kind        text        NOT NULL CHECK (kind IN ('fired', 'cleared', 'repeated')),
    feed_seq    bigint      NOT NULL,
    evidence    jsonb       NOT NULL
);
CREATE INDEX incident_occurrences_incident_idx ON incident_occurrences (incident_id, at);

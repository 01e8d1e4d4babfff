-- linli core schema. docs/storage.md describes every table.
-- When the timescaledb extension is present, readings and events become hypertables.

CREATE TABLE devices (
    device_id    text PRIMARY KEY,
    device_type  text NOT NULL,
    profile      text NOT NULL,
    community_id text,
    gateway_id   text,
    lat          double precision,
    lon          double precision,
    building     text,
    unit         text,
    room         text,
    resident_id  text,
    living_alone boolean,
    first_seen   timestamptz,
    last_seen    timestamptz,
    status       text NOT NULL DEFAULT 'unknown' CHECK (status IN ('unknown', 'online', 'offline')),
    status_at    timestamptz,
    battery_pct  double precision,
    battery_at   timestamptz,
    updated_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX devices_community_gateway_idx ON devices (community_id, gateway_id);

-- One row per metric value. A canonical reading with three metrics is three rows.
CREATE TABLE readings (
    time      timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    value     double precision NOT NULL
);
CREATE INDEX readings_device_time_idx ON readings (device_id, time DESC);

CREATE TABLE events (
    time       timestamptz NOT NULL,
    device_id  text        NOT NULL,
    event      text        NOT NULL,
    attributes jsonb       NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX events_device_time_idx ON events (device_id, time DESC);
CREATE INDEX events_event_time_idx ON events (event, time DESC);

DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb') THEN
        PERFORM create_hypertable('readings', by_range('time', INTERVAL '1 day'),
                                  create_default_indexes => false);
        PERFORM create_hypertable('events', by_range('time', INTERVAL '7 days'),
                                  create_default_indexes => false);
    END IF;
END
$$;

CREATE TABLE gateways (
    gateway_id   text PRIMARY KEY,
    community_id text        NOT NULL,
    state        text        NOT NULL,
    status       jsonb       NOT NULL,
    status_at    timestamptz NOT NULL
);

-- Ingest bookkeeping: a batch is stored at most once. Written in the transaction holding its rows.
CREATE TABLE ingested_batches (
    gateway_id   text        NOT NULL,
    batch_seq    bigint      NOT NULL,
    community_id text        NOT NULL,
    batch_class  text        NOT NULL,
    readings     integer     NOT NULL,
    min_time     timestamptz,
    max_time     timestamptz,
    ingested_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (gateway_id, batch_seq)
);
CREATE INDEX ingested_batches_ingested_at_idx ON ingested_batches USING brin (ingested_at);

-- Per-reading de-duplication: a reading resent inside a different batch is stored once.
CREATE TABLE reading_ids (
    reading_id  uuid        PRIMARY KEY,
    ingested_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX reading_ids_ingested_at_idx ON reading_ids USING brin (ingested_at);

-- Rejected uplink payloads, kept byte for byte.
CREATE TABLE dead_letters (
    id          bigserial PRIMARY KEY,
    received_at timestamptz NOT NULL,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    reason      text        NOT NULL
);
CREATE INDEX dead_letters_received_at_idx ON dead_letters (received_at);

-- Hourly rollup maintained by the service when continuous aggregates are unavailable.
CREATE TABLE readings_hourly_rollup (
    bucket    timestamptz      NOT NULL,
    device_id text             NOT NULL,
    metric    text             NOT NULL,
    n         bigint           NOT NULL,
    sum       double precision NOT NULL,
    min       double precision NOT NULL,
    max       double precision NOT NULL,
    PRIMARY KEY (bucket, device_id, metric)
);

-- Progress of service-side jobs (rollup watermark and the like).
CREATE TABLE job_state (
    job     text PRIMARY KEY,
    value   timestamptz NOT NULL,
    mark    timestamptz NOT NULL
);

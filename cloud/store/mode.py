"""Which storage features the database offers, and switching on the ones that need it.

=================  ================================  ===========================================
mode               detected by                       retention and hourly rollup
=================  ================================  ===========================================
``community``      timescaledb, license ``timescale``  compression + retention policies, a
                                                      continuous aggregate with real-time
                                                      aggregation (the server runs them)
``apache``         timescaledb, license ``apache``   the service: ``drop_chunks`` on a schedule,
                                                      ``readings_hourly_rollup`` kept up to date
``postgres``       no timescaledb extension           the service: ``DELETE`` on a schedule, the
                                                      same rollup table
=================  ================================  ===========================================

In every mode ``readings_hourly`` answers the same query (bucket, device_id, metric, n, sum, min,
max, avg) up to the latest reading: a continuous aggregate in ``community`` mode, a view over the
rollup table plus the not yet rolled-up raw rows otherwise.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from typing import Any, Final

import psycopg

from cloud.config import RetentionConfig

log = logging.getLogger("linli.cloud.store")


class StoreMode(enum.StrEnum):
    COMMUNITY = "community"
    APACHE = "apache"
    POSTGRES = "postgres"


@dataclass(frozen=True, slots=True)
class ModeInfo:
    mode: StoreMode
    timescaledb_version: str | None
    license: str | None
    hypertables: bool

    @property
    def server_jobs(self) -> bool:
        """True when TimescaleDB's own jobs run retention and the rollup."""
        return self.mode is StoreMode.COMMUNITY

    def describe(self) -> str:
        if self.timescaledb_version is None:
            return "postgres (no timescaledb: plain tables, service-side retention and rollup)"
        extra = "" if self.hypertables else ", readings is NOT a hypertable"
        return f"{self.mode} (timescaledb {self.timescaledb_version}, license {self.license}{extra})"


def detect_mode(conn: psycopg.Connection[Any]) -> ModeInfo:
    """Look at the extension, its license and whether ``readings`` is a hypertable."""
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'timescaledb'").fetchone()
    if row is None:
        return ModeInfo(StoreMode.POSTGRES, None, None, hypertables=False)
    version = str(row[0])
    license_row = conn.execute("SELECT current_setting('timescaledb.license', true)").fetchone()
    license_ = str(license_row[0]) if license_row and license_row[0] else "apache"
    ht = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM timescaledb_information.hypertables"
        " WHERE hypertable_schema = current_schema() AND hypertable_name = 'readings')"
    ).fetchone()
    hypertables = bool(ht and ht[0])
    if not hypertables:
        mode = StoreMode.POSTGRES
    elif license_ == "timescale":
        mode = StoreMode.COMMUNITY
    else:
        mode = StoreMode.APACHE
    return ModeInfo(mode, version, license_, hypertables)


_HOURLY_SELECT = """
    SELECT {bucket} AS bucket, device_id, metric,
           count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
    FROM readings
"""


def community_statements(retention: RetentionConfig) -> list[str]:
    """The SQL that switches on the community-license features (idempotent)."""
    r = retention
    return [
        "ALTER TABLE readings SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time DESC')",
        "ALTER TABLE events SET (timescaledb.compress,"
        " timescaledb.compress_segmentby = 'device_id', timescaledb.compress_orderby = 'time DESC')",
        f"SELECT add_compression_policy('readings', INTERVAL '{int(r.compress_after_days)} days',"
        " if_not_exists => true)",
        f"SELECT add_compression_policy('events', INTERVAL '{int(r.compress_after_days)} days',"
        " if_not_exists => true)",
        f"SELECT add_retention_policy('readings', INTERVAL '{int(r.readings_days)} days',"
        " if_not_exists => true)",
        f"SELECT add_retention_policy('events', INTERVAL '{int(r.events_days)} days', if_not_exists => true)",
        "DROP VIEW IF EXISTS readings_hourly",
        "CREATE MATERIALIZED VIEW IF NOT EXISTS readings_hourly"
        " WITH (timescaledb.continuous, timescaledb.materialized_only = false) AS"
        + _HOURLY_SELECT.format(bucket="time_bucket(INTERVAL '1 hour', time)")
        + " GROUP BY 1, 2, 3 WITH NO DATA",
        "SELECT add_continuous_aggregate_policy('readings_hourly', start_offset => INTERVAL '3 days',"
        " end_offset => INTERVAL '1 hour', schedule_interval => INTERVAL '15 minutes',"
        " if_not_exists => true)",
        f"SELECT add_retention_policy('readings_hourly', INTERVAL '{int(r.rollup_days)} days',"
        " if_not_exists => true)",
    ]


#: ``readings_hourly`` without continuous aggregates: rolled-up hours below the watermark, raw
#: rows aggregated on the fly above it (what TimescaleDB calls real-time aggregation).
FALLBACK_VIEW = """
CREATE OR REPLACE VIEW readings_hourly AS
SELECT bucket, device_id, metric, n, sum, min, max FROM readings_hourly_rollup
WHERE bucket < (SELECT coalesce(max(value), '-infinity') FROM job_state WHERE job = 'rollup')
UNION ALL
SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00') AS bucket, device_id, metric,
       count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max
FROM readings
WHERE time >= (SELECT coalesce(max(value), '-infinity') FROM job_state WHERE job = 'rollup')
GROUP BY 1, 2, 3
"""


#: ``pg_advisory_lock`` key held while `prepare` creates what the mode needs ("linlp").
PREPARE_LOCK_KEY: Final = 0x6C696E6C70


def prepare(conn: psycopg.Connection[Any], retention: RetentionConfig) -> ModeInfo:
    """Detect the mode, log it once, and create what it needs (``readings_hourly``).

    `conn` must be in autocommit mode (continuous aggregates refuse transaction blocks). Workers
    starting together take turns (a session advisory lock): two ``CREATE OR REPLACE VIEW`` at
    once collide in the catalogue (a unique violation on ``pg_type``), which crashed one of two
    ingest workers started together.
    """
    conn.execute("SELECT pg_advisory_lock(%s)", (PREPARE_LOCK_KEY,))
    try:
        return _prepare(conn, retention)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (PREPARE_LOCK_KEY,))


def _prepare(conn: psycopg.Connection[Any], retention: RetentionConfig) -> ModeInfo:
    info = detect_mode(conn)
    if info.mode is StoreMode.POSTGRES:
        log.warning("storage mode: %s", info.describe())
    else:
        log.info("storage mode: %s", info.describe())
    if info.mode is StoreMode.COMMUNITY:
        exists = conn.execute(
            "SELECT EXISTS (SELECT 1 FROM timescaledb_information.continuous_aggregates"
            " WHERE view_name = 'readings_hourly')"
        ).fetchone()
        if not (exists and exists[0]):
            for statement in community_statements(retention):
                conn.execute(statement.encode())
    else:
        conn.execute(FALLBACK_VIEW.encode())
    return info

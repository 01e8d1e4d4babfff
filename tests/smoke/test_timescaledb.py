"""A hypertable in the private TimescaleDB, filled with binary COPY, queried with time_bucket."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import psycopg
import pytest

from tests.conftest import PgServer

pytestmark = pytest.mark.integration


def test_timescaledb_is_loaded(pg_server: PgServer, database_url: str) -> None:
    with psycopg.connect(database_url) as conn:
        row = conn.execute(
            "SELECT extversion, current_setting('timescaledb.license') "
            "FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    assert row is not None
    print(f"TimescaleDB {row[0]} license={row[1]}")
    assert row[1] in {"apache", "timescale"}
    assert row[1] == pg_server.license


def test_hypertable_binary_copy_and_time_bucket(database_url: str) -> None:
    start = datetime(2026, 11, 22, 0, 0, tzinfo=UTC)
    rows = [
        (start + timedelta(minutes=m), f"dev-{d}", "water_level_mm", float(m + 100 * d))
        for d in range(3)
        for m in range(120)
    ]
    with psycopg.connect(database_url) as conn:
        conn.execute(
            "CREATE TABLE readings (time timestamptz NOT NULL, device_id text NOT NULL, "
            "metric text NOT NULL, value double precision NOT NULL)"
        )
        conn.execute("SELECT create_hypertable('readings', by_range('time', INTERVAL '1 hour'))")
        copy_sql = "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
        with conn.cursor() as cur:
            with cur.copy(copy_sql) as copy:
                copy.set_types(["timestamptz", "text", "text", "float8"])
                for row in rows:
                    copy.write_row(row)
            chunks = cur.execute("SELECT count(*) FROM show_chunks('readings')").fetchone()
            buckets = cur.execute(
                "SELECT time_bucket(INTERVAL '1 hour', time) AS bucket, device_id, avg(value), count(*) "
                "FROM readings GROUP BY bucket, device_id ORDER BY device_id, bucket"
            ).fetchall()
    assert chunks == (2,)
    assert len(buckets) == 6
    first = buckets[0]
    assert first[0] == start
    assert first[1] == "dev-0"
    assert first[2] == pytest.approx(29.5)  # mean of 0..59
    assert first[3] == 60
    assert buckets[-1][1:] == ("dev-2", pytest.approx(200 + 89.5), 60)

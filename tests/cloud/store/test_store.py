"""Migrations, storage modes, retention and the rollup against the real PostgreSQL+TimescaleDB."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloud.config import RetentionConfig, build_settings
from cloud.errors import CloudError, MigrationError
from cloud.ingest.envelope import decode
from cloud.store.maintenance import MAINTENANCE_LOCK_KEY, Maintenance
from cloud.store.migrate import MIGRATION_LOCK_KEY, Migration, migrate, shipped_migrations
from cloud.store.mode import StoreMode, community_statements, detect_mode, prepare
from cloud.store.retention import enforce_retention
from cloud.store.rollup import refresh_rollup
from cloud.store.writer import BatchWriter
from tests.cloud.conftest import (
    T0_US,
    count,
    door_readings,
    envelope,
    named,
    session,
    up_topic,
    wait_blocked,
)
from tests.conftest import PgServer

pytestmark = pytest.mark.integration

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def test_migrate_is_idempotent_and_recorded(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        assert migrate(conn) == [m.version for m in shipped_migrations()]
        assert migrate(conn) == []
        rows = conn.execute("SELECT version, checksum FROM schema_migrations").fetchall()
        assert rows == [(m.version, m.checksum) for m in shipped_migrations()]
        hyper = conn.execute("SELECT hypertable_name FROM timescaledb_information.hypertables").fetchall()
        assert sorted(r[0] for r in hyper) == ["events", "readings"]


def test_changed_migration_is_refused(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn, migrations=[Migration("0001", "t", "CREATE TABLE t (x int)")])
        with pytest.raises(MigrationError, match="changed"):
            migrate(conn, migrations=[Migration("0001", "t", "CREATE TABLE t (x bigint)")])


def test_failed_migration_rolls_back_whole(database_url: str) -> None:
    bad = Migration("0001", "bad", "CREATE TABLE t (x int); SELECT no_such_function();")
    with psycopg.connect(database_url, autocommit=True) as conn:
        with pytest.raises(MigrationError, match="0001"):
            migrate(conn, migrations=[bad])
        assert conn.execute("SELECT to_regclass('t')").fetchone() == (None,)
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (0,)


def test_two_concurrent_migrations_apply_once(database_url: str) -> None:
    """Both start while a third session holds the migration lock (shown by pg_blocking_pids), so
    they really run at once when it goes; one applies everything, the other nothing."""
    results: list[list[str]] = []
    errors: list[CloudError | psycopg.Error] = []

    def run(name: str) -> None:
        try:
            with psycopg.connect(named(database_url, name), autocommit=True) as conn:
                results.append(migrate(conn))
        except (CloudError, psycopg.Error) as exc:  # what migrate can raise: handed back to the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(f"migrate-{i}",)) for i in (1, 2)]
    with (
        psycopg.connect(named(database_url, "migrate-gate"), autocommit=True) as gate,
        psycopg.connect(database_url, autocommit=True) as watch,
    ):
        gate.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        gate_pid = session(watch, "migrate-gate")[0]
        try:
            for t in threads:
                t.start()
            for i in (1, 2):
                _, waiting, blockers = wait_blocked(watch, f"migrate-{i}", gate_pid)
                assert waiting == "Lock", f"migration {i} did not wait"
                assert gate_pid in blockers  # (and the other one, when it queued first)
        finally:
            gate.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
            for t in threads:
                t.join(60)
    assert not errors
    assert sorted(len(r) for r in results) == [0, len(shipped_migrations())]


def test_apache_mode_detected(migrated_url: str, pg_server: PgServer) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        info = prepare(conn, RetentionConfig())
    assert pg_server.license == "apache"
    assert info.mode is StoreMode.APACHE
    assert info.hypertables
    assert "apache" in info.describe()


def test_workers_preparing_the_store_together_take_turns(migrated_url: str) -> None:
    """Eight workers starting at once, several rounds: each prepares the store without error."""
    errors: list[BaseException] = []
    for _ in range(10):
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            conn.execute("DROP VIEW IF EXISTS readings_hourly")  # a first start each round
        start = threading.Barrier(8)

        def one(start: threading.Barrier = start) -> None:
            try:
                with psycopg.connect(migrated_url, autocommit=True) as conn:
                    start.wait(10)
                    prepare(conn, RetentionConfig())
            except BaseException as exc:  # noqa: BLE001 - handed back to the test
                errors.append(exc)

        threads = [threading.Thread(target=one) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    assert errors == []
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM readings_hourly").fetchone() == (0,)


def test_plain_mode_detected_with_a_warning(plain_url: str, caplog: pytest.LogCaptureFixture) -> None:
    with psycopg.connect(plain_url, autocommit=True) as conn:
        info = prepare(conn, RetentionConfig())
        assert conn.execute("SELECT count(*) FROM readings_hourly").fetchone() == (0,)
    assert info.mode is StoreMode.POSTGRES
    assert info.timescaledb_version is None
    assert any(r.levelname == "WARNING" and "postgres" in r.message for r in caplog.records)


def test_community_sql_is_valid_and_refused_only_for_the_license(migrated_url: str) -> None:
    """No community-licensed server here: each statement must fail with the license error (the
    parser and planner accepted it), never with a syntax or undefined-object error."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for statement in community_statements(RetentionConfig()):
            if statement.startswith("DROP VIEW"):
                continue
            with pytest.raises(psycopg.Error) as info, conn.transaction():
                conn.execute(statement.encode())
            if isinstance(info.value, psycopg.errors.UndefinedTable):
                # Policies on the aggregate itself: the call parsed and the function with these
                # named arguments resolved; only the (uncreatable) aggregate is missing.
                assert "'readings_hourly'" in statement, statement
                assert 'relation "readings_hourly" does not exist' in str(info.value)
                continue
            assert isinstance(info.value, psycopg.errors.FeatureNotSupported), (statement, info.value)
            assert 'not supported under the current "apache" license' in str(info.value), statement


@pytest.mark.parametrize("kind", ["timescaledb", "plain"])
def test_rollup_matches_raw_aggregates_including_late_data(
    kind: str, migrated_url: str, plain_url: str
) -> None:
    url = migrated_url if kind == "timescaledb" else plain_url
    writer = BatchWriter(database_url=url)
    # 3 hours of data for 10 devices, one reading a minute.
    writer.write(
        [decode(up_topic(), envelope(door_readings(180, devices=10, step_us=60_000_000), batch_seq=1))]
    )
    with psycopg.connect(url, autocommit=True) as conn:
        prepare(conn, RetentionConfig())
        raw_sql = (
            "SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00'), device_id, metric,"
            " count(*), sum(value), min(value), max(value) FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        )
        view_sql = "SELECT * FROM readings_hourly ORDER BY 1, 2, 3"
        before = conn.execute(view_sql).fetchall()
        with conn.transaction():
            hours = refresh_rollup(
                conn, now=T0 + timedelta(hours=2, minutes=30), margin=timedelta(minutes=10)
            )
        assert hours == 2  # hours 0 and 1 are closed
        assert conn.execute("SELECT count(DISTINCT bucket) FROM readings_hourly_rollup").fetchone() == (2,)
        assert conn.execute(view_sql).fetchall() == before == conn.execute(raw_sql).fetchall()
        # A late reading for hour 0 arrives after the rollup ran; the next run recomputes hour 0.
        late = door_readings(1, start_us=T0_US + 5 * 60 * 1_000_000, devices=1, prefix="late")
        writer.write([decode(up_topic(), envelope(late, batch_seq=2))])
        with conn.transaction():
            refresh_rollup(conn, now=T0 + timedelta(hours=2, minutes=40), margin=timedelta(minutes=10))
        assert conn.execute(view_sql).fetchall() == conn.execute(raw_sql).fetchall()
        assert conn.execute(
            "SELECT n FROM readings_hourly_rollup WHERE device_id = 'late0000' AND metric = 'battery_pct'"
        ).fetchone() == (1,)
    writer.close()


@pytest.mark.parametrize("kind", ["timescaledb", "plain"])
def test_retention_removes_old_data_only(kind: str, migrated_url: str, plain_url: str) -> None:
    url = migrated_url if kind == "timescaledb" else plain_url
    writer = BatchWriter(database_url=url)
    old = door_readings(10, start_us=T0_US - 30 * 86400 * 1_000_000, prefix="old")
    new = door_readings(10, start_us=T0_US, prefix="new")
    writer.write(
        [decode(up_topic(), envelope(old, batch_seq=1)), decode(up_topic(), envelope(new, batch_seq=2))]
    )
    writer.close()
    with psycopg.connect(url) as conn, conn.transaction():
        mode = detect_mode(conn).mode
        assert mode is (StoreMode.APACHE if kind == "timescaledb" else StoreMode.POSTGRES)
        removed = enforce_retention(
            conn, mode=mode, retention=RetentionConfig(readings_days=10), now=T0 + timedelta(days=1)
        )
    assert removed.get("readings_chunks", removed.get("readings", 0)) > 0
    assert count(url, "SELECT count(*) FROM readings WHERE device_id LIKE 'old%'") == 0
    assert count(url, "SELECT count(*) FROM readings WHERE device_id LIKE 'new%'") == 30


@pytest.mark.parametrize("kind", ["timescaledb", "plain"])
def test_finished_commands_go_with_their_audit_trail_after_their_retention(
    kind: str, migrated_url: str, plain_url: str
) -> None:
    url = migrated_url if kind == "timescaledb" else plain_url
    now = T0 + timedelta(days=1)
    commands = {  # name: (state, last change)
        "old-confirmed": ("confirmed", now - timedelta(days=401)),
        "old-expired": ("expired", now - timedelta(days=500)),
        "old-but-queued": ("queued", now - timedelta(days=500)),
        "recent-failed": ("failed", now - timedelta(days=399)),
    }
    ids = {name: uuid.uuid5(uuid.NAMESPACE_URL, name) for name in commands}
    with psycopg.connect(url, autocommit=True) as conn:
        for name, (state, at) in commands.items():
            conn.execute(
                "INSERT INTO commands (command_id, device_id, community_id, gateway_id, name, params,"
                " confirm, state, requested_by, requested_at, expires_at, updated_at)"
                " VALUES (%s, 'lamp-1', 'c01', 'gw1', 'switch', '{}', 'report', %s, 'w1', %s, %s, %s)",
                (ids[name], state, at, at + timedelta(minutes=10), at),
            )
            for step in ("queued", state):
                conn.execute(
                    "INSERT INTO command_audit (command_id, at, actor, state) VALUES (%s, %s, 'w1', %s)",
                    (ids[name], at, step),
                )
    with psycopg.connect(url) as conn, conn.transaction():
        removed = enforce_retention(
            conn, mode=detect_mode(conn).mode, retention=RetentionConfig(commands_days=400), now=now
        )
    assert (removed["commands"], removed["command_audit"]) == (2, 4)
    kept = {r[0] for r in _rows(url, "SELECT command_id FROM commands")}
    assert kept == {ids["old-but-queued"], ids["recent-failed"]}
    assert {r[0] for r in _rows(url, "SELECT DISTINCT command_id FROM command_audit")} == kept
    # the trail is still append-only for everyone else
    with psycopg.connect(url, autocommit=True) as conn, pytest.raises(psycopg.errors.RaiseException):
        conn.execute("DELETE FROM command_audit")


def _rows(url: str, query: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


@pytest.mark.parametrize("kind", ["timescaledb", "plain"])
def test_the_service_enforces_retention_and_keeps_the_rollup(
    kind: str, migrated_url: str, plain_url: str
) -> None:
    """Apache and plain modes: the worker's maintenance thread, on its schedule, does what the
    community edition's policies would."""
    url = migrated_url if kind == "timescaledb" else plain_url
    writer = BatchWriter(database_url=url)
    old = door_readings(10, start_us=T0_US - 30 * 86400 * 1_000_000, prefix="old")
    new = door_readings(120, start_us=T0_US, devices=4, step_us=60_000_000, prefix="new")
    writer.write(
        [decode(up_topic(), envelope(old, batch_seq=1)), decode(up_topic(), envelope(new, batch_seq=2))]
    )
    writer.close()
    settings = build_settings({"database_url": url, "retention": {"readings_days": 10, "interval_s": 0.1}})
    with psycopg.connect(url, autocommit=True) as conn:
        info = prepare(conn, settings.retention)
    assert info.mode is (StoreMode.APACHE if kind == "timescaledb" else StoreMode.POSTGRES)
    maintenance = Maintenance(settings=settings, wall=lambda: T0 + timedelta(days=1))
    maintenance.start()
    try:
        deadline = time.monotonic() + 30
        while maintenance.runs < 2:
            assert time.monotonic() < deadline, "maintenance did not run"
            time.sleep(0.05)
    finally:
        maintenance.stop()
    assert count(url, "SELECT count(*) FROM readings WHERE device_id LIKE 'old%'") == 0
    assert count(url, "SELECT count(*) FROM readings") == 120 * 3
    with psycopg.connect(url) as conn:
        # The two hours of new readings are closed (the clock says a day later) and rolled up.
        assert conn.execute("SELECT count(DISTINCT bucket) FROM readings_hourly_rollup").fetchone() == (2,)
        view = conn.execute("SELECT * FROM readings_hourly ORDER BY 1, 2, 3").fetchall()
        raw = conn.execute(
            "SELECT date_bin('1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00'), device_id, metric,"
            " count(*), sum(value), min(value), max(value) FROM readings GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
        ).fetchall()
    assert view == raw
    assert len(view) == 2 * 4 * 3


def test_maintenance_runs_in_one_worker_at_a_time(migrated_url: str) -> None:
    settings = build_settings({"database_url": migrated_url})
    with psycopg.connect(migrated_url) as other, other.transaction():
        other.execute("SELECT pg_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,))
        assert Maintenance(settings=settings).run_once() is None  # another worker is at it
    done = Maintenance(settings=settings).run_once()
    assert done is not None
    assert "rollup_hours" in done
    assert "readings_chunks" in done


def test_db_migrate_command_is_idempotent(database_url: str) -> None:
    command = [sys.executable, "-m", "cloud", "db", "migrate", "--database", database_url]
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    versions = ", ".join(m.version for m in shipped_migrations())
    assert first.stdout.strip() == f"applied: {versions}"
    again = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert (again.returncode, again.stdout.strip()) == (0, "up to date")
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(shipped_migrations())
    bad = subprocess.run(
        [*command[:-1], database_url.rsplit("/", 1)[0] + "/no_such_db"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "linli db migrate:" in bad.stderr

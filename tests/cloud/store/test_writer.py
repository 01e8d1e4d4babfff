"""The transaction writer: exactly-once per batch and per reading, registry, events, dead letters."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import psycopg
import pytest

from cloud.ingest.envelope import decode
from cloud.store.writer import BatchWriter, DeadLetter, GatewayStatus, WriteResult
from tests.cloud.conftest import (
    T0_US,
    R,
    count,
    door_readings,
    envelope,
    named,
    session,
    up_topic,
    wait_blocked,
)

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("kind", ["timescaledb", "plain"])
def test_batches_and_readings_are_stored_once(kind: str, migrated_url: str, plain_url: str) -> None:
    url = migrated_url if kind == "timescaledb" else plain_url
    writer = BatchWriter(database_url=url)
    readings = door_readings(50)
    first = decode(up_topic(), envelope(readings, batch_seq=1))
    res = writer.write([first, first])  # redelivered within one transaction
    assert (res.batches, res.duplicate_batches, res.readings, res.rows) == (1, 1, 50, 150)
    res = writer.write([first])  # redelivered later
    assert (res.batches, res.duplicate_batches, res.rows) == (0, 1, 0)
    # After a gateway crash: the same readings (same ids) resent in a new batch, with new ones.
    extra = door_readings(5, start_us=T0_US + 10**9, prefix="x")
    resent = decode(up_topic(), envelope(readings[40:] + extra + extra[:1], batch_seq=2))
    res = writer.write([resent])
    assert (res.batches, res.readings, res.duplicate_readings, res.rows) == (1, 5, 11, 15)
    writer.close()
    assert count(url, "SELECT count(*) FROM readings") == 165
    assert count(url, "SELECT count(*) FROM ingested_batches") == 2


def test_identical_reports_without_device_time_are_all_kept(migrated_url: str) -> None:
    """A reading without device time has a content-derived id that an identical later report
    shares: such ids are not claimed, so no real report is lost as a 'duplicate'."""
    writer = BatchWriter(database_url=migrated_url)
    same = "5f0c6a7e9d1b4c2a8e3f7a6b5c4d3e2f"
    flag = ["estimated_ts"]
    first = R("door1", T0_US, {"contact_open": 1.0}, reading_id=same, quality=flag)
    later = R("door1", T0_US + 3_600_000_000, {"contact_open": 1.0}, reading_id=same, quality=flag)
    timed = R("door2", T0_US, {"contact_open": 1.0}, reading_id="a" * 32)
    res = writer.write([decode(up_topic(), envelope([first, timed], batch_seq=1))])
    assert (res.readings, res.duplicate_readings) == (2, 0)
    res = writer.write([decode(up_topic(), envelope([later, timed], batch_seq=2))])
    assert (res.readings, res.duplicate_readings) == (1, 1)  # the timed one is a real repeat
    writer.close()
    assert count(migrated_url, "SELECT count(*) FROM readings WHERE device_id = 'door1'") == 2
    assert count(migrated_url, "SELECT count(*) FROM readings WHERE device_id = 'door2'") == 1


def test_registry_tracks_last_seen_battery_and_status(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    t = T0_US
    batch1 = [
        R("dev1", t + 2_000_000, {"battery_pct": 80}),
        R("dev1", t + 1_000_000, {"battery_pct": 90}),  # older, arrives later in the batch
        R("sos1", t, {"battery_pct": 55}, events=["sos_pressed"], device_type="sos_button", profile="tuya/x"),
    ]
    writer.write([decode(up_topic(), envelope(batch1, batch_seq=1))])
    offline = R("dev1", t + 5_000_000, {}, events=["device_offline"])
    writer.write([decode(up_topic(), envelope([offline], batch_seq=2))])
    # A late, older reading must not move last_seen back nor overwrite the battery.
    late = R("dev1", t, {"battery_pct": 99})
    writer.write([decode(up_topic(), envelope([late], batch_seq=3))])
    writer.close()
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT device_id, device_type, community_id, gateway_id, first_seen, last_seen, status,"
            " battery_pct FROM devices ORDER BY device_id"
        ).fetchall()
        ev = conn.execute(
            "SELECT device_id, event, attributes->>'gateway_id' FROM events ORDER BY time"
        ).fetchall()
    at = datetime.fromtimestamp(t / 1e6, UTC)
    dev1, sos1 = rows
    assert dev1[:4] == ("dev1", "door_contact", "c1", "gw1")
    assert dev1[4] == at  # first_seen moved back by the late reading
    assert dev1[5] == datetime.fromtimestamp((t + 2_000_000) / 1e6, UTC)
    assert dev1[6:] == ("offline", 80.0)
    assert sos1[1] == "sos_button"
    assert sos1[6:] == ("online", 55.0)
    assert ev == [("sos1", "sos_pressed", "gw1"), ("dev1", "device_offline", "gw1")]


def test_dead_letters_and_gateway_status(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    now = datetime.now(UTC)
    res = writer.write(
        [],
        dead_letters=[DeadLetter("linli/v1/c1/gw1/up", b"\x00\xffraw", "malformed envelope", now)],
        statuses=[
            GatewayStatus("c1", "gw1", "online", {"state": "online", "n": 1}, now),
            GatewayStatus("c1", "gw1", "offline", {"state": "offline"}, now.replace(year=now.year + 1)),
        ],
    )
    assert (res.dead_letters, res.statuses) == (1, 1)
    writer.close()
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT payload, reason FROM dead_letters").fetchall() == [
            (b"\x00\xffraw", "malformed envelope")
        ]
        assert conn.execute("SELECT state FROM gateways").fetchall() == [("offline",)]


def test_rows_are_stored_exactly_as_sent(migrated_url: str) -> None:
    """The hand-packed binary COPY rows against what the server reads back: times before and
    after PostgreSQL's 2000-01-01 origin, negative and fractional values, int metrics, non-ASCII
    ids, and the event attributes."""
    writer = BatchWriter(database_url=migrated_url)
    before_2000 = -86_400_000_001  # 1969-12-30T23:59:59.999999Z
    readings = [
        R("灯-07", before_2000, {"lamp_on": 1, "power_w": -0.125}),
        R("dev2", T0_US + 123_457, {"battery_pct": 87.5}, events=["sos_pressed"], reading_id="r-vendor-1"),
        R(
            "dev3",
            T0_US,
            {"water_level_mm": 1e300},
            events=["water_alarm", "cover_opened"],
            quality=["clock_skew"],
            device_ts_us=T0_US - 5,
        ),
    ]
    res = writer.write([decode(up_topic(), envelope(readings, batch_seq=1))])
    writer.close()
    assert (res.readings, res.rows, res.events) == (3, 4, 3)
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute(
            "SELECT (extract(epoch FROM time) * 1000000)::int8, device_id, metric, value"
            " FROM readings ORDER BY device_id, metric"
        ).fetchall()
        events = conn.execute(
            "SELECT device_id, event, attributes FROM events ORDER BY device_id, event"
        ).fetchall()
    assert sorted(rows) == sorted(
        [
            (before_2000, "灯-07", "lamp_on", 1.0),
            (before_2000, "灯-07", "power_w", -0.125),
            (T0_US + 123_457, "dev2", "battery_pct", 87.5),
            (T0_US, "dev3", "water_level_mm", 1e300),
        ]
    )
    assert events == [
        ("dev2", "sos_pressed", {"reading_id": "r-vendor-1", "gateway_id": "gw1"}),
        (
            "dev3",
            "cover_opened",
            {
                "reading_id": readings[2].reading_id,
                "gateway_id": "gw1",
                "quality": ["clock_skew"],
                "device_ts_us": T0_US - 5,
            },
        ),
        (
            "dev3",
            "water_alarm",
            {
                "reading_id": readings[2].reading_id,
                "gateway_id": "gw1",
                "quality": ["clock_skew"],
                "device_ts_us": T0_US - 5,
            },
        ),
    ]


def test_two_writers_claiming_the_same_readings_store_them_once(migrated_url: str) -> None:
    """Gateways' resends racing in two workers: the second COPY of an id waits for the first
    transaction, fails on the unique index once it commits, and falls back to the slow path.

    The race is made to happen and shown: writer A is held inside its transaction, after its
    claims and before its commit, by a row lock on a device it registers; writer B then claims
    the same ids and waits for A's transaction (pg_blocking_pids); A commits when the lock goes.
    """
    gate_device = "zz-gate"  # sorts last: A has registered every other device when it waits
    warm = BatchWriter(database_url=migrated_url)
    first = envelope([R(gate_device, T0_US, {"battery_pct": 50})], batch_seq=1, gateway_id="gw0")
    warm.write([decode(up_topic("c1", "gw0"), first)])
    warm.close()
    shared = door_readings(300, prefix="s")
    own_a = [
        *door_readings(10, start_us=T0_US + 10**9, prefix="a"),
        R(gate_device, T0_US + 10**9, {"battery_pct": 49}),
    ]
    own_b = door_readings(10, start_us=T0_US + 10**9, prefix="b")
    results: dict[str, WriteResult] = {}
    errors: list[BaseException] = []

    def run(name: str, readings: list[R]) -> None:
        writer = BatchWriter(database_url=named(migrated_url, f"race-{name}"))
        try:
            batch = decode(up_topic("c1", name), envelope(readings, batch_seq=1, gateway_id=name))
            results[name] = writer.write([batch])
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            errors.append(exc)
        finally:
            writer.close()

    a = threading.Thread(target=run, args=("gwa", shared + own_a))
    b = threading.Thread(target=run, args=("gwb", shared[100:] + own_b))
    with (
        psycopg.connect(named(migrated_url, "race-gate")) as gate,
        psycopg.connect(migrated_url, autocommit=True) as watch,
    ):
        gate.execute("SELECT 1 FROM devices WHERE device_id = %s FOR UPDATE", (gate_device,))
        gate_pid = session(watch, "race-gate")[0]
        try:
            a.start()
            a_pid, a_wait, a_blockers = wait_blocked(watch, "race-gwa", gate_pid)
            assert (a_wait, a_blockers) == ("Lock", [gate_pid]), "A never reached the device upsert"
            b.start()
            _, b_wait, b_blockers = wait_blocked(watch, "race-gwb", a_pid)
            # Both transactions are open at once and B waits on A's uncommitted claims.
            assert (b_wait, b_blockers) == ("Lock", [a_pid]), "B did not wait for A's claims"
            assert results == {}  # neither has committed
        finally:
            gate.commit()
            for thread in (a, b):
                if thread.ident is not None:  # a failed step may leave B unstarted
                    thread.join(30)
    assert not errors
    assert (results["gwa"].readings, results["gwa"].duplicate_readings) == (311, 0)
    assert (results["gwb"].readings, results["gwb"].duplicate_readings) == (10, 200)
    assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 3
    assert count(migrated_url, "SELECT count(*) FROM readings") == 1 + (300 + 10) * 3 + 1 + 10 * 3
    assert count(migrated_url, "SELECT count(*) FROM reading_ids") == 1 + 311 + 10

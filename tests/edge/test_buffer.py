"""The SQLite buffer, for real: classes, eviction at the cap, TTL, batches, quarantine, footprint."""

from __future__ import annotations

import random
import sqlite3
import uuid
import zlib
from pathlib import Path

import pytest

from edge.buffer import ALARM, TELEMETRY, Buffer, Intake, QuarantineEntry, Store
from edge.envelope import WireReading, decode_envelope, decode_reading, encode_envelope, encode_reading
from edge.errors import BufferError_, BufferFull

NOW = 1_750_000_000.0


def _reading(i: int, *, alarm: bool = False, rng: random.Random | None = None) -> bytes:
    rng = rng or random.Random(i)
    metrics: dict[str, int | float] = (
        {"battery_pct": 80}
        if alarm
        else {
            "contact_open": i % 2,
            "open_count": i,
            "battery_pct": rng.randrange(100),
            "rssi_dbm": -rng.randrange(40, 120),
        }
    )
    return encode_reading(
        WireReading(
            device_id=f"{rng.getrandbits(64):016x}",
            device_type="sos_button" if alarm else "door_contact",
            ts_us=int(NOW * 1e6) + i * 1000,
            received_at_us=int(NOW * 1e6) + i * 1000 + rng.randrange(5000),
            metrics=metrics,
            events=("sos_pressed",) if alarm else (),
            quality=(),
            profile="generic_lorawan/sos_button" if alarm else "generic_lorawan/door_contact",
            reading_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )
    )


def _store(
    path: Path,
    *,
    max_bytes: int = 1 << 30,
    telemetry_max_age_s: float = 7 * 86400,
    chunk_max: int = 500,
    wall: list[float] | None = None,
    quarantine_max_rows: int = 10_000,
) -> Store:
    clock = wall if wall is not None else [NOW]
    return Store(
        path,
        max_bytes=max_bytes,
        telemetry_max_age_s=telemetry_max_age_s,
        durability="full",
        chunk_max=chunk_max,
        quarantine_max_rows=quarantine_max_rows,
        quarantine_max_payload_bytes=4096,
        wall=lambda: clock[0],
    )


def _build(seq: int, cls: str, readings: bytes, counters: dict[str, int]) -> bytes:
    return encode_envelope(
        gateway_id="gw",
        community_id="c",
        batch_seq=seq,
        batch_class=cls,  # type: ignore[arg-type]
        created_at_us=0,
        counters={"evicted": counters["evicted"]},
        readings=readings,
    )


def _intake(records: list[tuple[bytes, bool]], at_s: int = int(NOW)) -> Intake:
    intake = Intake()
    for data, alarm in records:
        intake.add_reading(data, alarm=alarm, at_s=at_s)
    return intake


def _drain(store: Store, batch_class: int) -> list[WireReading]:
    out = []
    while (batch := store.form_batch(batch_class, 500, _build)) is not None:
        out += decode_envelope(batch.payload).readings
        store.delete_batch(batch.seq)
    return out


def test_batches_are_fixed_and_resent_byte_identical_after_reopen(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    records = [_reading(i) for i in range(1200)]
    for i in range(0, 1200, 100):
        store.commit(_intake([(r, False) for r in records[i : i + 100]]))
    first = store.form_batch(TELEMETRY, 500, _build)
    assert first is not None
    assert first.count == 500
    store.close()  # as a crash would leave it: the batch formed, no PUBACK yet
    store = _store(tmp_path / "b.db")
    again = store.batches()
    assert [(b.seq, b.payload) for b in again] == [(first.seq, first.payload)]
    second = store.form_batch(TELEMETRY, 500, _build)
    assert second is not None
    assert second.seq == first.seq + 1
    store.delete_batch(first.seq)
    store.delete_batch(second.seq)
    rest = _drain(store, TELEMETRY)
    got = [*decode_envelope(first.payload).readings, *decode_envelope(second.payload).readings, *rest]
    assert [encode_reading(r) for r in got] == records
    assert store.counters()["readings_sent"] == 1200
    assert store.stats().depth == 0


def test_a_batch_of_whole_chunks_keeps_them_in_place_and_resends_byte_for_byte(tmp_path: Path) -> None:
    """Forming a batch writes its header and chunk range, not a copy of the readings; the chunks
    are neither formed again, evicted nor expired while the batch is in flight, and go with it."""
    path = tmp_path / "b.db"
    store = _store(path)
    for k in range(3):
        store.commit(_intake([(_reading(100 * k + i), False) for i in range(100)]))
    formed = store.form_batch(TELEMETRY, 250, _build)  # two whole chunks fit, the third waits
    assert formed is not None
    assert formed.count == 200
    header, first, last = store.conn.execute(
        "SELECT payload, first_chunk, last_chunk FROM batches WHERE seq = ?", (formed.seq,)
    ).fetchone()
    assert len(header) < 200  # the envelope up to its readings
    assert formed.payload.startswith(bytes(header))
    assert (last - first, store.conn.execute("SELECT count(*) FROM telemetry").fetchone()[0]) == (1, 3)
    assert store.stats().telemetry_readings == 100
    assert store.stats().batched_readings == 200
    assert store.expire() == 0  # nothing is older than the TTL here; nor are batched chunks counted
    store.close()
    again = _store(path)  # a restart: the same bytes go out again
    assert [(b.seq, b.payload) for b in again.batches()] == [(formed.seq, formed.payload)]
    second = again.form_batch(TELEMETRY, 250, _build)
    assert second is not None
    assert second.count == 100
    again.delete_batch(formed.seq)
    assert again.conn.execute("SELECT count(*) FROM telemetry").fetchone()[0] == 1
    again.delete_batch(second.seq)
    assert again.stats().depth == 0
    # New chunks after every batched one was deleted get ids above them, not the freed ones.
    again.commit(_intake([(_reading(1000), False)]))
    third = again.form_batch(TELEMETRY, 250, _build)
    assert third is not None
    assert decode_envelope(third.payload).readings[0] == decode_reading(_reading(1000))
    again.close()


def test_an_older_agents_buffer_is_upgraded_and_its_batches_read_as_they_are(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = _store(path)
    store.commit(_intake([(_reading(i), False) for i in range(10)]))
    envelope = _build(7, "telemetry", b"\x90", {"evicted": 0})  # no readings: an empty array
    store.close()
    # What an agent of schema version 1 left: batches holding whole envelopes, raw or compressed.
    with sqlite3.connect(path) as conn:
        conn.executescript(
            "ALTER TABLE batches RENAME TO new_batches; "
            "CREATE TABLE batches (seq INTEGER PRIMARY KEY, class INTEGER NOT NULL, n INTEGER NOT NULL, "
            "at_min INTEGER NOT NULL, payload BLOB NOT NULL); DROP TABLE new_batches; "
            "UPDATE meta SET value = 1 WHERE key = 'schema_version'; "
            "DELETE FROM meta WHERE key IN ('alarm_batched', 'telemetry_batched');"
        )
        conn.execute("INSERT INTO batches VALUES (7, ?, 0, 0, ?)", (TELEMETRY, envelope))
        conn.execute("INSERT INTO batches VALUES (8, ?, 0, 0, ?)", (TELEMETRY, zlib.compress(envelope, 1)))
    conn.close()
    upgraded = _store(path)
    assert upgraded.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == 3
    assert [(b.seq, b.payload) for b in upgraded.batches()] == [(7, envelope), (8, envelope)]
    assert upgraded.stats().telemetry_readings == 10  # its chunks are not taken for batched
    upgraded.delete_batch(7)
    upgraded.delete_batch(8)
    formed = upgraded.form_batch(TELEMETRY, 500, _build)
    assert formed is not None
    assert formed.count == 10
    upgraded.close()


def test_a_freed_page_is_not_written_again_as_zeros(tmp_path: Path) -> None:
    """Debian's SQLite zeroes freed pages by default (SECURE_DELETE): each batch deleted after
    its PUBACK cost its size again in writes. The buffer turns that to FAST."""
    store = _store(tmp_path / "b.db")
    assert store.conn.execute("PRAGMA secure_delete").fetchone()[0] == 2  # FAST
    store.close()


def test_large_chunk_is_split_when_the_batch_size_is_lowered(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    records = [_reading(i) for i in range(300)]
    store.commit(_intake([(r, False) for r in records]))
    batch = store.form_batch(TELEMETRY, 120, _build)
    assert batch is not None
    assert batch.count == 120
    assert [encode_reading(r) for r in decode_envelope(batch.payload).readings] == records[:120]
    assert store.stats().telemetry_readings == 180


def test_alarm_and_telemetry_are_separate_lanes(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    store.commit(_intake([(_reading(i, alarm=i % 10 == 0), i % 10 == 0) for i in range(100)]))
    stats = store.stats()
    assert (stats.alarm_readings, stats.telemetry_readings) == (10, 90)
    alarms = _drain(store, ALARM)
    assert len(alarms) == 10
    assert all(r.events == ("sos_pressed",) for r in alarms)


def test_cap_evicts_telemetry_oldest_first_never_alarms_with_exact_counts(tmp_path: Path) -> None:
    cap = 2 << 20
    store = _store(tmp_path / "b.db", max_bytes=cap)
    rng = random.Random(1)
    sent_telemetry: list[bytes] = []
    sent_alarm: list[bytes] = []
    evicted = 0
    i = 0
    while evicted < 20_000:
        batch = []
        for _ in range(200):
            alarm = rng.random() < 0.02
            data = _reading(i, alarm=alarm, rng=rng)
            (sent_alarm if alarm else sent_telemetry).append(data)
            batch.append((data, alarm))
            i += 1
        evicted += store.commit(_intake(batch))
        assert store.disk_bytes() <= cap, f"{store.disk_bytes()} bytes on disk, cap {cap}"
    counters = store.counters()
    assert counters["evicted"] == evicted
    stats = store.stats()
    assert stats.alarm_readings == len(sent_alarm)  # no alarm lost
    assert stats.telemetry_readings + evicted == len(sent_telemetry)
    # What is left is exactly the newest telemetry, in order: the oldest went first.
    left = [encode_reading(r) for r in _drain(store, TELEMETRY)]
    assert left == sent_telemetry[evicted:]
    assert [encode_reading(r) for r in _drain(store, ALARM)] == sent_alarm


def test_alarms_alone_at_the_cap_raise_buffer_full(tmp_path: Path) -> None:
    cap = 1 << 20
    store = _store(tmp_path / "b.db", max_bytes=cap)
    rng = random.Random(2)

    def fill() -> None:
        for i in range(100_000):
            store.commit(_intake([(_reading(i * 50 + j, alarm=True, rng=rng), True) for j in range(50)]))

    with pytest.raises(BufferFull):
        fill()
    assert store.disk_bytes() <= cap
    assert store.counters()["evicted"] == 0


def test_ttl_drops_old_telemetry_and_counts_it(tmp_path: Path) -> None:
    clock = [NOW]
    store = _store(tmp_path / "b.db", telemetry_max_age_s=3600, wall=clock)
    store.commit(_intake([(_reading(i), False) for i in range(40)], at_s=int(NOW - 7200)))
    store.commit(_intake([(_reading(i, alarm=True), True) for i in range(3)], at_s=int(NOW - 7200)))
    store.commit(_intake([(_reading(i), False) for i in range(40, 50)], at_s=int(NOW - 60)))
    assert store.expire() == 40
    stats = store.stats()
    assert (stats.alarm_readings, stats.telemetry_readings) == (3, 10)
    assert stats.counters["expired"] == 40


def test_quarantine_is_bounded_oldest_dropped_and_counted(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db", quarantine_max_rows=5)
    intake = Intake()
    for i in range(8):
        intake.quarantine.append(
            QuarantineEntry(
                at_us=i, topic=f"t/{i}", reason="malformed_json", message="bad", payload=b"x" * 10_000
            )
        )
    store.commit(intake)
    rows = store.quarantine_rows(100)
    assert [entry.topic for _, entry, _ in rows] == [f"t/{i}" for i in range(7, 2, -1)]
    assert all(len(entry.payload) == 4096 and size == 10_000 for _, entry, size in rows)
    counters = store.counters()
    assert (counters["quarantined"], counters["quarantine_dropped"]) == (8, 3)


def test_disk_per_buffered_reading_is_under_200_bytes(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    n = 100_000
    for start in range(0, n, 500):
        store.commit(_intake([(_reading(i), False) for i in range(start, start + 500)]))
    store.checkpoint()
    per_reading = store.disk_bytes() / n
    assert per_reading < 200, per_reading


async def test_async_face_runs_on_one_worker_thread(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", max_bytes=1 << 30, wall=lambda: NOW)
    try:
        await buffer.commit(_intake([(_reading(1), False), (_reading(2, alarm=True), True)]))
        stats = await buffer.stats()
        assert stats.depth == 2
        batch = await buffer.form_batch(ALARM, 500, _build)
        assert batch is not None
        assert decode_reading(encode_reading(decode_envelope(batch.payload).readings[0])).events == (
            "sos_pressed",
        )
        await buffer.delete_batch(batch.seq)
        assert (await buffer.counters())["readings_sent"] == 1
    finally:
        await buffer.close()


def test_a_full_disk_raises_sqlites_reason_not_the_failed_rollback(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    store.commit(_intake([(_reading(i), False) for i in range(10)]))
    before = store.stats()
    store.set_max_pages(int(store.conn.execute("PRAGMA page_count").fetchone()[0]))
    big = _intake([(_reading(i, alarm=True), True) for i in range(10, 5000)])
    with pytest.raises(BufferError_) as caught:
        store.commit(big)
    assert "database or disk is full" in str(caught.value)
    assert "no transaction is active" not in str(caught.value)
    assert caught.value.sqlite_error == "SQLITE_FULL"
    assert not store.conn.in_transaction
    assert store.stats().depth == before.depth  # nothing half-written
    store.set_max_pages(None)  # space returns: the same intake commits
    store.commit(big)
    assert store.stats().alarm_readings == 4990

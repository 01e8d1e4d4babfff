"""Device rows go to a log in the commit of their readings and are folded into the table now and
then: exact over reopening, folding and failed commits, and a commit of a few devices costs a few
pages, not a page per device."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from edge import devicelog
from edge.buffer import DeviceRow, Intake, Store
from edge.errors import BufferError_
from tests.edge.test_buffer import _intake, _reading, _store


def _rows(intake: Intake, rows: dict[str, DeviceRow]) -> Intake:
    intake.devices.update(rows)
    return intake


def _row(seen: int, *, state: bytes | None = None, offline: bool = False) -> DeviceRow:
    return DeviceRow(last_seen_us=seen, offline=offline, state=state)


def _log_rows(store: Store) -> int:
    return int(store.conn.execute("SELECT coalesce(sum(n), 0) FROM device_log").fetchone()[0])


def _table(store: Store) -> dict[str, int]:
    rows = store.conn.execute("SELECT device_id, last_seen_us FROM devices ORDER BY device_id").fetchall()
    return {str(d): int(seen) for d, seen in rows}


def test_rows_come_back_after_reopening_the_newest_winning(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    store.commit(_rows(_intake([(_reading(1), False)]), {"a": _row(1, state=b"\x81"), "b": _row(2)}))
    store.commit(_rows(_intake([(_reading(2), False)]), {"a": _row(3, state=b"\x82", offline=True)}))
    assert _table(store) == {}  # only logged so far
    assert _log_rows(store) == 3
    store.close()
    again = _store(tmp_path / "b.db")
    assert again.devices() == {"a": _row(3, state=b"\x82", offline=True), "b": _row(2)}
    again.close()


def test_a_commit_of_many_devices_is_logged_in_blobs_of_bounded_size(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    rows = {f"d{i:04d}": _row(i) for i in range(devicelog.BLOB_ROWS * 2 + 7)}
    store.commit(_rows(Intake(), rows))
    blobs = store.conn.execute("SELECT n FROM device_log ORDER BY seq").fetchall()
    assert [n for (n,) in blobs] == [devicelog.BLOB_ROWS, devicelog.BLOB_ROWS, 7]
    assert store.devices() == rows
    store.close()


def test_the_log_is_folded_into_the_table_once_it_holds_enough_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(devicelog, "FOLD_ROWS", 5)
    store = _store(tmp_path / "b.db")
    store.commit(_rows(Intake(), {"a": _row(1), "b": _row(1)}))
    store.commit(_rows(Intake(), {"a": _row(2), "c": _row(2)}))
    assert (_log_rows(store), _table(store)) == (4, {})
    store.commit(_rows(Intake(), {"a": _row(3)}))  # the fifth row: folded in this commit
    assert (_log_rows(store), _table(store)) == (0, {"a": 3, "b": 1, "c": 2})
    store.commit(_rows(Intake(), {"b": _row(4)}))
    assert (_log_rows(store), _table(store)) == (1, {"a": 3, "b": 1, "c": 2})
    store.close()
    again = _store(tmp_path / "b.db")  # the count of logged rows is read back too
    assert {d: r.last_seen_us for d, r in again.devices().items()} == {"a": 3, "b": 4, "c": 2}
    for seen in (5, 6, 7, 8):
        again.commit(_rows(Intake(), {"d": _row(seen)}))
    assert (_log_rows(again), _table(again)) == (0, {"a": 3, "b": 4, "c": 2, "d": 8})
    again.close()


def test_a_failed_commit_keeps_neither_its_readings_nor_its_rows(tmp_path: Path) -> None:
    store = _store(tmp_path / "b.db")
    store.commit(_rows(_intake([(_reading(1), False)]), {"a": _row(1)}))
    before = store.stats().telemetry_readings
    store.set_max_pages(int(store.conn.execute("PRAGMA page_count").fetchone()[0]))
    big = _intake([(_reading(i), False) for i in range(2000)])
    with pytest.raises(BufferError_, match="full"):
        store.commit(_rows(big, {"a": _row(2), "b": _row(2)}))
    store.set_max_pages(None)
    assert store.stats().telemetry_readings == before
    assert store.devices() == {"a": _row(1)}
    assert _log_rows(store) == 1
    store.close()


def test_a_schema_2_buffer_keeps_its_device_rows(tmp_path: Path) -> None:
    path = tmp_path / "b.db"
    store = _store(path)
    store.close()
    with sqlite3.connect(path) as conn:  # what an agent of schema version 2 left
        conn.executescript(
            "DROP TABLE device_log; UPDATE meta SET value = 2 WHERE key = 'schema_version'; "
            "INSERT INTO devices VALUES ('a', x'81', 7, 1), ('b', NULL, 9, 0);"
        )
    conn.close()
    upgraded = _store(path)
    assert upgraded.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0] == 3
    assert upgraded.devices() == {"a": _row(7, state=b"\x81", offline=True), "b": _row(9)}
    upgraded.commit(_rows(Intake(), {"b": _row(10)}))
    assert upgraded.devices()["b"] == _row(10)
    upgraded.close()


def test_a_commit_of_a_few_devices_writes_a_few_pages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rows updated in place dirtied a page of the table per device (2,000 devices: about 25
    pages, five random devices a commit: about five of them); the log adds one tail page."""
    monkeypatch.setattr(devicelog, "FOLD_ROWS", 4000)
    store = _store(tmp_path / "b.db")
    devices = [f"dev-{i:05d}" for i in range(2000)]
    store.commit(_rows(Intake(), {d: _row(1, state=b"\x81\xa1x\x01") for d in devices}))
    store.commit(_rows(Intake(), {d: _row(2, state=b"\x81\xa1x\x01") for d in devices}))
    assert _log_rows(store) == 0  # folded
    assert len(_table(store)) == 2000
    store.checkpoint()
    commits = 40
    for i in range(commits):
        picked = {devices[(i * 397 + k * 1009) % 2000]: _row(10 + i) for k in range(5)}
        store.commit(_rows(_intake([(_reading(i), False)]), picked))
    _, frames, _ = store.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    # each commit: the chunk's page, the log's tail page, the counters' page, and their parents
    assert frames <= commits * 4, frames  # about 3 (in place: about 5.5)
    assert store.devices()[devices[39 * 397 % 2000]].last_seen_us == 49  # the last commit's
    store.close()

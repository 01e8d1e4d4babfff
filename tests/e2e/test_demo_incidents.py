"""The demo screen's open incidents, read from a real database: empty, filled by hand, and a database
without the table; the terminal panel and the pipe's summary line both show them."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb
from rich.console import Console

from cloud.store.migrate import migrate
from simulators.demo.app import Snapshot, plain_line, render
from simulators.demo.incidents import LATEST, read_open_incidents
from simulators.demo.pipeline import DemoPipeline

pytestmark = pytest.mark.integration

T0 = datetime(2025, 6, 1, tzinfo=UTC)


@pytest.fixture
def migrated_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
    return database_url


def insert(
    conn: psycopg.Connection[object], rule: str, severity: str, at: datetime, *, closed: bool = False
) -> None:
    conn.execute(
        "INSERT INTO incidents (rule, subject, subject_kind, severity, latched, community_id, device_id,"
        " title_zh, title_en, detail_zh, detail_en, started_at, detected_at, closed_at, last_occurrence_at,"
        " evidence, feed_seq) VALUES (%s, %s, 'device', %s, false, 'demo', %s, '标题', %s, '详情', 'detail',"
        " %s, %s, %s, %s, %s, 1)",
        (
            rule,
            f"dev-{rule}",
            severity,
            f"dev-{rule}",
            f"{rule} on dev-{rule}",
            at,
            at,
            at if closed else None,
            at,
            Jsonb([]),
        ),
    )


def screen(snap: Snapshot, tmp_path: Path) -> str:
    console = Console(record=True, width=200, force_terminal=False)
    console.print(render(DemoPipeline(root=tmp_path), snap, time.monotonic(), None))
    return console.export_text()


def test_an_empty_table_shows_none(migrated_url: str, tmp_path: Path) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        found = read_open_incidents(conn)
    assert (found.total, found.latest) == (0, [])
    snap = Snapshot(at=0.0, incidents=found)
    assert plain_line(snap).endswith("open incidents critical 0, major 0, minor 0, info 0; pushes 0")
    text = screen(snap, tmp_path)
    assert "open incidents  none" in text
    assert "open incidents (latest 5)" in text


def test_open_incidents_by_severity_and_the_latest(migrated_url: str, tmp_path: Path) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        insert(conn, "sos_pressed", "critical", T0 + timedelta(minutes=1))
        insert(conn, "manhole_open", "major", T0 + timedelta(minutes=2))
        insert(conn, "battery_low", "minor", T0 + timedelta(minutes=3), closed=True)
        for i in range(LATEST):
            insert(conn, f"lamp_failure_{i}", "minor", T0 + timedelta(hours=1, minutes=i))
        found = read_open_incidents(conn)
    assert found.by_severity == {"critical": 1, "major": 1, "minor": LATEST, "info": 0}
    assert [line.rule for line in found.latest] == [f"lamp_failure_{i}" for i in reversed(range(LATEST))]
    snap = Snapshot(at=0.0, incidents=found)
    assert f"open incidents critical 1, major 1, minor {LATEST}, info 0" in plain_line(snap)
    text = screen(snap, tmp_path)
    assert f"open incidents  {LATEST + 2} (critical 1, major 1, minor {LATEST}, info 0)" in text
    assert "2025-06-01 01:04:00" in text
    assert "lamp_failure_4 on dev-lamp_failure_4" in text
    assert "sos_pressed" not in text  # open, but not among the latest five


def test_a_database_without_the_table_reads_as_empty(database_url: str) -> None:
    with psycopg.connect(database_url, autocommit=True) as conn:
        found = read_open_incidents(conn)
        assert found.total == 0
        assert conn.execute("SELECT 1").fetchone() == (1,)  # the connection is still usable


def test_the_latest_pushes_newest_first(tmp_path: Path) -> None:
    from simulators.demo.incidents import push_lines
    from simulators.pushes import Kind, Received

    def got(at: float, kind: Kind, text: str, mentions: tuple[str, ...] = ()) -> Received:
        return Received(kind=kind, robot="r", at=at, body={}, text=text, mentions=mentions,
                        idempotency_key=None, duplicate=False)  # fmt: skip

    t0 = T0.timestamp()
    lines = push_lines(
        [
            got(t0, "wecom", "【紧急】SOS 求助 · 请立即受理\n地点：阳光小区", ("13800000001",)),
            got(t0 + 60, "feishu", "【一般】12 条新事件（阳光小区） · 汇总\n..."),
        ]
    )
    snap = Snapshot(at=0.0, pushes=lines, pushes_total=7)
    text = screen(snap, tmp_path)
    assert "pushes (7 received; latest 5)" in text
    first, second = text.index("12 条新事件"), text.index("SOS 求助")
    assert first < second  # newest first
    assert "13800000001" in text
    assert "WeCom" in text
    assert plain_line(snap).endswith("pushes 7")

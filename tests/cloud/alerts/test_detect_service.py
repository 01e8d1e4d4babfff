"""Detection against a real database: the history queries, the alert service's detection rounds
(incidents written once, kept across a restart, cleared when the resident is active again), and
``linli detect run|batteries``."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psycopg
import pytest

from cloud.alerts.detect.history import ACTIVITY, MESSAGES
from cloud.alerts.detect.round import DetectionRound
from cloud.alerts.detect.runner import STATE_PREFIX, CommunityDetection, detector_rules
from cloud.alerts.detect.source import SeriesCache, load_history
from cloud.alerts.directory import build_directory
from cloud.alerts.engine import Engine
from cloud.alerts.feed import Partition
from cloud.alerts.rules import RuleBook
from cloud.alerts.service import AlertService
from cloud.config import AlertsConfig, RetentionConfig
from cloud.ingest.envelope import decode
from cloud.store.mode import prepare
from cloud.store.writer import BatchWriter
from device_profiles import ProfileSet
from device_profiles.inventory import Device, Inventory, Location
from tests.cloud.conftest import R, envelope, up_topic

pytestmark = pytest.mark.integration

S = 1_000_000
H = 3600
DAY = 86_400
#: local midnight (Asia/Shanghai) starting Monday 2 March 2026
DAY0 = int(datetime(2026, 3, 2, tzinfo=UTC).timestamp()) - 8 * H
DOOR = "a84041000181c0d1"
PROFILE = "generic_lorawan/door_contact"


def inventory() -> Inventory:
    return Inventory(
        [
            Device(
                device_id=DOOR,
                device_type="door_contact",
                profile=PROFILE,
                community_id="c1",
                gateway_id="gw1",
                location=Location(lat=31.23, lon=121.47, building="3", unit="502"),
                resident_id="res-7",
                living_alone=True,
            )
        ]
    )


def door(t: int, open_: int, battery: float) -> R:
    metrics = {"contact_open": open_, "battery_pct": round(battery, 1)}
    return R(DOOR, t * S, metrics, device_type="door_contact", profile=PROFILE)


def history(days: int, *, until: int, quiet_from: int | None = None) -> list[R]:
    """Openings about 07:00, 12:00 and 18:00 each day, hourly closed reports, the battery falling
    one point a day from 30 %; no opening after `quiet_from`, nothing after `until`."""
    rng = np.random.default_rng(3)
    out = []
    for d in range(days + 1):
        base = DAY0 + d * DAY
        for hour in (7.0, 12.0, 18.0):
            t = base + int((hour + rng.normal(0, 0.3)) * H)
            out.append(door(t, 1, 30 - (t - DAY0) / DAY))
            out.append(door(t + 20, 0, 30 - (t - DAY0) / DAY))
        for hour in range(24):
            t = base + hour * H + 1800
            out.append(door(t, 0, 30 - (t - DAY0) / DAY))
    quiet_us = (quiet_from if quiet_from is not None else until) * S
    kept = (
        r for r in out if r.ts_us <= until * S and (r.ts_us <= quiet_us or r.metrics["contact_open"] == 0)
    )
    return sorted(kept, key=lambda r: r.ts_us)


def store(url: str, readings: list[R], seq: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        prepare(conn, RetentionConfig())  # readings_hourly, as the ingest makes it
    writer = BatchWriter(database_url=url)
    for i in range(0, len(readings), 400):
        writer.write([decode(up_topic(), envelope(readings[i : i + 400], batch_seq=seq + i))])
    writer.close()


@contextmanager
def service(url: str, now: int) -> Iterator[AlertService]:
    profiles = ProfileSet.shipped()
    directory = build_directory(inventory=inventory(), profiles=profiles, timezone="Asia/Shanghai")
    rules = RuleBook.load()
    config = AlertsConfig(poll_interval_s=0.1, tick_interval_s=0.1)
    svc = AlertService(
        database_url=url,
        config=config,
        make_engine=lambda: Engine(rules=rules, directory=directory, clock="wall"),
        make_detection=lambda: DetectionRound(directory=directory, partition=Partition(k=0, n=1)),
        clock_us=lambda: now * S,
    )
    stop = threading.Event()
    thread = threading.Thread(target=svc.run, args=(stop,), name="alerts")
    thread.start()
    try:
        yield svc
    finally:
        stop.set()
        thread.join(timeout=30)


def detection_state(url: str) -> CommunityDetection | None:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT state FROM alert_state WHERE key = %s", (STATE_PREFIX + "c1",)).fetchone()
    return msgspec.msgpack.decode(row[0], type=CommunityDetection) if row else None


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.05)  # polling a database for a state: not synchronising on the sleep itself
    raise AssertionError(f"timed out waiting for {what}")


def incidents(url: str) -> list[tuple[str, str, str, str, int, bool]]:
    with psycopg.connect(url) as conn:
        return [
            (r[0], r[1], r[2], r[3], int(r[4]), r[5] is not None)
            for r in conn.execute(
                "SELECT rule, subject, severity, detail_en, occurrences, cleared_at FROM incidents"
                " WHERE rule IN ('routine_deviation', 'battery_end_of_life') ORDER BY rule"
            )
        ]


def test_history_queries_read_what_the_ingest_stored(migrated_url: str) -> None:
    now = DAY0 + 20 * DAY + 11 * H
    stored = history(20, until=DAY0 + 19 * DAY + 19 * H)
    store(migrated_url, stored, 1)
    directory = build_directory(inventory=inventory(), profiles=ProfileSet.shipped())
    devices = list(directory.devices.values())
    rules = detector_rules(RuleBook.load().rules)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        h = load_history(conn, devices=devices, rules=rules, now=now)
    opened = sorted(r.ts_us // S for r in stored if r.metrics.get("contact_open") == 1)
    assert list(h.get(ACTIVITY).t) == opened
    messages = h.get(MESSAGES)
    start = now - 15 * DAY  # what the routine detector reads (covers the drift detector's 14 days + 13 h)
    assert messages.v.sum() == len([r for r in stored if r.ts_us // S // H * H > start])
    battery = h.get("battery_pct")
    assert len(battery) > 20  # six-hour means
    assert np.all(np.diff(battery.v) < 0)  # falling one point a day

    # read incrementally: a round reads what is new (and the overlap), and sees what a full read sees
    cache = SeriesCache()
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        load_history(conn, devices=devices, rules=rules, now=now, cache=cache)
        first = cache.rows_read
        more = history(21, until=DAY0 + 21 * DAY)[len(stored) :]
        store(migrated_url, more, 5_000)
        later = now + 15 * H
        cache.rows_read = 0
        oldest = min(r.ts_us for r in more) // S  # the feed tells the service
        step = load_history(conn, devices=devices, rules=rules, now=later, cache=cache, late=oldest)
        full = load_history(conn, devices=devices, rules=rules, now=later)
    assert cache.rows_read < first / 5
    for name in (ACTIVITY, MESSAGES):
        assert list(step.get(name).t) == list(full.get(name).t), name
        assert list(step.get(name).v) == list(full.get(name).v), name


def test_the_service_writes_detector_incidents_once_and_clears_them(
    migrated_url: str, tmp_path: Path
) -> None:
    quiet_from = DAY0 + 24 * DAY + 19 * H  # nothing after the evening opening of day 24
    now = DAY0 + 25 * DAY + 12 * H + 1800  # 12:30 next day: no morning opening
    store(migrated_url, history(25, until=now, quiet_from=quiet_from), 1)  # hourly reports go on
    with service(migrated_url, now):
        found = wait_for(lambda: len(got := incidents(migrated_url)) == 2 and got, "two incidents")
    (battery, b_subject, b_sev, b_detail, b_n, _), (rule, subject, severity, detail, n, cleared) = found
    assert (rule, subject, severity, n, cleared) == ("routine_deviation", "res-7", "minor", 1, False)
    assert "no door activity since 18:" in detail
    assert "yesterday" in detail
    assert detail.endswith("Call or visit.")
    assert (battery, b_subject, b_sev, b_n) == ("battery_end_of_life", DOOR, "info", 1)
    assert "reaches 5 % in about" in b_detail

    # a restart 20 minutes later: the same findings, nothing written again
    later = now + 20 * 60
    with service(migrated_url, later) as svc:
        wait_for(
            lambda: (st := detection_state(migrated_url)) and st.last_run["routine_deviation"] == later,
            "a detection round after the restart",
        )
        assert svc.counters["alerts_detector_actions_total"] == 0
    assert [(r[0], r[4], r[5]) for r in incidents(migrated_url)] == [
        ("battery_end_of_life", 1, False),
        ("routine_deviation", 1, False),
    ]

    # the resident opens the door: the routine incident clears on the next round
    back = later + 5 * 60
    store(migrated_url, [door(back, 1, 9.0), door(back + 20, 0, 9.0)], 10_000)
    with service(migrated_url, back + 11 * 60):
        wait_for(lambda: incidents(migrated_url)[1][5], "the routine incident cleared")

    # the command line sees the same
    config = tmp_path / "cloud.toml"
    inv = tmp_path / "inventory.yaml"
    inventory().dump(inv)
    config.write_text(f'database_url = "{migrated_url}"\n[alerts]\ninventory = "{inv}"\n')
    at = datetime.fromtimestamp(now, tz=UTC).isoformat()

    def linli(*args: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "device_profiles.console", "detect", *args, "--config", str(config)]
        return subprocess.run([*cmd, "--at", at], capture_output=True, text=True, timeout=60, check=False)

    run = linli("run")
    assert run.returncode == 0, run.stderr
    assert f"c1 routine_deviation {DOOR}: After door activity around 18:" in run.stdout
    assert f"c1 battery_end_of_life {DOOR}: Battery at" in run.stdout
    listed = linli("batteries", "--within", "10d")
    assert listed.returncode == 0, listed.stderr
    assert "c1: 1 batteries empty within 10d" in listed.stdout
    assert "(door_contact, building 3 flat 502)" in listed.stdout
    bad = linli("batteries", "--within", "soon")
    assert bad.returncode == 2
    assert "--within" in bad.stderr

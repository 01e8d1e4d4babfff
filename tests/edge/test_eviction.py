"""Buffer cap and TTL through the running agent, between real brokers: alarms are never lost,
telemetry is evicted oldest first (or dropped past its TTL), and the envelopes report exact counts."""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.edge.conftest import AgentProcess, Collector, Fleet, Publisher, Rig

pytestmark = pytest.mark.integration

DOOR = "generic_lorawan/door_contact"
SOS = "generic_lorawan/sos_button"


def _publish_backlog(
    pub: Publisher, fleet: Fleet, telemetry: int, alarm_every: int
) -> tuple[list[str], list[str]]:
    doors, soss = fleet.of(DOOR), fleet.of(SOS)
    telemetry_ids: list[str] = []
    alarm_ids: list[str] = []
    infos = []
    for i in range(telemetry):
        topic, payload, r = fleet.payload(doors[i % len(doors)], metrics={"contact_open": 0.0})
        infos.append(pub.publish(topic, payload))
        telemetry_ids.append(r.reading_id)
        if i % alarm_every == alarm_every // 2:
            topic, payload, r = fleet.payload(soss[i % len(soss)], events=("sos_pressed",))
            infos.append(pub.publish(topic, payload))
            alarm_ids.append(r.reading_id)
    for info in infos:
        info.wait_for_publish(60)
    return telemetry_ids, alarm_ids


def _buffered(path: Path) -> int:
    """The buffer's persisted ``readings_buffered`` counter (committed with the readings)."""
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        row = conn.execute("SELECT value FROM counters WHERE name = 'readings_buffered'").fetchone()
    return int(row[0]) if row else 0


def _wait_buffered(path: Path, count: int, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while (n := _buffered(path)) < count and time.monotonic() < deadline:
        time.sleep(0.05)
    return n


def _start(rig: Callable[..., Rig], fleet: Fleet, buffer: dict[str, object]) -> Rig:
    """The agent running for `fleet` with these buffer settings, its cloud broker stopped."""
    started = rig(fleet, sections={"buffer": buffer})
    agent, cloud = started.agent, started.cloud
    agent.wait_log("connected", count=2)  # field and cloud: a link that never came up is not lost
    cloud.stop()
    agent.wait_log("connection_lost")
    return started


def test_cap_reached_evicts_telemetry_oldest_first_with_exact_counts_and_no_alarm_lost(
    tmp_path: Path, rig: Callable[..., Rig]
) -> None:
    fleet = Fleet({DOOR: 40, SOS: 4})
    cap = 1 << 20  # the smallest cap allowed: about ten thousand readings
    _, cloud, _, agent, col, pub = _start(rig, fleet, {"max_bytes": cap})
    telemetry_ids, alarm_ids = _publish_backlog(pub, fleet, telemetry=30_000, alarm_every=500)
    agent.wait_log("telemetry_evicted", timeout=60)
    published = len(telemetry_ids) + len(alarm_ids)
    assert _wait_buffered(tmp_path / "buffer.db", published, 60) == published  # the last commit
    disk = sum(p.stat().st_size for p in tmp_path.glob("buffer.db*"))
    assert disk <= cap, f"{disk} bytes on disk, the cap is {cap}"
    cloud.start()

    def counters(c: Collector) -> dict[str, int]:
        return c.envelopes[-1].counters if c.envelopes else {}

    def settled(c: Collector) -> bool:
        got = c.reading_ids()
        kept = sum(1 for r in telemetry_ids if r in got)
        return set(alarm_ids) <= got and kept + counters(c).get("evicted", 0) == len(telemetry_ids)

    assert col.wait_for(settled, 60), (len(col.reading_ids()), counters(col))
    evicted = counters(col)["evicted"]
    assert 0 < evicted < len(telemetry_ids)
    got = col.reading_ids()
    # Oldest first, exactly: what arrived is the newest len - evicted, nothing older.
    assert [r for r in telemetry_ids if r in got] == telemetry_ids[evicted:]
    evicted_logged = sum(
        line.get("readings", 0) for line in agent.lines() if line.get("event") == "telemetry_evicted"
    )
    assert evicted_logged == evicted
    assert agent.terminate() == 0


def test_telemetry_past_its_ttl_is_dropped_and_counted_alarms_kept(rig: Callable[..., Rig]) -> None:
    fleet = Fleet({DOOR: 5, SOS: 2})
    _, cloud, _, agent, col, pub = _start(rig, fleet, {"telemetry_max_age_s": 2.0})
    telemetry_ids, alarm_ids = _publish_backlog(pub, fleet, telemetry=300, alarm_every=100)
    # Expiry runs in passes: wait until every telemetry reading has expired, not just the first pass.
    deadline = time.monotonic() + 30
    while _expired(agent) < len(telemetry_ids):
        assert time.monotonic() < deadline, (_expired(agent), len(telemetry_ids))
        agent.wait_log("telemetry_expired", count=agent.count("telemetry_expired") + 1, timeout=20)
    cloud.start()
    assert col.wait_for(lambda c: set(alarm_ids) <= c.reading_ids(), 20)
    # Fresh telemetry after the outage still flows.
    topic, payload, fresh = fleet.payload(fleet.of(DOOR)[0])
    pub.publish(topic, payload, wait=True)
    assert col.wait_for(lambda c: fresh.reading_id in c.reading_ids(), 20)
    assert not set(telemetry_ids) & col.reading_ids()
    assert col.envelopes[-1].counters["expired"] == len(telemetry_ids)
    assert agent.terminate() == 0


def _expired(agent: AgentProcess) -> int:
    return sum(line.get("readings", 0) for line in agent.lines() if line.get("event") == "telemetry_expired")

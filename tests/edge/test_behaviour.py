"""State events across restarts, liveness, status and Last Will, SIGHUP, the local endpoint."""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from simulators.services import MosquittoBroker, free_port
from tests.edge.conftest import AgentProcess, Collector, Dev, Fleet, Publisher, Rig, write_config

pytestmark = pytest.mark.integration

DOOR = "generic_lorawan/door_contact"
COVER = "generic_nbiot/manhole_cover"


def _quarantined(path: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as conn:
        return int(conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])


def _events(col: Collector, device_id: str) -> list[str]:
    return [e for r in col.readings() if r.device_id == device_id for e in r.events]


def test_state_events_and_no_false_event_after_restart(
    tmp_path: Path,
    rig: Callable[..., Rig],
) -> None:
    fleet = Fleet({DOOR: 1, COVER: 1})
    _, _, _, agent, col, pub = rig(fleet)
    door, cover = fleet.of(DOOR)[0], fleet.of(COVER)[0]

    def send(dev: Dev, **metrics: float) -> None:
        # NB-IoT payloads carry no message id: count the device's readings instead.
        before = sum(1 for r in col.readings() if r.device_id == dev.device_id)
        topic, payload, _ = fleet.payload(dev, metrics=metrics)
        pub.publish(topic, payload, wait=True)
        assert col.wait_for(
            lambda c: sum(1 for r in c.readings() if r.device_id == dev.device_id) > before, 10
        )

    send(door, contact_open=0.0)  # first value seen: no event
    send(door, contact_open=1.0)  # door_opened
    send(door, contact_open=1.0)
    send(cover, cover_open=0.0)
    send(cover, cover_open=1.0)  # cover_opened (alarm class)
    agent.kill9()
    agent.start()
    agent.wait_log("subscribed", count=2)
    send(door, contact_open=1.0)  # still open: no event after the restart
    send(cover, cover_open=1.0)
    assert agent.terminate() == 0
    agent.start()
    agent.wait_log("subscribed", count=3)
    send(door, contact_open=0.0)  # door_closed
    send(cover, cover_open=0.0)  # cover_closed
    assert _events(col, door.device_id) == ["door_opened", "door_closed"]
    assert _events(col, cover.device_id) == ["cover_opened", "cover_closed"]
    opened = [e for e in col.envelopes for r in e.readings if "cover_opened" in r.events]
    assert opened[0].batch_class == "alarm"
    assert agent.terminate() == 0


def test_liveness_offline_then_online_and_no_repeat_after_restart(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 3})
    a, b, newcomer = fleet.devices
    fleet.devices = [a, b]
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    field, cloud = make_broker(), make_broker()
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=inventory,
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        sections={
            "liveness": {
                "startup_grace_s": 0,
                "check_interval_s": 0.1,
                "offline_after_intervals": 2,
                "report_intervals_s": {"door_contact": 1.0},
            }
        },
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    # Device a keeps reporting; device b never does and goes offline after 2 x 1 s.
    deadline = time.monotonic() + 10.0
    while "device_offline" not in _events(col, b.device_id) and time.monotonic() < deadline:
        topic, payload, _ = fleet.payload(a)
        pub.publish(topic, payload)
        # The pacing is the thing under test: a reports every 0.2 s, well within its 2 s limit.
        time.sleep(0.2)
    assert "device_offline" in _events(col, b.device_id)
    assert "device_offline" not in _events(col, a.device_id)
    offline = next(e for e in col.envelopes for r in e.readings if "device_offline" in r.events)
    assert offline.batch_class == "alarm"
    topic, payload, _ = fleet.payload(b)
    pub.publish(topic, payload)
    assert col.wait_for(lambda c: _events(c, b.device_id) == ["device_offline", "device_online"], 5)
    # Silence again, then a restart: one more offline, never a repeated one.
    assert col.wait_for(lambda c: _events(c, b.device_id).count("device_offline") == 2, 6)
    assert col.wait_for(lambda c: "device_offline" in _events(c, a.device_id), 6)
    assert agent.terminate() == 0
    # A device new to the inventory starts its clock at the restart and is reported offline
    # 2 s later, by a check that also sees a and b long silent: a repeated offline of theirs
    # would come with the newcomer's (the same check, the same alarm batch) or before it.
    fleet.devices = [a, b, newcomer]
    fleet.inventory(inventory)
    agent.start()
    agent.wait_log("subscribed", count=2)
    assert col.wait_for(lambda c: "device_offline" in _events(c, newcomer.device_id), 10)
    assert _events(col, b.device_id).count("device_offline") == 2
    assert _events(col, a.device_id).count("device_offline") == 1
    assert agent.terminate() == 0


def test_status_retained_final_offline_and_last_will_on_kill(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
) -> None:
    fleet = Fleet({DOOR: 1})
    field, cloud = make_broker(), make_broker()
    port = free_port("127.0.0.1")
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=fleet.inventory(tmp_path / "inv.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        sections={"status": {"interval_s": 0.5}, "http": {"address": f"127.0.0.1:{port}"}},
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    assert col.wait_for(lambda c: len([s for s in c.status if s["state"] == "online"]) >= 2, 10)
    doc = col.status[-1]
    for key in (
        "buffer",
        "counters",
        "quarantine_count",
        "rates",
        "cpu_pct",
        "rss_bytes",
        "disk_free_bytes",
        "version",
        "uptime_s",
    ):
        assert key in doc, key
    assert {"depth", "oldest_age_s", "disk_bytes", "cap_bytes"} <= set(doc["buffer"])
    assert "evicted" in doc["counters"]
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    assert "linli_edge_buffer_depth" in text
    assert "linli_edge_evicted_total" in text
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
        assert resp.status == 200
    agent.kill9()
    assert col.wait_for(lambda c: c.status[-1]["state"] == "offline", 10)  # the Last Will
    agent.start()
    agent.wait_log("subscribed", count=2)
    assert col.wait_for(lambda c: c.status[-1]["state"] == "online", 10)
    assert agent.terminate() == 0
    assert col.wait_for(lambda c: c.status[-1]["state"] == "offline", 5)
    assert "buffer" in col.status[-1]  # the final status, not the will
    lines = [line["event"] for line in agent.lines()]
    last_run = lines[len(lines) - 1 - lines[::-1].index("starting") :]
    assert last_run.index("stopping") < last_run.index("drained") < last_run.index("stopped")


def test_sighup_reloads_the_inventory(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 2})
    field, cloud = make_broker(), make_broker()
    known, newcomer = fleet.devices
    fleet.devices = [known]
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    cfg = write_config(
        tmp_path / "edge.toml", inventory=inventory, field=field, cloud=cloud, buffer=tmp_path / "buffer.db"
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    topic, payload, before = fleet.payload(newcomer)
    pub.publish(topic, payload, wait=True)
    deadline = time.monotonic() + 10
    while _quarantined(tmp_path / "buffer.db") < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _quarantined(tmp_path / "buffer.db") == 1
    fleet.devices = [known, newcomer]
    fleet.inventory(inventory)
    assert agent.proc is not None
    os.killpg(agent.proc.pid, signal.SIGHUP)
    agent.wait_log("reloaded")
    topic, payload, after = fleet.payload(newcomer)
    pub.publish(topic, payload, wait=True)
    assert col.wait_for(lambda c: after.reading_id in c.reading_ids(), 10)
    assert before.reading_id not in col.reading_ids()
    assert agent.terminate() == 0


def test_device_clock_skew_uses_gateway_time_and_keeps_device_time(
    tmp_path: Path,
    rig: Callable[..., Rig],
) -> None:
    fleet = Fleet({DOOR: 1})
    _, _, _, agent, col, pub = rig(fleet, sections={"normalise": {"max_clock_skew_s": 60}})
    dev = fleet.devices[0]
    skewed = datetime.now(UTC) - timedelta(days=3)
    topic, payload, bad = fleet.payload(dev, ts=skewed)
    pub.publish(topic, payload)
    topic, payload, good = fleet.payload(dev)
    pub.publish(topic, payload)
    assert col.wait_for(lambda c: {bad.reading_id, good.reading_id} <= c.reading_ids(), 10)
    got = {r.reading_id: r for r in col.readings()}
    b, g = got[bad.reading_id], got[good.reading_id]
    assert "clock_skew" in b.quality
    assert b.device_ts_us == int(skewed.replace(microsecond=0).timestamp()) * 1_000_000
    assert abs(b.ts_us - b.received_at_us) < 1_000_000
    assert "clock_skew" not in g.quality
    assert g.device_ts_us is None
    assert agent.terminate() == 0

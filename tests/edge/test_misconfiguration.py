"""What a misconfiguration used to make silent, between real brokers: devices missing from the
inventory are logged once, counted in /metrics and shown in /healthz; filters dropped from the
configuration are unsubscribed from the broker's persistent session at the next start."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_profiles import ProfileSet
from device_profiles.inventory import Device, Inventory, Location
from device_profiles.samples import sample_device_id, sample_reading
from edge.normalise import UnknownDevices
from simulators.services import MosquittoBroker, free_port
from tests.edge.conftest import GATEWAY, AgentProcess, Collector, Fleet, Publisher, write_config

pytestmark = pytest.mark.integration

DOOR = "generic_lorawan/door_contact"
SOS = "generic_lorawan/sos_button"
SHIPPED = Path(__file__).resolve().parents[2] / "device_profiles" / "profiles"


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _metric(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return None


def _wait(what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def test_unknown_devices_are_logged_once_counted_in_metrics_and_shown_in_healthz(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 3})
    known, elsewhere, stranger = fleet.devices
    fleet.devices = [known]
    field, cloud = make_broker(), make_broker()
    port = free_port("127.0.0.1")
    cfg = write_config(
        tmp_path / "edge.toml",
        # `elsewhere` belongs to another gateway; `stranger` is in no inventory at all.
        inventory=fleet.inventory(tmp_path / "inv.yaml", extra=(elsewhere,)),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        sections={"status": {"interval_s": 0.2}, "http": {"address": f"127.0.0.1:{port}"}},
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    for dev, times in ((elsewhere, 3), (stranger, 2)):
        for _ in range(times):
            topic, payload, _ = fleet.payload(dev)
            pub.publish(topic, payload, wait=True)
    topic, payload, reading = fleet.payload(known)
    pub.publish(topic, payload, wait=True)
    assert col.wait_for(lambda c: reading.reading_id in c.reading_ids(), 20)  # intake goes on

    metric = "linli_edge_unknown_device_messages_total"
    _wait("the unknown-device counter", lambda: _metric(_get(port, "/metrics")[1], metric) == 5)
    status, body = _get(port, "/healthz")
    assert status == 200  # unknown devices are shown, they do not make the agent unhealthy
    assert json.loads(body)["unknown_device_messages"] == 5
    lines = [line for line in agent.lines() if line.get("event") == "unknown_device"]
    assert sorted(line["device_id"] for line in lines) == sorted([elsewhere.device_id, stranger.device_id])
    by_id = {line["device_id"]: line for line in lines}
    assert by_id[elsewhere.device_id]["owner"] == "gw-other"
    assert by_id[stranger.device_id]["owner"] is None
    assert all(line["level"] == "warning" and line["messages"] == 1 for line in lines)
    assert agent.terminate() == 0


def test_unknown_device_log_is_rate_limited_per_device_with_bounded_memory() -> None:
    clock = [0.0]
    seen = UnknownDevices(interval_s=600, max_ids=3, monotonic=lambda: clock[0])
    assert seen.seen("a") == 1
    assert seen.seen("a") is None
    clock[0] = 599.0
    assert seen.seen("a") is None
    clock[0] = 600.0
    assert seen.seen("a") == 3  # this one and the two in between
    for device in ("b", "c", "d"):
        assert seen.seen(device) == 1
    assert len(seen) == 3  # "a", logged longest ago, was forgotten
    assert seen.seen("a") == 1


def _custom_profile(folder: Path) -> Path:
    """A copy of the shipped SOS button profile under another id and topic."""
    folder.mkdir()
    text = (SHIPPED / "generic_lorawan" / "sos_button.yaml").read_text()
    text = text.replace("id: generic_lorawan/sos_button", "id: acme/sos_button")
    text = text.replace('topics: ["application/', 'topics: ["acme/')
    assert "acme/{application_id}" in text
    (folder / "sos_button.yaml").write_text(text)
    return folder


def _device(device_id: str, profile: str) -> Device:
    return Device(
        device_id=device_id,
        device_type="sos_button",
        profile=profile,
        community_id="c-test",
        gateway_id=GATEWAY,
        location=Location(lat=31.23, lon=121.47),
    )


def _quarantined(db: Path) -> list[tuple[str, str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [(str(t), str(r)) for t, r in conn.execute("SELECT topic, reason FROM quarantine")]


def _remembered(db: Path) -> list[str]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        return [str(r[0]) for r in conn.execute("SELECT filter FROM subscriptions ORDER BY filter")]


def test_a_filter_dropped_from_the_configuration_is_unsubscribed_at_the_next_start(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    custom = ProfileSet.load(_custom_profile(tmp_path / "profiles"))
    shipped = ProfileSet.shipped()
    rng = random.Random(3)
    acme_id = sample_device_id(custom.get("acme/sos_button"), rng)
    sos_id = sample_device_id(shipped.get(SOS), rng)
    field, cloud = make_broker(), make_broker()
    db = tmp_path / "buffer.db"
    inventory = tmp_path / "inv.yaml"

    # First configuration: the custom profile, which subscribes to acme/+/device/+/event/up.
    Inventory([_device(acme_id, "acme/sos_button")]).dump(inventory)
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=inventory,
        field=field,
        cloud=cloud,
        buffer=db,
        extra=f'profiles = ["{tmp_path / "profiles"}"]',
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    stale = "acme/+/device/+/event/up"
    assert stale in _remembered(db)
    assert agent.terminate() == 0

    # Second configuration: the shipped profiles only; the acme filter is no longer wanted.
    Inventory([_device(sos_id, SOS)]).dump(inventory)
    write_config(tmp_path / "edge.toml", inventory=inventory, field=field, cloud=cloud, buffer=db)
    agent.start()
    agent.wait_log("subscribed", count=2)
    agent.wait_log("unsubscribed")
    done = next(line for line in agent.lines() if line.get("event") == "unsubscribed")
    assert done["filters"] == stale
    _wait("the stale filter forgotten", lambda: stale not in _remembered(db))

    # Published on the dropped topic, then on a wanted one: only the second is delivered.
    pub = Publisher(field)
    publishers.append(pub)
    at = datetime.now(UTC)
    acme_topic, acme_payload = custom.encode(
        sample_reading(custom.get("acme/sos_button"), rng, received_at=at, device_id=acme_id)
    )
    assert acme_topic.startswith("acme/")
    pub.publish(acme_topic, acme_payload, wait=True)
    reading = sample_reading(shipped.get(SOS), rng, received_at=at, device_id=sos_id)
    topic, payload = shipped.encode(reading)
    pub.publish(topic, payload, wait=True)
    assert col.wait_for(lambda c: reading.reading_id in c.reading_ids(), 20)
    assert _quarantined(db) == []  # the acme message never reached the agent
    assert agent.terminate() == 0


def test_a_reload_with_a_contradicting_inventory_is_refused_and_keeps_the_running_set(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 1})
    (door,) = fleet.devices
    field, cloud = make_broker(), make_broker()
    inventory = fleet.inventory(tmp_path / "inv.yaml")
    cfg = write_config(
        tmp_path / "edge.toml", inventory=inventory, field=field, cloud=cloud, buffer=tmp_path / "b.db"
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    wrong = Device(
        device_id=door.device_id,
        device_type="sos_button",
        profile=DOOR,
        community_id="c-test",
        gateway_id=GATEWAY,
        location=Location(lat=31.23, lon=121.47),
    )
    Inventory([wrong]).dump(inventory)
    assert agent.proc is not None
    os.killpg(agent.proc.pid, signal.SIGHUP)
    agent.wait_log("reload_failed")
    failed = next(line for line in agent.lines() if line.get("event") == "reload_failed")
    for text in (str(inventory), f"devices[0] ({door.device_id})", "door_contact", "sos_button"):
        assert text in failed["error"]
    pub = Publisher(field)
    publishers.append(pub)
    topic, payload, reading = fleet.payload(door)
    pub.publish(topic, payload, wait=True)
    assert col.wait_for(lambda c: reading.reading_id in c.reading_ids(), 20)  # the running set
    assert [r.device_type for r in col.readings() if r.reading_id == reading.reading_id] == ["door_contact"]
    assert agent.terminate() == 0

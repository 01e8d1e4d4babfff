"""Devices outside the inventory: pending from the field broker and from Zigbee2MQTT's bridge, then
approved with ``linli edge devices approve`` and flowing without a restart of the agent."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from device_profiles.inventory import Inventory
from edge import pending
from edge.config import load_config
from edge.devices_cli import pending_devices
from edge.pending import PendingDevice
from tests.edge.conftest import ROOT, Fleet, Rig

BRIDGE = (Path(__file__).parent / "data" / "zigbee2mqtt_bridge_devices.json").read_bytes()
CLIMATE = "climate_3_2_401"
#: A Zigbee2MQTT climate sensor's state message, as its device page documents it.
CLIMATE_STATE = {
    "temperature": 22.51,
    "humidity": 45.2,
    "pressure": 1002.4,
    "battery": 91,
    "linkquality": 120,
}


def linli(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_profiles.console", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
        check=False,
    )


def wait_pending(
    config: Path, check: Callable[[dict[str, PendingDevice]], bool], timeout: float = 20
) -> dict[str, PendingDevice]:
    cfg = load_config(config, check_files=False)
    deadline = time.monotonic() + timeout
    while True:
        found = {d.device_id: d for d in pending_devices(cfg)}
        if check(found) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


@pytest.mark.integration
def test_an_unknown_device_is_pending_until_approved_then_its_data_flows(rig: Callable[..., Rig]) -> None:
    fleet = Fleet({"aqara/mccgq11lm": 1})
    r = rig(fleet, sections={"discovery": {"watch_interval_s": 0.1}})
    topic = f"zigbee2mqtt/{CLIMATE}"
    for i in range(3):
        r.pub.publish(topic, json.dumps({**CLIMATE_STATE, "temperature": 22.5 + i}).encode(), wait=True)
    found = wait_pending(r.config, lambda f: CLIMATE in f and f[CLIMATE].messages == 3)
    climate = found[CLIMATE]
    assert (climate.source, climate.profile, climate.device_type, climate.topic) == (
        "field",
        "aqara/wsdcgq11lm",
        "environment_sensor",
        topic,
    )
    assert json.loads(climate.payload)["temperature"] == 22.5  # the first message is kept
    listed = linli("edge", "devices", "pending", "--config", str(r.config))
    assert listed.returncode == 0, listed.stderr
    assert f"{CLIMATE}\tfield\tenvironment_sensor by aqara/wsdcgq11lm\t3 message(s)" in listed.stdout
    assert not any(x.device_id == CLIMATE for x in r.col.readings())
    # the gateway's status tells the cloud a device waits for approval
    assert r.col.wait_for(lambda c: any(s.get("pending_devices") == 1 for s in c.status), 20)

    # Approve it: the inventory gets the entry and the running agent takes it up.
    assert r.agent.proc is not None
    pid = r.agent.proc.pid
    approved = linli(
        "edge", "devices", "approve", CLIMATE, "--config", str(r.config),
        "--building", "3", "--unit", "2", "--room", "401",
        "--lat", "31.2304", "--lon", "121.4737", "--wait", "20",
    )  # fmt: skip
    assert approved.returncode == 0, approved.stderr
    assert f"the agent serves {CLIMATE} now" in approved.stdout
    device = Inventory.load(load_config(r.config, check_files=False).inventory)[CLIMATE]
    assert (device.device_type, device.profile, device.location.room, device.gateway_id) == (
        "environment_sensor",
        "aqara/wsdcgq11lm",
        "401",
        "gw-test",
    )
    r.pub.publish(topic, json.dumps({**CLIMATE_STATE, "temperature": 30.25}).encode(), wait=True)
    assert r.col.wait_for(
        lambda c: any(
            x.device_id == CLIMATE and x.metrics.get("temperature_c") == 30.25 for x in c.readings()
        ),
        20,
    ), r.agent.log.read_text()[-2000:]
    assert r.agent.proc is not None
    assert r.agent.proc.pid == pid  # no restart
    assert r.agent.proc.poll() is None
    assert r.agent.count("reloaded") >= 1
    assert CLIMATE not in wait_pending(r.config, lambda f: CLIMATE not in f)
    assert r.agent.terminate() == 0


@pytest.mark.integration
def test_zigbee2mqtt_bridge_devices_become_proposals(rig: Callable[..., Rig]) -> None:
    fleet = Fleet({"aqara/mccgq11lm": 1})
    r = rig(fleet, sections={"discovery": {"watch_interval_s": 0}})
    # The bridge's list names the door contact the inventory has; rename it to the fleet's id.
    door = fleet.devices[0].device_id
    bridge = BRIDGE.replace(b'"door_3_2_401"', json.dumps(door).encode())
    info = r.pub.client.publish("zigbee2mqtt/bridge/devices", bridge, qos=1, retain=True)
    info.wait_for_publish(10)
    found = wait_pending(r.config, lambda f: {"leak_kitchen", "plug_hallway", CLIMATE} <= set(f))
    assert set(found) == {"leak_kitchen", "plug_hallway", CLIMATE}  # not the coordinator, the known
    # door, the disabled sensor or the one still being interviewed
    leak = found["leak_kitchen"]
    assert (leak.source, leak.profile, leak.device_type, leak.messages, leak.topic) == (
        "zigbee2mqtt",
        "aqara/sjcgq11lm",
        "water_leak_sensor",
        0,
        None,
    )
    assert leak.details == {
        "ieee_address": "0x00158d0003c0ffee",
        "model": "SJCGQ11LM",
        "vendor": "Aqara",
        "description": "Water leak sensor",
    }
    plug = found["plug_hallway"]
    assert (plug.profile, plug.details["model"]) == (None, "ZNCZ02LM")  # no profile for a plug
    # A message that is not a device list is quarantined, and the agent goes on.
    r.pub.publish("zigbee2mqtt/bridge/devices", b'{"not": "a list"}', wait=True)
    quarantine = linli("edge", "quarantine", "list", "--config", str(r.config), "--json")
    deadline = time.monotonic() + 20
    while "bad_bridge_message" not in quarantine.stdout and time.monotonic() < deadline:
        time.sleep(0.1)
        quarantine = linli("edge", "quarantine", "list", "--config", str(r.config), "--json")
    assert "bad_bridge_message" in quarantine.stdout
    assert r.agent.proc is not None
    assert r.agent.proc.poll() is None
    assert r.agent.terminate() == 0


def test_pending_rows_merge_sightings_and_stay_within_the_cap(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "p.db", isolation_level=None)
    conn.executescript(pending.SCHEMA)

    def seen(device_id: str, at: int, *, source: str = "field", profile: str | None = "p/x") -> PendingDevice:
        return PendingDevice(
            device_id=device_id,
            source=source,
            profile=profile,
            device_type="t" if profile else None,
            topic=None if source == "zigbee2mqtt" else f"t/{device_id}",
            payload=b"" if source == "zigbee2mqtt" else f"{at}".encode(),
            first_us=at,
            last_us=at,
            messages=0 if source == "zigbee2mqtt" else 1,
            details={"model": "M"} if source == "zigbee2mqtt" else {},
        )

    pending.upsert(conn, [seen("a", 1, source="zigbee2mqtt", profile=None)], cap=3)
    pending.upsert(conn, [seen("a", 2), seen("b", 3)], cap=3)
    pending.upsert(conn, [seen("a", 4), seen("c", 5)], cap=3)
    a = {d.device_id: d for d in pending.rows(conn)}["a"]
    # the bridge named it first; heard twice since: first payload and topic kept, profile learnt
    assert (a.source, a.messages, a.first_us, a.last_us, a.profile, a.topic, a.payload, a.details) == (
        "zigbee2mqtt",
        2,
        1,
        4,
        "p/x",
        "t/a",
        b"2",
        {"model": "M"},
    )
    assert pending.upsert(conn, [seen("d", 6)], cap=3) == 1  # the longest unheard (b) goes
    assert [d.device_id for d in pending.rows(conn)] == ["d", "c", "a"]
    assert pending.forget(conn, ["a", "zzz"]) == 1
    assert [d.device_id for d in pending.rows(conn)] == ["d", "c"]

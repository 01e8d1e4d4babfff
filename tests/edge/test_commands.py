"""Commands through a real agent between two real brokers: stored before they are acknowledged,
encoded in each device's dialect on the field broker, confirmed by the device's next report or the
network's acknowledgement, failed or expired with the reason, every state reported up, in order
after the gateway was offline, and nothing run twice."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles.command_decode import DecodedCommand, decode_command
from device_profiles.command_wire import DownCommand, down_topic, encode
from simulators.services import MosquittoBroker
from tests.edge.conftest import COMMUNITY, GATEWAY, Dev, Fleet, Publisher, Rig

pytestmark = [pytest.mark.integration]

LORA_LAMP = "generic_lorawan/streetlight"
NB_LAMP = "generic_nbiot/streetlight"
BUTTON = "generic_lorawan/sos_button"
APP = "7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a"


class FieldDevices:
    """Listens on the field broker to every command topic of the shipped dialects, like the devices."""

    def __init__(self, broker: MosquittoBroker, fleet: Fleet) -> None:
        self.fleet = fleet
        self.got: list[tuple[str, DecodedCommand | None]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"dev-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe(
            [("application/+/device/+/command/down", 1), ("nbiot/+/down", 1)]
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        decoded = None
        for profile in (self.fleet.profiles.get(p) for p in (LORA_LAMP, NB_LAMP, BUTTON)):
            decoded = decode_command(profile, msg.topic, bytes(msg.payload))
            if decoded is not None:
                break
        with self.lock:
            self.got.append((msg.topic, decoded))

    def commands(self) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            return [(d.device_id, d.name, d.params) for _, d in self.got if d is not None]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def devices() -> Iterator[list[FieldDevices]]:
    made: list[FieldDevices] = []
    yield made
    for d in made:
        d.close()


def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


_seq = iter(range(1, 1_000_000))


def command(
    dev: Dev, name: str, params: dict[str, Any], *, ttl_s: float = 600, seq: int | None = None
) -> DownCommand:
    now = time.time_ns() // 1000
    return DownCommand(
        command_id=str(uuid.uuid4()),
        seq=seq if seq is not None else next(_seq),
        device_id=dev.device_id,
        name=name,
        params=params,
        confirm="report",
        requested_at_us=now,
        expires_at_us=now + int(ttl_s * 1_000_000),
    )


def send(cloud: Publisher, c: DownCommand) -> None:
    cloud.publish(down_topic(COMMUNITY, GATEWAY), encode(c), wait=True)


def report(r: Rig, fleet: Fleet, dev: Dev, **metrics: float) -> None:
    """The device's report, on its dialect's uplink topic (ChirpStack's with the application id)."""
    topic, payload, _ = fleet.payload(dev, metrics=metrics)
    if dev.profile != NB_LAMP:
        topic = topic.replace(topic.split("/")[1], APP, 1)
    r.pub.publish(topic, payload, wait=True)


def test_commands_reach_each_dialect_and_every_state_is_reported(
    rig: Callable[..., Rig], devices: list[FieldDevices], publishers: list[Publisher]
) -> None:
    fleet = Fleet({LORA_LAMP: 1, NB_LAMP: 1, BUTTON: 1})
    lora, nb, button = fleet.of(LORA_LAMP)[0], fleet.of(NB_LAMP)[0], fleet.of(BUTTON)[0]
    r = rig(fleet, sections={"commands": {"confirm_timeout_s": 3}})
    field = FieldDevices(r.field, fleet)
    devices.append(field)
    cloud = Publisher(r.cloud)
    publishers.append(cloud)
    report(r, fleet, lora, lamp_on=0, dim_pct=0)  # the gateway learns its ChirpStack application
    switch = command(lora, "switch", {"on": True})
    dim = command(nb, "dim", {"level_pct": 40})
    ack = command(button, "acknowledge", {})
    ack = msgspec.structs.replace(ack, confirm="network")
    for c in (switch, dim, ack):
        send(cloud, c)
    until(lambda: len(field.commands()) == 2, "the two lamps' commands on the field broker")
    assert field.commands() == [
        (lora.device_id, "switch", {"on": True}),
        (nb.device_id, "dim", {"level_pct": 40}),
    ]
    assert field.got[0][0] == f"application/{APP}/device/{lora.device_id}/command/down"
    assert field.got[1][0] == f"nbiot/{nb.device_id}/down"
    # the button waits: its application id comes with its first uplink
    until(lambda: r.col.states(ack.command_id) == ["at_gateway"], "the acknowledge stored")
    report(r, fleet, button)
    until(lambda: len(field.commands()) == 3, "the acknowledge on the field broker")
    assert field.commands()[2] == (button.device_id, "acknowledge", {})
    # the devices react: the LoRaWAN lamp switches; the NB-IoT lamp stays at 30 %; the network
    # acknowledges the button's downlink
    report(r, fleet, lora, lamp_on=1, dim_pct=100)
    report(r, fleet, nb, lamp_on=1, dim_pct=30)
    r.pub.publish(
        f"application/{APP}/device/{button.device_id}/event/ack",
        json.dumps(
            {"deviceInfo": {"devEui": button.device_id}, "acknowledged": True, "fCntDown": 7}
        ).encode(),
        wait=True,
    )
    until(lambda: r.col.states(switch.command_id)[-1:] == ["confirmed"], "the switch confirmed")
    until(lambda: r.col.states(ack.command_id)[-1:] == ["confirmed"], "the acknowledge confirmed")
    until(lambda: r.col.states(dim.command_id)[-1:] == ["failed"], "the dim failed", timeout=15)
    for c in (switch, ack):
        assert r.col.states(c.command_id) == ["at_gateway", "sent_to_device", "confirmed"]
    failed = [p for p in r.col.progress if p.command_id == dim.command_id][-1]
    assert failed.reason == "not confirmed within 3 s: its last report says dim_pct 30, not level_pct 40"
    assert {p.gateway_id for p in r.col.progress} == {GATEWAY}

    # the same command again (a resend): stored once, never run twice
    send(cloud, switch)
    # one that expired on the way, one for a device this gateway does not serve, one that is no command
    late = command(lora, "dim", {"level_pct": 10}, ttl_s=-1)
    stranger = command(Dev("ffffffffffffffff", LORA_LAMP, "streetlight"), "switch", {"on": False})
    send(cloud, late)
    send(cloud, stranger)
    cloud.publish(down_topic(COMMUNITY, GATEWAY), b'{"command_id": 5}', wait=True)
    until(lambda: r.col.states(stranger.command_id)[-1:] == ["failed"], "the stranger's command failed")
    until(lambda: r.col.states(late.command_id) == ["expired"], "the late command expired")
    assert [p.reason for p in r.col.progress if p.command_id == stranger.command_id][-1] == (
        f"device ffffffffffffffff is not in gateway {GATEWAY}'s inventory"
    )
    assert len(field.commands()) == 3
    assert r.agent.terminate() == 0
    shown = subprocess.run(  # what an installer sees
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "edge",
            "commands",
            "--config",
            str(r.config),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    listed = {doc["command_id"]: doc for doc in map(json.loads, shown.stdout.splitlines())}
    assert listed[switch.command_id]["state"] == "confirmed"
    assert listed[switch.command_id]["reported"] is True
    assert listed[dim.command_id]["reason"].startswith("not confirmed within 3 s")
    assert listed[late.command_id]["state"] == "expired"
    ended = [line for line in r.agent.lines() if line.get("event") == "command_failed"]
    assert {line["command_id"] for line in ended} == {dim.command_id, stranger.command_id}
    with sqlite3.connect(Path(str(r.config).replace("edge.toml", "buffer.db"))) as db:
        bad = db.execute("SELECT reason, message FROM quarantine WHERE reason = 'bad_command'").fetchall()
        states = dict(db.execute("SELECT command_id, state FROM commands").fetchall())
    assert len(bad) == 1
    assert "not a command" in bad[0][1]
    assert states[switch.command_id] == "confirmed"
    assert len(states) == 5


def test_a_gateway_back_from_offline_runs_its_commands_in_order_unless_expired(
    rig: Callable[..., Rig], devices: list[FieldDevices], publishers: list[Publisher]
) -> None:
    fleet = Fleet({NB_LAMP: 2})
    one, two = fleet.of(NB_LAMP)
    r = rig(fleet, sections={"commands": {"confirm_timeout_s": 60}})
    field = FieldDevices(r.field, fleet)
    devices.append(field)
    cloud = Publisher(r.cloud)
    publishers.append(cloud)
    assert r.agent.terminate() == 0  # offline; its session on the cloud broker keeps what comes
    first = command(one, "switch", {"on": True})
    brief = command(one, "dim", {"level_pct": 20}, ttl_s=-0.001)  # its time ends during the outage
    third = command(one, "dim", {"level_pct": 60})
    other = command(two, "switch", {"on": False})
    for c in (first, brief, third, other):
        send(cloud, c)
    r.agent.start()
    until(lambda: len(field.commands()) == 3, "the commands after the outage")
    assert field.commands() == [
        (one.device_id, "switch", {"on": True}),
        (one.device_id, "dim", {"level_pct": 60}),
        (two.device_id, "switch", {"on": False}),
    ]
    until(lambda: r.col.states(brief.command_id) == ["expired"], "the brief command expired")
    # kill -9 with commands waiting for their confirmation: after the restart nothing is sent
    # again, and the confirmations still come
    r.agent.kill9()
    r.agent.start()
    report(r, fleet, one, lamp_on=1, dim_pct=60)
    until(lambda: r.col.states(third.command_id)[-1:] == ["confirmed"], "the dim confirmed after kill -9")
    assert len(field.commands()) == 3
    assert r.agent.terminate() == 0

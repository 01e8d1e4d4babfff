"""Simulated devices obey commands: a lamp switches and dims and reports at once, its later reports
keep the commanded state until the schedule's next switch, ``set_schedule`` replaces the
photocell, ``configure`` changes the report interval, a button acknowledges, a confirmed LoRaWAN
downlink is acknowledged as ChirpStack does, and all of it is in the ground truth; through a real
broker with ``linli sim --obey``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles import ProfileSet
from device_profiles.command_decode import decode_command
from device_profiles.command_encode import encode_command
from device_profiles.inventory import Inventory
from simulators.commands import Heard
from simulators.fleet import generate_fleet
from simulators.message import Emission, Note
from simulators.rand import RandomStream
from simulators.simulation import Simulation
from simulators.truth import read_truth
from tests.conftest import BrokerEndpoint
from tests.simulators.conftest import HOUR_MS, START

PROFILES = ProfileSet.shipped()
APP = "7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a"


def fleet(seed: int = 3) -> Inventory:
    rs = RandomStream(np.random.default_rng(seed))
    return generate_fleet(devices=40, rs=rs, profiles=PROFILES, mix={"streetlight": 1, "sos_button": 1})


def heard(inventory: Inventory, device_type: str, profile: str, name: str, params: dict[str, Any]) -> Heard:
    device = next(d for d in inventory if d.device_type == device_type and d.profile == profile)
    spec = PROFILES.profiles[profile]
    sent = encode_command(spec, device.device_id, name, params, topic_vars={"application_id": APP})
    decoded = decode_command(spec, sent.topic, sent.payload)
    assert decoded is not None
    return Heard(sent.topic, spec, decoded)


def split(items: list[Emission | Note]) -> tuple[list[Emission], list[dict[str, Any]]]:
    emissions = [i for i in items if isinstance(i, Emission)]
    notes = [msgspec.to_builtins(i.record) for i in items if isinstance(i, Note)]
    return emissions, notes


def test_a_lamp_obeys_until_its_schedule_switches_and_reports_at_once() -> None:
    inventory = fleet()
    sim = Simulation(inventory=inventory, start=START, seed=3, profiles=PROFILES)
    noon = sim.start_ms + 4 * HOUR_MS  # 12:00 in Shanghai: the photocell keeps lamps off
    list(sim.run(until_ms=noon))
    on = heard(inventory, "streetlight", "generic_lorawan/streetlight", "switch", {"on": True})
    items, acks = sim.obey(noon, [on])
    emissions, notes = split(items)
    assert len(emissions) == 1
    report = emissions[0].reading
    assert (report.device_id, report.metrics["lamp_on"], report.metrics["dim_pct"]) == (
        on.command.device_id,
        1.0,
        100.0,
    )
    assert report.metrics["power_w"] > 0
    record = next(n for n in notes if n["kind"] == "command")
    assert record["name"] == "switch"
    assert record["params"] == {"on": True}
    assert record["effect"].startswith("switched on until ")
    assert record["report"] == emissions[0].seq
    assert acks == []  # switch is confirmed by the report, not by the network
    dim = heard(inventory, "streetlight", "generic_lorawan/streetlight", "dim", {"level_pct": 30})
    emissions, _ = split(sim.obey(noon + 1000, [dim])[0])
    assert emissions[0].reading.metrics["dim_pct"] == 30.0
    # the periodic reports keep the commanded state until dusk, then the photocell rules again
    later = [
        e.reading
        for e in (i for i in sim.run(until_ms=sim.start_ms + 30 * HOUR_MS) if isinstance(i, Emission))
        if e.reading.device_id == on.command.device_id
    ]
    afternoon = [r for r in later if r.ts.day == START.day and r.ts.hour < 10]  # until 18:00 in Shanghai
    assert afternoon
    assert all(r.metrics["lamp_on"] == 1.0 for r in afternoon)
    assert all(r.metrics["dim_pct"] == 30.0 for r in afternoon)
    next_noon = [r for r in later if r.ts.day == START.day + 1 and 3 <= r.ts.hour < 6]
    assert next_noon
    assert all(r.metrics["lamp_on"] == 0.0 for r in next_noon)


def test_schedule_configure_acknowledge_and_the_network_ack() -> None:
    inventory = fleet()
    sim = Simulation(inventory=inventory, start=START, seed=3, profiles=PROFILES)
    t = sim.start_ms + HOUR_MS
    list(sim.run(until_ms=t))
    schedule = heard(
        inventory,
        "streetlight",
        "generic_nbiot/streetlight",
        "set_schedule",
        {"on_at": "08:00", "off_at": "10:00", "night_dim_pct": 40},
    )
    configure = heard(
        inventory, "streetlight", "generic_nbiot/streetlight", "configure", {"report_interval_s": 120}
    )
    configure = configure._replace(command=configure.command._replace(device_id=schedule.command.device_id))
    ack = heard(inventory, "sos_button", "generic_lorawan/sos_button", "acknowledge", {})
    items, acks = sim.obey(t, [schedule, configure, ack])
    emissions, notes = split(items)
    lamp = schedule.command.device_id
    # 09:00 in Shanghai: inside the controller's own on-time
    assert emissions[0].reading.metrics["lamp_on"] == 1.0
    effects = {n["name"]: n["effect"] for n in notes if n["kind"] == "command"}
    assert effects == {
        "set_schedule": "schedule on 08:00 off 10:00 night 40 %",
        "configure": "reports every 120 s from now",
        "acknowledge": "acknowledged: green LED and two beeps, help is coming",
    }
    ((topic, payload),) = acks
    button = ack.command.device_id
    assert topic == f"application/{APP}/device/{button}/event/ack"
    doc = json.loads(payload)
    assert doc["acknowledged"] is True
    assert doc["deviceInfo"] == {"devEui": button}
    times = [
        e.t_ms
        for e in (i for i in sim.run(until_ms=t + HOUR_MS) if isinstance(i, Emission))
        if e.reading.device_id == lamp
    ]
    gaps = np.diff(times)
    assert len(times) >= 25
    assert gaps.max() <= 120_000 * 1.1 + 1
    # after 10:00 the controller's schedule switches the lamp off
    tail = [
        e.reading
        for e in (i for i in sim.run(until_ms=t + 3 * HOUR_MS) if isinstance(i, Emission))
        if e.reading.device_id == lamp
    ]
    assert tail[-1].metrics["lamp_on"] == 0.0
    # the controller reports as it switches off at 10:00 local (02:00 UTC), not at the photocell's dawn
    switched = [r for r in tail if (r.ts.hour, r.ts.minute, r.ts.second) == (2, 0, 0)]
    assert [r.metrics["lamp_on"] for r in switched] == [0.0]


class Field:
    """A subscriber on the broker's uplink topics, and a publisher of commands."""

    def __init__(self, broker: BrokerEndpoint) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.lock = threading.Lock()
        subscribed = threading.Event()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"field-{uuid.uuid4().hex[:6]}")
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe([("application/#", 1), ("nbiot/+/up", 1)])
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        with self.lock:
            self.messages.append((msg.topic, bytes(msg.payload)))

    def wait_for(self, predicate: Any, timeout: float = 20.0) -> list[tuple[str, bytes]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                found = [m for m in self.messages if predicate(*m)]
            if found:
                return found
            time.sleep(0.02)
        raise AssertionError("timed out")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def test_linli_sim_obey_through_a_real_broker(mosquitto: BrokerEndpoint, tmp_path: Path) -> None:
    fleet_file, truth = tmp_path / "inventory.json", tmp_path / "truth.jsonl"
    field = Field(mosquitto)
    sim = subprocess.Popen(
        [
            sys.executable, "-m", "device_profiles.console", "sim", "--broker", mosquitto.url,
            "--devices", "20",
            "--mix", "streetlight=1", "--seed", "5", "--speed", "60", "--duration", "1h", "--obey",
            "--inventory", str(fleet_file), "--truth", str(truth), "--quiet",
        ],
    )  # fmt: skip
    try:
        field.wait_for(lambda topic, _p: topic.endswith("/up"))  # running, and listening since before
        inventory = Inventory.load(fleet_file)
        lamp = next(d for d in inventory if d.profile == "generic_nbiot/streetlight")
        command = encode_command(PROFILES.profiles[lamp.profile], lamp.device_id, "dim", {"level_pct": 45})
        sent_at = time.monotonic()
        field.client.publish(command.topic, command.payload, qos=1).wait_for_publish(10)

        def shows_dim(topic: str, payload: bytes) -> bool:
            if lamp.device_id not in topic:
                return False
            reading = PROFILES.decode(topic, payload, START)
            return getattr(reading, "metrics", {}).get("dim_pct") == 45.0

        field.wait_for(shows_dim)
        assert time.monotonic() - sent_at < 2.0
    finally:
        sim.send_signal(signal.SIGINT)  # Ctrl-C: the run ends and the ground truth is complete
        assert sim.wait(20) == 130
        field.close()
    records = [r for r in read_truth(truth) if r["kind"] == "command"]
    assert [(r["device_id"], r["name"], r["params"]) for r in records] == [
        (lamp.device_id, "dim", {"level_pct": 45})
    ]

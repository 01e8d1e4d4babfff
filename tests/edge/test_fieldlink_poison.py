"""A poison message through the running agent, between real brokers: a 10 MB payload published on
a device topic does not stop intake for the other devices and does not put the agent into a crash
loop. The agent announces a Maximum Packet Size (256 KiB by default) and Mosquitto drops larger
messages for it, so the poison never reaches the agent's memory."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.edge.conftest import Fleet, Rig

pytestmark = pytest.mark.integration

DOOR = "generic_lorawan/door_contact"


@pytest.mark.parametrize(
    "max_packet_bytes",
    [
        None,  # the default, 256 KiB: Mosquitto drops the poison for the agent
        16 << 20,  # a limit above the poison: it reaches the agent, which quarantines it
    ],
)
def test_a_10_mb_payload_on_a_device_topic_does_not_stop_intake_or_the_agent(
    max_packet_bytes: int | None,
    tmp_path: Path,
    rig: Callable[..., Rig],
) -> None:
    fleet = Fleet({DOOR: 6})
    field, _, _, agent, col, pub = rig(
        fleet, sections={"field": {"max_packet_bytes": max_packet_bytes}} if max_packet_bytes else None
    )

    victim, others = fleet.devices[0], fleet.devices[1:]
    poison_topic, _, _ = fleet.payload(victim)
    poison = b"{" + b" " * (10 * 1000 * 1000) + b"}"
    expected: list[str] = []
    for round_ in range(3):  # readings, the poison, readings: three times over
        for dev in others:
            topic, payload, r = fleet.payload(dev, metrics={"contact_open": float(round_ % 2)})
            pub.publish(topic, payload, wait=True)
            expected.append(r.reading_id)
        pub.publish(poison_topic, poison, wait=True)
    topic, payload, r = fleet.payload(victim)  # the victim itself, after the poison
    pub.publish(topic, payload, wait=True)
    expected.append(r.reading_id)

    assert col.wait_for(lambda c: set(expected) <= c.reading_ids(), 60), (
        f"{len(set(expected) - col.reading_ids())} of {len(expected)} readings missing"
    )
    assert agent.proc is not None
    assert agent.proc.poll() is None  # still running
    lines = agent.lines()
    field_connects = [
        line for line in lines if line.get("event") == "connected" and line.get("logger") == "edge.mqtt.field"
    ]
    assert len(field_connects) == 1  # never dropped, never reconnected
    assert not [line for line in lines if line.get("level") == "error"]
    assert agent.count("starting") == 1
    # How: Mosquitto honours the Maximum Packet Size the agent announced, or the agent takes the
    # poison in and quarantines it.
    dropped = field.log_path.read_text().count(
        "Dropping too large outgoing PUBLISH for linli-edge-gw-test-field"
    )
    assert dropped == (0 if max_packet_bytes else 3)
    assert agent.terminate() == 0
    with sqlite3.connect(tmp_path / "buffer.db") as db:
        quarantined = db.execute("SELECT topic, size FROM quarantine").fetchall()
    assert quarantined == ([(poison_topic, len(poison))] * 3 if max_packet_bytes else [])

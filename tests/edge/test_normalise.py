"""The southbound steps on their own: decode, inventory, dedupe, skew, state events, classes."""

from __future__ import annotations

import asyncio
import random
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from device_profiles.inventory import Inventory
from edge.buffer import Intake
from edge.envelope import decode_reading
from edge.errors import NoSubscribers
from edge.inventory import InventoryView
from edge.liveness import Liveness
from edge.mqtt import MqttLink, backoff_delay
from edge.normalise import Classifier, Normaliser, RecentIds
from simulators.services import MosquittoBroker
from tests.edge.conftest import GATEWAY, Fleet


def _normaliser(fleet: Fleet, tmp_path: Path, now: list[float]) -> Normaliser:
    inventory = InventoryView(Inventory.load(fleet.inventory(tmp_path / "inv.yaml")), gateway_id=GATEWAY)
    liveness = Liveness(
        gateway_id=GATEWAY,
        inventory=inventory,
        profile_intervals={},
        overrides={},
        offline_after_intervals=3,
        memory={},
    )
    return Normaliser(
        profiles=fleet.profiles,
        inventory=inventory,
        liveness=liveness,
        classifier=Classifier(alarm_events={"sos_pressed", "cover_opened"}, alarm_metrics={"lamp_fault": 1}),
        max_clock_skew_s=300,
        dedupe_ids_remembered=100,
        wall=lambda: now[0],
    )


def test_dedupe_drops_repeats_of_message_ids_but_not_of_content_hashes(tmp_path: Path) -> None:
    import time

    fleet = Fleet({"generic_lorawan/door_contact": 1, "tuya/ts0215a_sos": 1})
    norm = _normaliser(fleet, tmp_path, [time.time()])
    intake = Intake()
    lora, zigbee = fleet.of("generic_lorawan/door_contact")[0], fleet.of("tuya/ts0215a_sos")[0]
    topic, payload, _ = fleet.payload(lora)
    norm.handle(topic, payload, intake)
    norm.handle(topic, payload, intake)  # a broker redelivery: same deduplicationId
    assert len(intake.telemetry) == 1
    assert intake.counters["duplicates_dropped"] == 1
    # Two identical Zigbee SOS presses have the same content-hash id; both are kept.
    topic, payload, _ = fleet.payload(zigbee, events=("sos_pressed",))
    assert norm.handle(topic, payload, intake) is True
    assert norm.handle(topic, payload, intake) is True
    assert len(intake.alarm) == 2
    assert all(decode_reading(r).events == ("sos_pressed",) for r in intake.alarm)


def test_classifier_rules() -> None:
    c = Classifier(alarm_events={"sos_pressed"}, alarm_metrics={"lamp_fault": 1, "ch4_pct_lel": 20})
    assert c.is_alarm(("sos_pressed",), {})
    assert c.is_alarm((), {"lamp_fault": 1.0})
    assert c.is_alarm((), {"ch4_pct_lel": 25.0})
    assert not c.is_alarm(("heartbeat",), {"lamp_fault": 0.0, "ch4_pct_lel": 3.0})


def test_backoff_is_capped_and_jittered() -> None:
    rng = random.Random(3)
    delays = [backoff_delay(a, base=0.5, cap=60, rng=rng) for a in range(40)]
    assert all(0 <= d <= min(60, 0.5 * 2**a) for a, d in enumerate(delays))
    assert max(delays[10:]) > 30  # reaches the cap's range
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


@pytest.mark.integration
async def test_publish_future_resolves_on_puback(make_broker: Callable[..., MosquittoBroker]) -> None:
    broker = make_broker()
    link = MqttLink(name="c", host=broker.host, port=broker.port, client_id="t-pub")
    task = asyncio.create_task(link.run())
    topic = "t/p"
    try:
        await asyncio.wait_for(link.wait_connected(), 10)
        # nobody subscribes: the broker says so, and the future fails with NoSubscribers
        unheard = [link.publish(topic, bytes(1000), qos=1) for _ in range(5)]
        done = await asyncio.wait_for(asyncio.gather(*unheard, return_exceptions=True), 10)
        assert all(isinstance(d, NoSubscribers) for d in done)
        subscribed = threading.Event()
        sub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="t-sub", protocol=mqtt.MQTTv5)
        sub.on_subscribe = lambda *_: subscribed.set()
        sub.connect(broker.host, broker.port)
        sub.loop_start()
        try:
            sub.subscribe(topic, 1)
            assert await asyncio.to_thread(subscribed.wait, 10)
            futures = [link.publish(topic, bytes(1000), qos=1) for _ in range(50)]
            await asyncio.wait_for(asyncio.gather(*futures), 10)
            assert link.in_flight == 0
        finally:
            sub.disconnect()
            sub.loop_stop()
    finally:
        await link.close()
        await task


class _BrokenClassifier(Classifier):
    """A classifier with a bug: raises `error` on every message."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(alarm_events=(), alarm_metrics={})
        self.error = error

    def is_alarm(self, events: Iterable[str], metrics: Mapping[str, float]) -> bool:
        raise self.error


def test_a_bug_on_one_message_quarantines_it_and_intake_goes_on(tmp_path: Path) -> None:
    import time

    fleet = Fleet({"generic_lorawan/door_contact": 1})
    norm = _normaliser(fleet, tmp_path, [time.time()])
    good = norm.classifier
    intake = Intake()
    (door,) = fleet.devices
    norm.classifier = _BrokenClassifier(ZeroDivisionError("float division by zero"))
    topic, payload, _ = fleet.payload(door)
    assert norm.handle(topic, payload, intake) is False
    assert [(q.topic, q.reason) for q in intake.quarantine] == [(topic, "internal_error")]
    assert "ZeroDivisionError" in intake.quarantine[0].message
    norm.classifier = good
    topic, payload, _ = fleet.payload(door)
    norm.handle(topic, payload, intake)
    assert len(intake.telemetry) == 1
    # What is not about the message (here: memory) is not swallowed.
    norm.classifier = _BrokenClassifier(MemoryError())
    topic, payload, _ = fleet.payload(door)
    with pytest.raises(MemoryError):
        norm.handle(topic, payload, intake)


def test_recent_ids_forget_the_oldest_first() -> None:
    recent = RecentIds(3)
    for rid in ("a", "b", "c"):
        recent.add(rid)
    assert len(recent) == 3
    assert all(r in recent for r in "abc")
    recent.add("d")
    assert "a" not in recent
    assert all(r in recent for r in "bcd")
    for rid in ("e", "f", "g"):
        recent.add(rid)
    assert len(recent) == 3
    assert [r for r in "abcdefg" if r in recent] == ["e", "f", "g"]
    nothing = RecentIds(0)
    nothing.add("a")
    assert "a" not in nothing
    assert len(nothing) == 0

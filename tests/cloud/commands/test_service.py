"""``linli cloud commands`` against real Mosquitto and PostgreSQL: the outbox reaches the gateway's
``.../down`` topic in order, is sent again until the gateway reports it stored, and the gateway's
progress moves the command forward only (a repeated or late report changes nothing), with every
state in the command's audit trail and, for an SOS acknowledge, in the incident's."""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import msgspec
import paho.mqtt.client as paho
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.commands import outbox
from cloud.commands.service import CommandService
from cloud.config import CommandsConfig, MqttConfig
from cloud.ingest.envelope import Envelope
from device_profiles import ProfileSet
from device_profiles.command_wire import (
    AT_GATEWAY,
    CONFIRMED,
    SENT_TO_DEVICE,
    CommandProgress,
    DownCommand,
    decode_down,
    encode,
    progress_topic,
)
from device_profiles.config_sources import HttpConfig
from tests.conftest import BrokerEndpoint

pytestmark = [pytest.mark.integration]

LAMP = "a84041000181c0de"
PROFILES = ProfileSet.shipped().profiles


def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class FakeGateway:
    """A paho client on ``linli/v1/c01/gw1/down`` that reports progress like an agent."""

    def __init__(self, broker: BrokerEndpoint) -> None:
        self.got: queue.Queue[DownCommand] = queue.Queue()
        self.client = paho.Client(CallbackAPIVersion.VERSION2, client_id=f"gw-{uuid.uuid4().hex[:6]}")
        subscribed = threading.Event()
        self.client.on_message = lambda _c, _u, msg: self.got.put(decode_down(bytes(msg.payload)))
        self.client.on_subscribe = lambda *_a: subscribed.set()
        self.client.on_connect = lambda c, *_a: c.subscribe("linli/v1/c01/gw1/down", qos=1)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()
        assert subscribed.wait(10)

    def next(self, timeout: float = 20.0) -> DownCommand:
        return self.got.get(timeout=timeout)

    def drain(self, *, quiet_s: float) -> list[str]:
        """The ids received until none came for `quiet_s` (a resend already on its way included)."""
        ids = []
        try:
            while True:
                ids.append(self.next(timeout=quiet_s).command_id)
        except queue.Empty:
            return ids

    def report(self, command_id: str, state: str, reason: str | None = None, gateway: str = "gw1") -> None:
        report = CommandProgress(
            gateway_id=gateway,
            command_id=command_id,
            state=state,
            at_us=time.time_ns() // 1000,
            reason=reason,
        )
        self.raw(encode(report), gateway=gateway)

    def raw(self, payload: bytes, gateway: str = "gw1") -> None:
        self.client.publish(progress_topic("c01", gateway), payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url, autocommit=True) as c:
        c.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id) VALUES"
            " (%s, 'streetlight', 'generic_lorawan/streetlight', 'c01', 'gw1')",
            (LAMP,),
        )
        yield c


@pytest.fixture
def service(migrated_url: str, mosquitto: BrokerEndpoint) -> Iterator[CommandService]:
    svc = CommandService(
        database_url=migrated_url,
        mqtt=MqttConfig(url=mosquitto.url),
        config=CommandsConfig(
            client_id=f"cmd-{uuid.uuid4().hex[:6]}",
            resend_s=1.0,
            poll_interval_s=0.2,
            http=HttpConfig(address=""),
        ),
    )
    stop = threading.Event()
    thread = threading.Thread(target=svc.run, args=(stop,))
    thread.start()
    until(svc.consumer.subscribed.is_set, "the progress subscription")
    yield svc
    stop.set()
    thread.join(30)
    assert not thread.is_alive()


def queue_command(conn: psycopg.Connection[Any], name: str, params: dict[str, Any], **kw: Any) -> str:
    command, _ = outbox.request(
        conn, actor="k-li", device_id=LAMP, name=name, params=params, ttl_s=600, profiles=PROFILES,
        now=datetime.now(UTC), **kw,
    )  # fmt: skip
    return str(command["command_id"])


def state(conn: psycopg.Connection[Any], command_id: str) -> tuple[str, str | None]:
    row = conn.execute("SELECT state, reason FROM commands WHERE command_id = %s", (command_id,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_commands_reach_the_gateway_in_order_and_its_progress_moves_them_forward(
    mosquitto: BrokerEndpoint, conn: psycopg.Connection[Any], service: CommandService
) -> None:
    gateway = FakeGateway(mosquitto)
    try:
        first = queue_command(conn, "switch", {"on": True})
        second = queue_command(conn, "dim", {"level_pct": 40})
        got = [gateway.next(), gateway.next()]
        assert [(c.command_id, c.name, c.params) for c in got] == [
            (first, "switch", {"on": True}),
            (second, "dim", {"level_pct": 40}),
        ]
        assert got[0].seq < got[1].seq
        assert got[0].device_id == LAMP
        assert got[0].confirm == "report"
        # not reported stored: sent again (the gateway keeps one copy per id)
        assert gateway.next().command_id == first
        for s in (AT_GATEWAY, SENT_TO_DEVICE, CONFIRMED):
            gateway.report(first, s)
        until(lambda: state(conn, first)[0] == CONFIRMED, "the first command confirmed")
        gateway.report(first, AT_GATEWAY)  # late and repeated: stale
        gateway.report(second, "failed", reason="the device refused the downlink")
        until(lambda: state(conn, second)[0] == "failed", "the second command failed")
        until(lambda: service.counters["command_reports_stale_total"] == 1, "the stale report counted")
        assert state(conn, first) == (CONFIRMED, None)
        assert state(conn, second) == ("failed", "the device refused the downlink")
        audit = conn.execute(
            "SELECT actor, state FROM command_audit WHERE command_id = %s ORDER BY id", (first,)
        ).fetchall()
        assert audit == [
            ("k-li", "queued"),
            ("gateway gw1", AT_GATEWAY),
            ("gateway gw1", SENT_TO_DEVICE),
            ("gateway gw1", CONFIRMED),
        ]
        # each end is an event of the lamp, and in the alert feed for the `command` rules
        events = conn.execute(
            "SELECT event, attributes->>'command_id', attributes->>'state' FROM events WHERE device_id = %s"
            " ORDER BY time",
            (LAMP,),
        ).fetchall()
        assert sorted(events) == sorted(
            [("command_confirmed", first, CONFIRMED), ("command_not_confirmed", second, "failed")]
        )
        feed = [
            env
            for (batches,) in conn.execute("SELECT batches FROM alert_feed ORDER BY feed_seq").fetchall()
            for env in msgspec.msgpack.decode(batches, type=list[Envelope])
        ]
        assert [
            (e.community_id, e.batch_class, e.readings[0].events, e.readings[0].quality) for e in feed
        ] == [
            ("c01", "telemetry", ("command_confirmed",), ("cloud",)),
            ("c01", "alarm", ("command_not_confirmed",), ("cloud",)),
        ]
        sends = conn.execute("SELECT sends FROM commands WHERE command_id = %s", (first,)).fetchone()
        assert sends is not None
        assert sends[0] >= 2
        # nothing more is sent once the gateway stored them
        drained = gateway.drain(quiet_s=2.5)
        assert second not in drained[1:]
        assert first not in drained[1:]
    finally:
        gateway.close()


def test_refused_reports_are_kept_with_the_reason_and_change_nothing(
    mosquitto: BrokerEndpoint, conn: psycopg.Connection[Any], service: CommandService
) -> None:
    gateway = FakeGateway(mosquitto)
    try:
        command_id = queue_command(conn, "dim", {"level_pct": 10})
        gateway.next()
        gateway.raw(b"\xff not json")
        gateway.report(command_id, AT_GATEWAY, gateway="gw9")  # another gateway's command
        gateway.report(str(uuid.uuid4()), AT_GATEWAY)  # no such command
        gateway.raw(
            encode(CommandProgress(gateway_id="gw9", command_id=command_id, state="confirmed", at_us=1))
        )
        until(lambda: service.counters["command_reports_refused_total"] == 4, "four refusals")
        reasons = [r[0] for r in conn.execute("SELECT reason FROM dead_letters ORDER BY id").fetchall()]
        assert len(reasons) == 4
        assert all(r.startswith("command progress: ") for r in reasons)
        assert "not a command progress report" in reasons[0]
        assert "another gateway's" in reasons[1]
        assert "no such command" in reasons[2]
        assert "names gateway gw9, not the topic's" in reasons[3]
        assert state(conn, command_id)[0] == "queued"
    finally:
        gateway.close()


def test_the_incident_audit_trail_follows_an_sos_acknowledge(
    mosquitto: BrokerEndpoint, migrated_url: str, conn: psycopg.Connection[Any], service: CommandService
) -> None:
    from cloud.incidents import transitions as tr
    from cloud.incidents.people import People
    from cloud.incidents.record import Context
    from tests.cloud.incidents.conftest import PEOPLE, fire

    button = "a84041000181b0b0"
    conn.execute(
        "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id) VALUES"
        " (%s, 'sos_button', 'generic_lorawan/sos_button', 'c01', 'gw1')",
        (button,),
    )
    gateway = FakeGateway(mosquitto)
    try:
        iid = fire(migrated_url, subject=button)
        tr.accept(conn, iid, actor="w-zhang", ctx=Context(people=People.model_validate(PEOPLE)))
        down = gateway.next()
        assert (down.device_id, down.name, down.confirm) == (button, "acknowledge", "network")
        for s in (AT_GATEWAY, SENT_TO_DEVICE, CONFIRMED):
            gateway.report(down.command_id, s)
        until(lambda: state(conn, down.command_id)[0] == CONFIRMED, "the acknowledge confirmed")
        trail = conn.execute(
            "SELECT action, note, detail FROM incident_audit WHERE incident_id = %s ORDER BY audit_id", (iid,)
        ).fetchall()
        commands = [
            (note, detail["command"]["state"]) for action, note, detail in trail if action == "command"
        ]
        assert commands == [
            ("acknowledge at gateway", AT_GATEWAY),
            ("acknowledge sent to device", SENT_TO_DEVICE),
            ("acknowledge confirmed", CONFIRMED),
        ]
    finally:
        gateway.close()


def test_a_command_not_reported_stored_is_sent_again_less_and_less_often(
    conn: psycopg.Connection[Any],
) -> None:
    from datetime import timedelta

    from cloud.commands import progress

    t0 = datetime.now(UTC)
    command_id = queue_command(conn, "dim", {"level_pct": 20})

    def due_at(seconds: float) -> list[str]:
        with conn.transaction():
            found = progress.due(
                conn, now=t0 + timedelta(seconds=seconds), resend_s=1.0, resend_max_s=8.0, limit=10
            )
        return [c.command_id for _, _, c in found]

    assert due_at(0) == [command_id]  # never sent
    sent = 0.0
    for gap in (1.0, 2.0, 4.0, 8.0, 8.0):  # doubling, up to the most
        conn.execute("UPDATE commands SET sent_at = %s, sends = sends + 1", (t0 + timedelta(seconds=sent),))
        assert due_at(sent + gap - 0.01) == []
        assert due_at(sent + gap + 0.01) == [command_id]
        sent += gap
    conn.execute("UPDATE commands SET state = 'at_gateway'")
    assert due_at(sent + 100) == []  # stored: never again

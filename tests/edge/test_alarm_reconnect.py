"""The cloud link's fast lane for alarms, on the link itself against a real Mosquitto: `hurry()`
ends a long backoff wait at once, retries at the short interval while the broker stays away, and
the full backoff applies again once the link has connected."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from edge.buffer import Buffer
from edge.errors import UplinkUnavailable
from edge.logs import Logger
from edge.mqtt import MqttLink
from edge.uplink import Uplink
from simulators.services import MosquittoBroker
from tests.edge.conftest import AgentProcess, Collector, Fleet, Publisher, write_config
from tests.edge.test_buffer import NOW, _intake, _reading
from tests.edge.test_fieldlink_faults import LogEvents

pytestmark = pytest.mark.integration

CAP_S = 3600.0
HURRY_S = 0.2


class Longest(random.Random):
    """Jitter that always draws the longest delay allowed: a wait is exactly its cap."""

    def uniform(self, a: float, b: float) -> float:
        return max(a, b)


@contextlib.asynccontextmanager
async def running_link(broker: MosquittoBroker) -> AsyncIterator[tuple[MqttLink, LogEvents]]:
    records = LogEvents()
    logger = logging.getLogger(f"test.mqtt.{id(records)}")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    link = MqttLink(
        name="cloud",
        host=broker.host,
        port=broker.port,
        client_id="t-hurry",
        backoff_base_s=CAP_S,
        backoff_cap_s=CAP_S,
        hurry_retry_s=HURRY_S,
        rng=Longest(),
        log=Logger(logger),
    )
    task = asyncio.create_task(link.run())
    try:
        yield link, records
        assert not task.done(), "run() ended on its own"
    finally:
        await link.close(grace_s=1)
        await task
        logger.removeHandler(records)


def test_hurried_delays_are_capped_at_the_short_interval() -> None:
    rng = random.Random(5)
    link = MqttLink(
        name="cloud", host="127.0.0.1", port=1, client_id="t", backoff_cap_s=60, hurry_retry_s=1.0, rng=rng
    )
    normal = [link.next_delay(20) for _ in range(200)]
    assert max(normal) > 30  # the backoff: uniform(0, 60)
    link.hurry()
    assert link.hurried
    hurried = [link.next_delay(20) for _ in range(200)]
    assert max(hurried) <= 1.0
    assert min(hurried) < 0.5 < max(hurried)  # still jittered
    assert link.next_delay(0) <= 0.5  # and never longer than the backoff itself


async def test_hurry_ends_a_long_backoff_and_retries_until_connected(
    make_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = make_broker()
    async with running_link(broker) as (link, logs):
        await asyncio.wait_for(link.wait_connected(), 10)
        broker.stop()
        lost = await logs.wait("connection_lost")
        assert lost["retry_in_s"] == CAP_S
        assert lost["hurried"] is False

        link.hurry()  # an alarm is waiting: attempts now, then every HURRY_S at most
        assert link.hurried
        failed = await logs.wait("connect_failed", count=3, within_s=5)
        assert failed["hurried"] is True
        assert failed["retry_in_s"] <= HURRY_S
        assert len(logs.named("reconnect_hurried")) == 1
        link.hurry()  # a second alarm changes nothing
        assert len(logs.named("reconnect_hurried")) == 1

        broker.start()
        await asyncio.wait_for(link.wait_connected(), 5)
        assert not link.hurried
        link.hurry()  # while connected: nothing to hurry
        assert not link.hurried
        assert len(logs.named("reconnect_hurried")) == 1

        broker.stop()  # nothing urgent now: the full backoff again
        lost = await logs.wait("connection_lost", count=2)
        assert lost["retry_in_s"] == CAP_S
        assert lost["hurried"] is False
        broker.start()
        link.hurry()
        await asyncio.wait_for(link.wait_connected(), 5)


# -- the uplink's side --------------------------------------------------------------------


class SilentLink:
    """A cloud link for the uplink alone: it takes PUBLISHes and acknowledges none until told;
    `drop()` loses the connection; `hurries` counts the `hurry()` calls made while down."""

    def __init__(self) -> None:
        self._up = asyncio.Event()
        self._gone = asyncio.Event()
        self.epoch = 0
        self.hurries = 0
        self.published: list[tuple[bytes, asyncio.Future[None]]] = []

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def up(self) -> None:
        self.epoch += 1
        self._gone.clear()
        self._up.set()

    def drop(self) -> None:
        self._up.clear()
        self._gone.set()
        for _, fut in self.published:
            if not fut.done():
                fut.set_exception(UplinkUnavailable("lost"))
                fut.exception()  # retrieved, as the real link does

    def ack_all(self) -> None:
        for _, fut in self.published:
            if not fut.done():
                fut.set_result(None)

    async def wait_connected(self) -> None:
        await self._up.wait()

    async def wait_disconnected(self) -> None:
        await self._gone.wait()

    def publish(self, _topic: str, payload: bytes, *, qos: int = 1) -> asyncio.Future[None]:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.published.append((payload, fut))
        return fut

    def hurry(self) -> None:
        if not self.connected:
            self.hurries += 1


async def _until(fact: Callable[[], bool], within_s: float = 5.0) -> None:
    async with asyncio.timeout(within_s):
        while not fact():  # noqa: ASYNC110 - a fact of the code under test, with no event to await
            await asyncio.sleep(0.01)


async def test_an_alarm_batch_unacknowledged_at_a_loss_hurries_the_reconnect(tmp_path: Path) -> None:
    buffer = await Buffer.open(tmp_path / "b.db", max_bytes=1 << 30, wall=lambda: NOW)
    link = SilentLink()
    uplink = Uplink(
        link=link,  # type: ignore[arg-type]
        buffer=buffer,
        topic="t",
        gateway_id="g",
        community_id="c",
        batch_max_latency_s=0.01,
    )
    task = asyncio.create_task(uplink.run())
    try:
        link.up()
        await buffer.commit(_intake([(_reading(1, alarm=True), True)]))
        uplink.notify(alarm=1, telemetry=0)  # the link is up: nothing to hurry
        await _until(lambda: len(link.published) == 1)
        assert link.hurries == 0
        link.drop()  # the alarm batch was never acknowledged: it waits, so the link is hurried
        await _until(lambda: link.hurries == 1)

        link.up()
        await _until(lambda: len(link.published) == 2)  # the alarm batch again
        assert link.published[1][0] == link.published[0][0]
        link.ack_all()
        await _until(lambda: uplink.idle)
        await buffer.commit(_intake([(_reading(2), False)]))
        uplink.notify(alarm=0, telemetry=1)
        await _until(lambda: len(link.published) == 3)
        link.drop()  # a telemetry batch in flight: the backoff is not cut short
        await _until(lambda: uplink.in_flight == 0)  # the uplink has handled the loss
        assert link.hurries == 1
        link.up()
        await _until(lambda: len(link.published) == 4)  # the telemetry batch again
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await buffer.close()


# -- through the agent ----------------------------------------------------------------------

DOOR = "generic_lorawan/door_contact"
SOS = "generic_lorawan/sos_button"
#: The cloud link's backoff here: every wait after a loss is uniform(0, 60 s), the production cap.
BACKOFF_S = 60.0
#: A wait at least this long is what the test needs the agent to be in when the SOS comes.
LONG_WAIT_S = 20.0
#: Publish to cloud broker, at most: well under LONG_WAIT_S, well over the alarm retry interval.
WITHIN_S = 5.0


def _agent_in_long_wait(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    fleet: Fleet,
    before_outage: Callable[[Collector], object] | None = None,
) -> tuple[MosquittoBroker, MosquittoBroker, AgentProcess, float]:
    """The agent connected, then the cloud broker stopped and the agent waiting out a backoff of
    at least LONG_WAIT_S (drawn by the agent, read from its log). Returns the monotonic time at
    which that wait was seen to begin; the cloud broker is down."""
    field, cloud = make_broker(), make_broker()
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=fleet.inventory(tmp_path / "inventory.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        sections={"cloud": {"backoff_base_s": BACKOFF_S, "backoff_cap_s": BACKOFF_S, "alarm_retry_s": 1.0}},
    )
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    agent.wait_log("connected", count=2)  # field and cloud
    if before_outage is not None:
        before_outage(Collector(cloud))
    broker = f"{cloud.host}:{cloud.port}"
    cloud.stop()
    seen = 0
    deadline = time.monotonic() + 4 * BACKOFF_S
    while time.monotonic() < deadline:
        waits = [
            line
            for line in agent.lines()
            if line.get("event") in ("connection_lost", "connect_failed") and line.get("broker") == broker
        ]
        if len(waits) > seen:
            seen = len(waits)
            if waits[-1]["retry_in_s"] >= LONG_WAIT_S:
                return field, cloud, agent, time.monotonic()
        time.sleep(0.05)
    raise AssertionError(f"no backoff of {LONG_WAIT_S} s or more drawn: {agent.lines()[-5:]}")


def _arrival(col: Collector, reading_id: str) -> float:
    with col.lock:
        index = next(
            i for i, e in enumerate(col.envelopes) if any(r.reading_id == reading_id for r in e.readings)
        )
        return col.arrivals[index]


def test_sos_after_an_outage_does_not_wait_out_the_backoff(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    """The issue's case: the cloud broker is back, the agent does not know yet (it waits out a
    long backoff), an SOS is pressed: it reaches the cloud broker within seconds."""
    fleet = Fleet({DOOR: 3, SOS: 1})
    field, cloud, agent, waiting_since = _agent_in_long_wait(tmp_path, make_broker, agent_factory, fleet)
    pub = Publisher(field)
    publishers.append(pub)
    cloud.start()
    col = Collector(cloud)
    collectors.append(col)
    topic, payload, sos = fleet.payload(fleet.of(SOS)[0], events=("sos_pressed",))
    pressed = time.monotonic()
    # Without the fast lane the agent's next attempt is still LONG_WAIT_S - this far away.
    assert pressed - waiting_since < LONG_WAIT_S - 2 * WITHIN_S, "the test itself was too slow"
    pub.publish(topic, payload)
    assert col.wait_for(lambda c: sos.reading_id in c.reading_ids(), WITHIN_S), agent.lines()[-8:]
    assert _arrival(col, sos.reading_id) - pressed < WITHIN_S
    assert agent.count("reconnect_hurried") == 1
    assert agent.terminate() == 0


def test_sos_during_an_outage_retries_at_the_short_interval(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    """An SOS pressed while the cloud broker is still down: the agent retries about every
    ``cloud.alarm_retry_s`` until the broker is back, then sends it at once."""
    fleet = Fleet({DOOR: 3, SOS: 1})
    col_box: list[Collector] = []
    field, cloud, agent, _ = _agent_in_long_wait(
        tmp_path, make_broker, agent_factory, fleet, before_outage=col_box.append
    )
    col = col_box[0]
    collectors.append(col)
    broker = f"{cloud.host}:{cloud.port}"
    pub = Publisher(field)
    publishers.append(pub)
    topic, payload, sos = fleet.payload(fleet.of(SOS)[0], events=("sos_pressed",))
    pub.publish(topic, payload, wait=True)
    agent.wait_log("reconnect_hurried")

    def hurried_attempts() -> list[dict[str, object]]:
        return [
            line
            for line in agent.lines()
            if line.get("event") == "connect_failed" and line.get("broker") == broker and line.get("hurried")
        ]

    deadline = time.monotonic() + 3 * WITHIN_S
    while len(hurried_attempts()) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    attempts = hurried_attempts()
    assert len(attempts) >= 3, agent.lines()[-8:]
    assert all(float(str(a["retry_in_s"])) <= 1.0 for a in attempts)
    cloud.start()
    started = time.monotonic()
    # The collector's persistent session (on the broker's disk across the restart) queues the
    # SOS for it even if the agent sends it before the collector is back.
    assert col.wait_for(lambda c: sos.reading_id in c.reading_ids(), WITHIN_S), agent.lines()[-8:]
    assert time.monotonic() - started < WITHIN_S
    assert agent.terminate() == 0


# -- a broker that delivers to nobody --------------------------------------------------------


async def test_a_batch_the_cloud_broker_delivers_to_nobody_is_kept_and_sent_again(
    tmp_path: Path, make_broker: Callable[..., MosquittoBroker]
) -> None:
    """Mosquitto answers a PUBLISH nobody subscribes to with "no matching subscribers" (after a
    restart it has forgotten the ingest's shared subscription until the ingest subscribes again):
    the uplink keeps the batch and sends it again until someone has it."""
    broker = make_broker()
    buffer = await Buffer.open(tmp_path / "b.db", max_bytes=1 << 30, wall=lambda: NOW)
    async with running_link(broker) as (link, _logs):
        await asyncio.wait_for(link.wait_connected(), 10)
        uplink = Uplink(
            link=link,
            buffer=buffer,
            topic="linli/v1/c/g/up",
            gateway_id="g",
            community_id="c",
            batch_max_latency_s=0.01,
        )
        task = asyncio.create_task(uplink.run())
        collector: Collector | None = None
        try:
            await buffer.commit(_intake([(_reading(1, alarm=True), True)]))
            uplink.notify(alarm=1, telemetry=0)
            await _until(lambda: uplink.unheard == 1)  # answered "no matching subscribers": kept
            assert uplink.batches_sent == 0
            assert not uplink.idle
            collector = await asyncio.to_thread(Collector, broker)
            assert await asyncio.to_thread(lambda: collector.wait_for(lambda c: len(c.envelopes) >= 1, 10))
            await _until(lambda: uplink.idle)
            assert uplink.batches_sent == 1
            assert collector.envelopes[0].batch_class == "alarm"
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            if collector is not None:
                collector.close()
            await buffer.close()


async def test_batches_waiting_to_go_again_keep_their_places_in_the_window(
    tmp_path: Path, make_broker: Callable[..., MosquittoBroker]
) -> None:
    """A backlog behind a broker that delivers to nobody is not formed into batches in memory: a
    batch waiting to go again keeps its place in its class's window. (Before, each place it freed
    formed another batch: `linli bench edge`'s 200,000-reading backlog, drained after a cloud
    broker restart, became 400 batches held in memory, 45 MB more at the agent's peak.)"""
    broker = make_broker()
    buffer = await Buffer.open(tmp_path / "b.db", max_bytes=1 << 30, wall=lambda: NOW)
    async with running_link(broker) as (link, _logs):
        await asyncio.wait_for(link.wait_connected(), 10)
        uplink = Uplink(
            link=link,
            buffer=buffer,
            topic="linli/v1/c/g/up",
            gateway_id="g",
            community_id="c",
            batch_max_readings=1,
            batch_max_latency_s=0.01,
            alarm_batches_in_flight=4,
        )
        task = asyncio.create_task(uplink.run())
        try:
            await buffer.commit(_intake([(_reading(i, alarm=True), True) for i in range(20)]))
            uplink.notify(alarm=20, telemetry=0)
            # Each batch of the window sent three times and answered "no matching subscribers".
            await _until(lambda: uplink.batches_unheard >= 12)
            stats = await buffer.stats()
            assert (stats.batches, stats.alarm_readings) == (4, 16)
            assert uplink.unheard + uplink.in_flight == 4
            assert uplink.batches_sent == 0
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            await buffer.close()


@pytest.mark.parametrize("turns", range(6))
async def test_a_cancel_landing_while_the_uplink_reaps_its_waiters_ends_the_task(
    tmp_path: Path, turns: int
) -> None:
    """The agent's shutdown cancels every task once. A cancel that landed while the uplink awaited
    the waiters it had just cancelled was swallowed with theirs, and the uplink went on, so the
    agent never exited (seen under emulation, where that moment is longer). Cancelled at each of
    the first suspension points of a loop of `_wait`, the task must end."""
    buffer = await Buffer.open(tmp_path / "b.db", max_bytes=1 << 30, wall=lambda: NOW)
    link = SilentLink()
    link.up()
    uplink = Uplink(link=link, buffer=buffer, topic="t", gateway_id="g", community_id="c")  # type: ignore[arg-type]

    async def spin() -> None:
        while True:
            await uplink._wait(0)

    task = asyncio.create_task(spin())
    try:
        for _ in range(turns):
            await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
    finally:
        await buffer.close()

"""The field link against a tiny broker on loopback that misbehaves on purpose: an MQTT 3.1.1
answer, refusals, a DISCONNECT with a reason, garbage, a packet above the Maximum Packet Size, and
silence (keep-alive, on a fake clock). Each ends the connection with one clear log line; the link
reconnects and never raises."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from edge.fieldlink import FieldLink
from edge.logs import Logger
from edge.mqtt import Message

Session = Callable[["Peer"], Awaitable[None]]


class LogEvents(logging.Handler):
    """Records the link's log events; `wait` returns when one has been logged."""

    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []
        self._changed = asyncio.Event()

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.getMessage(), dict(getattr(record, "fields", {}))))
        self._changed.set()

    def named(self, event: str) -> list[dict[str, Any]]:
        return [f for e, f in self.events if e == event]

    async def wait(self, event: str, count: int = 1, within_s: float = 10.0) -> dict[str, Any]:
        try:
            async with asyncio.timeout(within_s):
                while len(self.named(event)) < count:
                    self._changed.clear()
                    await self._changed.wait()
        except TimeoutError:
            raise AssertionError(f"no {event!r} x{count} in {within_s} s; logged: {self.events}") from None
        return self.named(event)[count - 1]


@dataclass
class Peer:
    """One connection to the fake broker."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    async def packet(self) -> tuple[int, bytes]:
        """The next packet from the link: (first byte, body)."""
        head = await self.reader.readexactly(2)
        length, shift, byte = head[1] & 0x7F, 7, head[1]
        while byte & 0x80:
            byte = (await self.reader.readexactly(1))[0]
            length |= (byte & 0x7F) << shift
            shift += 7
        return head[0], await self.reader.readexactly(length)

    async def accept(self, connack: bytes = b"\x20\x03\x00\x00\x00") -> bytes:
        """Read CONNECT, answer `connack`, answer the SUBSCRIBE if one follows; the CONNECT body."""
        first, connect = await self.packet()
        assert first == 0x10
        self.writer.write(connack)
        return connect

    async def answer_subscribe(self) -> None:
        first, body = await self.packet()
        assert first == 0x82
        self.writer.write(b"\x90\x04" + body[:2] + b"\x00\x01")

    def send(self, data: bytes) -> None:
        self.writer.write(data)


@dataclass
class FakeBroker:
    host: str
    port: int
    sessions: list[Session]
    peers: list[Peer] = field(default_factory=list)
    connected: asyncio.Queue[Peer] = field(default_factory=asyncio.Queue)


@contextlib.asynccontextmanager
async def fake_broker(*sessions: Session) -> AsyncIterator[FakeBroker]:
    """A broker that runs ``sessions[i]`` for the i-th connection (the last one for the rest)."""
    broker = FakeBroker("127.0.0.1", 0, list(sessions))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = Peer(reader, writer)
        n = len(broker.peers)
        broker.peers.append(peer)
        broker.connected.put_nowait(peer)
        try:
            await broker.sessions[min(n, len(broker.sessions) - 1)](peer)
            await reader.read()  # until the link closes
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, broker.host, 0)
    broker.port = server.sockets[0].getsockname()[1]
    try:
        yield broker
    finally:
        server.close()
        for peer in broker.peers:
            peer.writer.close()
        await server.wait_closed()


class FakeClock:
    """`monotonic` for the link; its keep-alive loop sleeps forever and the test ticks by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now

    async def sleep(self, _seconds: float) -> None:
        await asyncio.Event().wait()


@contextlib.asynccontextmanager
async def running_link(broker: FakeBroker, **kwargs: Any) -> AsyncIterator[tuple[FieldLink, LogEvents]]:
    records = LogEvents()
    logger = logging.getLogger(f"test.fieldlink.{id(records)}")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    got: list[Message] = kwargs.pop("got", [])
    link = FieldLink(
        host=broker.host,
        port=broker.port,
        client_id="t-fake",
        on_message=got.append,
        backoff_base_s=0.01,
        backoff_cap_s=0.05,
        connect_timeout_s=5,
        log=Logger(logger),
        **kwargs,
    )
    task = asyncio.create_task(link.run())
    try:
        yield link, records
        assert not task.done(), "run() ended on its own"
    finally:
        await link.close(grace_s=1)
        await task
        logger.removeHandler(records)


async def _idle(peer: Peer) -> None:
    await peer.accept()


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (1, "unacceptable protocol version (MQTT 3.1.1 code 0x01)"),
        (4, "bad user name or password (MQTT 3.1.1 code 0x04)"),
        (5, "not authorized (MQTT 3.1.1 code 0x05)"),
    ],
)
async def test_the_311_answer_of_an_old_broker_is_a_named_refusal(code: int, words: str) -> None:
    async def old_broker(peer: Peer) -> None:
        await peer.accept(bytes((0x20, 2, 0, code)))

    async with fake_broker(old_broker) as broker, running_link(broker) as (link, log):
        failed = await log.wait("connect_failed", count=2)  # refused, and refused again after a backoff
        assert failed["error"] == f"127.0.0.1:{broker.port} refused the connection: {words}"
        assert not link.connected


async def test_a_v5_refusal_is_named_with_the_brokers_reason_string() -> None:
    async def refusing(peer: Peer) -> None:
        await peer.accept(b"\x20\x0a\x00\x8a\x07\x1f\x00\x04gone")

    async with fake_broker(refusing) as broker, running_link(broker) as (_link, log):
        failed = await log.wait("connect_failed")
        assert "refused the connection: banned: gone (MQTT 5 code 0x8a)" in failed["error"]


async def test_a_broker_disconnect_is_logged_with_its_reason_and_the_link_reconnects() -> None:
    async def taken_over(peer: Peer) -> None:
        await peer.accept()
        await peer.answer_subscribe()
        peer.send(b"\xe0\x0f\x8e\x0d\x1f\x00\x0aother gw-1")

    async def normal(peer: Peer) -> None:
        await peer.accept(b"\x20\x03\x01\x00\x00")
        await peer.answer_subscribe()

    async with (
        fake_broker(taken_over, normal) as broker,
        running_link(broker, subscriptions=["t/#"]) as (link, log),
    ):
        gone = await log.wait("broker_disconnected")
        assert gone["reason"] == "0x8e session taken over"
        assert gone["reason_string"] == "other gw-1"
        await log.wait("connected", count=2)
        await asyncio.wait_for(link.wait_subscribed(), 10)
        assert link.session_present
        assert len(broker.peers) == 2
        assert [e for e, _ in log.events if e not in ("connected", "subscribed")] == ["broker_disconnected"]


async def test_a_refused_subscription_is_logged_by_name() -> None:
    async def acl(peer: Peer) -> None:
        await peer.accept()
        first, body = await peer.packet()
        assert first == 0x82
        peer.send(b"\x90\x0b" + body[:2] + b"\x06\x1f\x00\x03acl\x01\x87")  # the second filter: 0x87

    async with (
        fake_broker(acl) as broker,
        running_link(broker, subscriptions=["ok/#", "no/#"]) as (link, log),
    ):
        await asyncio.wait_for(link.wait_subscribed(), 10)
        refused = await log.wait("subscribe_refused")
        assert refused["codes"] == "0x87 not authorized"
        assert refused["reason_string"] == "acl"
        assert link.connected


@pytest.mark.parametrize(
    "garbage",
    [
        b"\x30\xff\xff\xff\xff\x7f",  # a remaining length of five bytes
        b"\x32\x06\x00\x02\xff\xfe\x00\x01",  # a topic that is not UTF-8
        b"\x30\x04\x00\x09ab",  # a topic longer than the packet
        b"\x10\x00",  # CONNECT, from a broker
        b"\xf0\x00\x00\x00",  # AUTH: not part of our conversation
    ],
)
async def test_a_malformed_stream_ends_the_connection_with_one_log_line(garbage: bytes) -> None:
    said: list[tuple[int, bytes]] = []

    async def babbling(peer: Peer) -> None:
        await peer.accept()
        peer.send(garbage + b"\x30\x05\x00\x01tok")  # a valid PUBLISH behind the garbage: never read
        said.append(await peer.packet())

    got: list[Message] = []
    async with (
        fake_broker(babbling, _idle) as broker,
        running_link(broker, got=got) as (link, log),
    ):
        violation = await log.wait("protocol_violation")
        assert "malformed" in violation["error"] or "unexpected packet type" in violation["error"]
        await log.wait("connected", count=2)
        assert said == [(0xE0, b"\x81")]  # DISCONNECT, malformed packet
        assert [e for e, _ in log.events if e not in ("connected", "subscribed")] == ["protocol_violation"]
        assert not got
        assert link.connected


async def test_a_packet_above_the_maximum_packet_size_gets_disconnect_0x95() -> None:
    limit = 64 * 1024
    said: list[tuple[int, bytes]] = []
    go = asyncio.Event()

    async def flooding(peer: Peer) -> None:
        connect = await peer.accept()
        assert b"\x27" + limit.to_bytes(4, "big") in connect  # the Maximum Packet Size announced
        await go.wait()
        peer.send(b"\x32\x80\x80\x80\x05")  # a PUBLISH of 10 MiB announced ...
        peer.send(b"\x00\x03t/x\x00\x01\x00" + bytes(256 * 1024))  # ... and the start of it
        said.append(await peer.packet())

    got: list[Message] = []
    async with (
        fake_broker(flooding, _idle) as broker,
        running_link(broker, got=got, max_packet_bytes=limit) as (link, log),
    ):
        await link.wait_connected()
        first = link._conn
        assert first is not None
        go.set()
        too_large = await log.wait("packet_too_large")
        assert too_large["size"] == 5 + (5 << 21)
        assert too_large["limit"] == limit
        await log.wait("connected", count=2)
        assert said == [(0xE0, b"\x95")]
        assert [e for e, _ in log.events if e not in ("connected", "subscribed")] == ["packet_too_large"]
        assert not got
        assert len(first.buf) == 256 * 1024  # the receive buffer never grew
        assert first.closed.done()


async def test_keepalive_pings_an_idle_broker_on_the_injected_clock() -> None:
    pings = asyncio.Queue[int]()

    async def answering(peer: Peer) -> None:
        await peer.accept()
        while True:
            first, _ = await peer.packet()
            pings.put_nowait(first)
            peer.send(b"\xd0\x00")

    clock = FakeClock()
    async with (
        fake_broker(answering) as broker,
        running_link(broker, keepalive_s=60, monotonic=clock.monotonic, sleep=clock.sleep) as (link, log),
    ):
        await link.wait_connected()
        epoch = link.epoch
        link.check_keep_alive()
        assert link.pings_sent == 0  # nothing due yet
        for _ in range(5):  # 5 x 46 s: well past 1.5 keep-alives, always answered
            clock.now += 46
            link.check_keep_alive()
            assert await asyncio.wait_for(pings.get(), 5) == 0xC0
            await _until(lambda: link.pings_answered == link.pings_sent)  # the PINGRESP read
        assert link.pings_sent == 5
        assert link.connected
        assert link.epoch == epoch
        assert not log.named("keepalive_timeout")


async def test_a_silent_broker_is_dropped_after_one_and_a_half_keepalives() -> None:
    async def silent(peer: Peer) -> None:
        await peer.accept()

    clock = FakeClock()
    async with (
        fake_broker(silent) as broker,
        running_link(broker, keepalive_s=60, monotonic=clock.monotonic, sleep=clock.sleep) as (link, log),
    ):
        await link.wait_connected()
        clock.now += 46
        link.check_keep_alive()  # PINGREQ
        assert link.pings_sent == 1
        clock.now += 44  # 90 s: exactly one and a half keep-alives, still within
        link.check_keep_alive()
        assert link.connected
        clock.now += 1
        link.check_keep_alive()
        timeout = await log.wait("keepalive_timeout")
        assert timeout["silent_s"] == 91
        await log.wait("connected", count=2)
        assert [e for e, _ in log.events if e not in ("connected", "subscribed")] == ["keepalive_timeout"]


async def test_a_paused_link_is_not_dropped_for_silence() -> None:
    clock = FakeClock()
    async with (
        fake_broker(_idle) as broker,
        running_link(broker, keepalive_s=60, monotonic=clock.monotonic, sleep=clock.sleep) as (link, log),
    ):
        await link.wait_connected()
        link.pause_reading()
        for _ in range(4):
            clock.now += 50
            link.check_keep_alive()
        assert link.connected
        assert link.pings_sent == 4  # PINGREQs still go out while paused
        assert not log.named("keepalive_timeout")


async def _until(predicate: Callable[[], bool]) -> None:
    """Until `predicate` holds: state the link changes when it reads from its socket."""
    async with asyncio.timeout(5):
        while not predicate():  # noqa: ASYNC110 - a socket read, not a timer
            await asyncio.sleep(0.005)

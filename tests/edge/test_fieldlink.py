"""The field link (`edge.fieldlink.FieldLink`) against a real Mosquitto: manual acknowledgement and
redelivery, Receive Maximum, stream framing, the Maximum Packet Size, pause, resubscription, mutual
TLS, and refusals (password, ACL).

Nothing here waits for time to pass: a test waits for the SUBACK (`wait_subscribed`), for a
ping round trip (the PINGRESP comes after everything the broker sent before it), for bytes in the
socket, or for a log event.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import struct
import subprocess
import termios
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.fieldlink import FieldLink
from edge.logs import Logger
from edge.mqtt import Message, tls_context
from simulators.services import MosquittoBroker, TlsFiles
from tests.edge.conftest import Publisher
from tests.edge.test_fieldlink_faults import FakeClock, LogEvents

pytestmark = pytest.mark.integration


def _link(broker: MosquittoBroker, got: list[Message], **kwargs: object) -> FieldLink:
    options: dict[str, object] = {
        "host": broker.host,
        "port": broker.port,
        "client_id": "t-field",
        "subscriptions": ["t/#"],
        "on_message": got.append,
        "backoff_base_s": 0.05,
        "backoff_cap_s": 0.2,
        **kwargs,
    }
    return FieldLink(**options)  # type: ignore[arg-type]


async def _until(predicate: Callable[[], bool], within_s: float = 10.0) -> None:
    async with asyncio.timeout(within_s):
        while not predicate():  # noqa: ASYNC110 - polling state the link exposes
            await asyncio.sleep(0.02)


async def _round_trip(link: FieldLink) -> None:
    """PINGREQ and its PINGRESP: whatever the broker had sent before has been read."""
    answered = link.pings_answered
    link.ping()
    await _until(lambda: link.pings_answered > answered)


def _unread_bytes(link: FieldLink) -> int:
    """Bytes waiting in the link's socket, not read (FIONREAD)."""
    assert link._conn is not None
    assert link._conn.transport is not None
    sock = link._conn.transport.get_extra_info("socket")
    out = fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0")
    return int(struct.unpack("i", out)[0])


def _logged(name: str) -> tuple[Logger, LogEvents]:
    records = LogEvents()
    logger = logging.getLogger(f"test.fieldlink.{name}.{id(records)}")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    return Logger(logger), records


async def _publish(
    broker: MosquittoBroker, items: list[tuple[str, bytes]], tls: TlsFiles | None = None
) -> None:
    def send() -> None:
        pub = Publisher(broker, tls=tls)
        try:
            for topic, payload in items:
                pub.publish(topic, payload, wait=True)
        finally:
            pub.close()

    await asyncio.to_thread(send)


async def test_unacknowledged_messages_come_back_after_reconnect(
    make_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = make_broker()
    got: list[Message] = []
    link = _link(broker, got, receive_maximum=5)
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_subscribed(), 10)
        await _publish(broker, [("t/x", str(i).encode()) for i in range(8)])
        await _until(lambda: len(got) >= 5)
        await _round_trip(link)  # anything beyond the window would have come before the PINGRESP
        assert [m.payload for m in got] == [str(i).encode() for i in range(5)]  # Receive Maximum
        assert all(m.qos == 1 and m.topic == "t/x" and m.epoch == link.epoch for m in got)
        link.ack(got[0])
        link.ack(got[1])
        await _until(lambda: len(got) >= 7)  # two acks opened the window by two
        seen = len(got)
        assert [m.payload for m in got] == [str(i).encode() for i in range(seen)]
        assert link.acks_sent == 2
        first_epoch = link.epoch
        broker.stop()
        await _until(lambda: not link.connected)
        link.ack(got[2])  # delivered on the dead connection: dropped, the broker redelivers it
        broker.start()
        await _until(lambda: link.connected and link.epoch > first_epoch)
        await _until(lambda: len(got) >= seen + 5)
        await _round_trip(link)
        again = [m.payload for m in got[seen:]]
        # The unacknowledged ones first, in order (then, after them, the rest of the queue).
        assert again[:5] == [str(i).encode() for i in range(2, 7)]
        assert not {b"0", b"1"} & set(again)  # acknowledged: gone
        assert link.session_present
        assert link.acks_sent == 2
    finally:
        await link.close()
        await task


async def test_framing_of_large_and_many_small_messages(make_broker: Callable[..., MosquittoBroker]) -> None:
    broker = make_broker()
    got: list[Message] = []
    # A Maximum Packet Size above the receive buffer's 256 KiB: the big message gets a buffer of its own.
    link = _link(broker, got, receive_maximum=2000, max_packet_bytes=1 << 20)
    link_got = got

    def on_message(m: Message) -> None:
        link_got.append(m)
        link.ack(m)

    link._on_message = on_message
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_subscribed(), 10)
        big = bytes(range(256)) * 1200  # 307,200 bytes: more than one socket read, 3-byte length
        items = [("t/big", big)] + [(f"t/s/{i}", f"m{i}".encode() * (i % 40)) for i in range(3000)]
        items.append(("t/utf8/门磁", "开".encode()))
        await _publish(broker, items)
        await _until(lambda: len(got) >= len(items), 30)
        assert [(m.topic, m.payload) for m in got] == items
        await _until(lambda: link.acks_sent == len(items))  # flushed in the next loop iteration
    finally:
        await link.close()
        await task


async def test_pause_keepalive_and_resubscription(make_broker: Callable[..., MosquittoBroker]) -> None:
    broker = make_broker()
    got: list[Message] = []
    clock = FakeClock()
    link = _link(
        broker, got, keepalive_s=60, receive_maximum=100, monotonic=clock.monotonic, sleep=clock.sleep
    )
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_subscribed(), 10)
        epoch = link.epoch
        link.pause_reading()
        await _publish(broker, [("t/p", b"1")])
        await _until(lambda: _unread_bytes(link) > 0)  # delivered into the socket, not read
        for _ in range(4):  # paused for four keep-alives: still connected, PINGREQs still go out
            clock.now += 60
            link.check_keep_alive()
        assert not got
        assert link.connected
        assert link.pings_sent == 4
        assert link.epoch == epoch
        link.resume_reading()
        await _until(lambda: len(got) == 1)
        await _until(lambda: link.pings_answered == 4)  # every PINGREQ answered, none lost
        link.ack(got[0])
        link.set_subscriptions(["u/#"])
        await asyncio.wait_for(link.wait_subscribed(), 10)
        await _publish(broker, [("t/p", b"2"), ("u/p", b"3")])
        await _until(lambda: len(got) == 2)  # "2" would have come first, were t/# still subscribed
        assert [m.payload for m in got] == [b"1", b"3"]
        assert link.epoch == epoch
    finally:
        await link.close()
        await task


async def test_mutual_tls_to_the_field_broker(
    make_broker: Callable[..., MosquittoBroker], test_pki: TlsFiles
) -> None:
    broker = make_broker(tls=test_pki, require_client_cert=True)
    got: list[Message] = []
    ctx = tls_context(
        ca_cert=test_pki.ca_cert, client_cert=test_pki.client_cert, client_key=test_pki.client_key
    )
    link = _link(broker, got, tls=ctx)
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_subscribed(), 10)
        await _publish(broker, [("t/tls", b"over tls")], tls=test_pki)
        await _until(lambda: len(got) == 1)
        assert got[0].payload == b"over tls"
    finally:
        await link.close()
        await task
    # Without a client certificate the broker refuses the handshake: the link keeps retrying.
    log, records = _logged("nocert")
    refused = _link(broker, [], tls=tls_context(ca_cert=test_pki.ca_cert), client_id="t-nocert", log=log)
    task = asyncio.create_task(refused.run())
    try:
        await records.wait("connect_failed", count=2)
        assert not refused.connected
        assert refused.epoch >= 2
    finally:
        await refused.close()
        await task


def _password_file(path: Path, user: str, password: str) -> Path:
    subprocess.run(
        ["mosquitto_passwd", "-b", "-c", str(path), user, password], check=True, capture_output=True
    )
    return path


async def test_refused_connections_are_named(
    make_broker: Callable[..., MosquittoBroker], tmp_path: Path
) -> None:
    passwords = _password_file(tmp_path / "passwd", "gw", "right")
    broker = make_broker(extra_config=["allow_anonymous false", f"password_file {passwords}"])
    # Mosquitto 2.0 answers both with 0x87 (a fake broker in test_fieldlink_faults sends the others).
    cases = [
        ({"username": "gw", "password": "wrong"}, "not authorized (MQTT 5 code 0x87)"),
        ({}, "not authorized (MQTT 5 code 0x87)"),
    ]
    for credentials, words in cases:
        log, records = _logged("refused")
        link = _link(broker, [], log=log, **credentials)
        task = asyncio.create_task(link.run())
        try:
            failed = await records.wait("connect_failed")
            assert failed["error"] == f"{broker.host}:{broker.port} refused the connection: {words}"
            await records.wait("connect_failed", count=2)  # retried after a backoff, refused again
            assert not link.connected
            assert not task.done()
        finally:
            await link.close()
            await task
    got: list[Message] = []
    link = _link(broker, got, username="gw", password="right")  # noqa: S106 - a test value
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_subscribed(), 10)
    finally:
        await link.close()
        await task


async def test_the_broker_drops_a_message_above_the_maximum_packet_size(
    make_broker: Callable[..., MosquittoBroker],
) -> None:
    broker = make_broker()
    got: list[Message] = []
    log, records = _logged("poison")
    link = _link(broker, got, receive_maximum=10, max_packet_bytes=64 * 1024, log=log)
    task = asyncio.create_task(link.run())

    def on_message(m: Message) -> None:
        got.append(m)
        link.ack(m)

    link._on_message = on_message
    try:
        await asyncio.wait_for(link.wait_subscribed(), 10)
        before = [("t/a", b"before"), ("t/b", b"x" * 60_000)]  # just within the limit
        poison = [("t/poison", b"p" * (10 << 20))]  # 10 MiB
        after = [(f"t/{i % 7}", f"after {i}".encode()) for i in range(30)]
        await _publish(broker, before + poison + after)
        await _until(lambda: len(got) >= len(before) + len(after), 30)
        await _round_trip(link)
        assert [(m.topic, m.payload) for m in got] == before + after
        assert not records.named("packet_too_large")
        assert not records.named("connection_lost")
        assert link.connects == 1
    finally:
        await link.close()
        await task

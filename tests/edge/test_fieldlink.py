"""The field link (`edge.fieldlink.FieldLink`) against a real Mosquitto: manual acknowledgement and
redelivery, Receive Maximum, stream framing, keep-alive, pause, resubscription, mutual TLS."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from edge.fieldlink import FieldLink
from edge.mqtt import Message, tls_context
from simulators.services import MosquittoBroker, TlsFiles
from tests.edge.conftest import Publisher

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
        await asyncio.wait_for(link.wait_connected(), 10)
        await asyncio.sleep(0.2)  # the SUBACK
        await _publish(broker, [("t/x", str(i).encode()) for i in range(8)])
        await _until(lambda: len(got) >= 5)
        await asyncio.sleep(0.3)
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
        await asyncio.sleep(0.3)
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
        await asyncio.wait_for(link.wait_connected(), 10)
        await asyncio.sleep(0.2)
        big = bytes(range(256)) * 1200  # 307,200 bytes: more than one socket read, 3-byte length
        items = [("t/big", big)] + [(f"t/s/{i}", f"m{i}".encode() * (i % 40)) for i in range(3000)]
        items.append(("t/utf8/门磁", "开".encode()))
        await _publish(broker, items)
        await _until(lambda: len(got) >= len(items), 30)
        assert [(m.topic, m.payload) for m in got] == items
        assert link.acks_sent == len(items)
    finally:
        await link.close()
        await task


async def test_keepalive_pause_and_resubscription(make_broker: Callable[..., MosquittoBroker]) -> None:
    broker = make_broker()
    got: list[Message] = []
    link = _link(broker, got, keepalive_s=1, receive_maximum=100)
    task = asyncio.create_task(link.run())
    try:
        await asyncio.wait_for(link.wait_connected(), 10)
        epoch = link.epoch
        await asyncio.sleep(3.5)  # idle for more than three keep-alives: PINGREQs keep it up
        assert link.connected
        assert link.epoch == epoch
        link.pause_reading()
        await _publish(broker, [("t/p", b"1")])
        await asyncio.sleep(3.5)  # paused past the keep-alive: still connected, nothing read
        assert not got
        assert link.connected
        assert link.epoch == epoch
        link.resume_reading()
        await _until(lambda: len(got) == 1)
        link.ack(got[0])
        link.set_subscriptions(["u/#"])
        await asyncio.sleep(0.3)
        await _publish(broker, [("t/p", b"2"), ("u/p", b"3")])
        await _until(lambda: len(got) == 2)
        await asyncio.sleep(0.3)
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
        await asyncio.wait_for(link.wait_connected(), 10)
        await asyncio.sleep(0.2)
        await _publish(broker, [("t/tls", b"over tls")], tls=test_pki)
        await _until(lambda: len(got) == 1)
        assert got[0].payload == b"over tls"
    finally:
        await link.close()
        await task
    # Without a client certificate the broker refuses the handshake: the link keeps retrying.
    refused = _link(broker, [], tls=tls_context(ca_cert=test_pki.ca_cert), client_id="t-nocert")
    task = asyncio.create_task(refused.run())
    try:
        await asyncio.sleep(1.0)
        assert not refused.connected
        assert refused.epoch >= 2
    finally:
        await refused.close()
        await task

"""``linli bench fieldlink``: readings per second through the field link, and what the alternatives do.

Compares, in one run on one machine, three ways of carrying the field link:

- ``lean``: `edge.fieldlink.FieldLink`, the agent's own asyncio link;
- ``mqtt5``: the same link with PUBLISH decoding and PUBACK encoding done by the ``mqtt5``
  package (a sans-IO MQTT v5 codec written in Rust), everything else unchanged;
- ``gmqtt``: the ``gmqtt`` client with ``optimistic_acknowledgement=False``: its PUBACK goes out
  when the message handler's coroutine returns, and the handler returns after the commit.

Method (docs/benchmarks.md, "Field link: alternatives measured", has the figures):

1. One private Mosquitto on loopback. For every implementation a persistent session (its own
   client id, subscribed to ``bench/#`` at QoS 1) is made first, then the link goes away and
   ``--messages`` QoS 1 messages (realistic ~110-byte JSON payloads from 2,000 device topics) are
   published once: the broker queues them for each session.
2. Each implementation in turn resumes its session with Receive Maximum 1000 (the agent's default)
   and drains its queue. A message is acknowledged only after a commit-like step: messages are
   gathered into batches (500 messages or 20 ms, the agent's defaults) that are inserted into an
   in-memory SQLite table and committed, and only then are their PUBACKs sent.
3. ``readings_per_s`` is the messages divided by the time from the CONNECT to the last commit;
   ``cpu_us_per_reading`` is this process's CPU time over the same span divided by the messages
   (the broker runs in its own process, pinned to another core when there is one). Every message
   must arrive exactly once, or the run fails. For the alternatives, ``share_of_lean`` compares
   readings per second and ``cpu_share_of_lean`` the CPU per reading (lean's over theirs: what
   they would reach where the CPU is the limit, as on a gateway); the second is the steadier one
   on a busy machine.
4. ``--rounds`` repeats step 1-2, rotating the order of the implementations; the figures are the
   median of the rounds.

The alternatives are imported only when asked for; a missing one is a clear error.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec

IMPLS = ("lean", "mqtt5", "gmqtt")
_TOPIC_FILTER = "bench/#"
_RECEIVE_MAXIMUM = 1000
_COMMIT_MAX = 500
_COMMIT_INTERVAL_S = 0.020


class BenchError(Exception):
    """The benchmark could not run (an alternative is not installed, or a message went missing)."""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "fieldlink", help="field link: readings/s through the lean link, mqtt5-codec and gmqtt variants"
    )
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    p.add_argument(
        "--impl",
        action="append",
        choices=IMPLS,
        help="implementation to measure (repeatable; default: lean and each alternative installed)",
    )
    p.add_argument("--messages", type=int, default=100_000, help="messages drained per round")
    p.add_argument("--rounds", type=int, default=3, help="rounds; the figures are their medians")
    p.set_defaults(handler=_handler)


def _installed(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def _require(module: str) -> None:
    if not _installed(module):
        raise BenchError(f"{module} is not installed: pip install {module}")


# -- the commit-like step -------------------------------------------------------------------------


class _Committer:
    """Gathers messages into batches, commits each to SQLite, then calls every message's ack."""

    def __init__(self, expected: int) -> None:
        self.db = sqlite3.connect(":memory:")
        self.db.execute("CREATE TABLE r (topic TEXT NOT NULL, payload BLOB NOT NULL)")
        self.pending: list[tuple[str, bytes]] = []
        self.acks: list[Callable[[], None]] = []
        self.ready = asyncio.Event()
        self.done = asyncio.Event()
        self.expected = expected
        self.committed = 0
        self.payloads: set[bytes] = set()
        self.last_commit = 0.0

    def add(self, topic: str, payload: bytes, ack: Callable[[], None]) -> None:
        self.pending.append((topic, payload))
        self.acks.append(ack)
        if len(self.pending) >= _COMMIT_MAX:
            self.ready.set()

    async def run(self) -> None:
        while not self.done.is_set():
            try:
                async with asyncio.timeout(_COMMIT_INTERVAL_S):
                    await self.ready.wait()
            except TimeoutError:
                pass
            self.ready.clear()
            if not self.pending:
                continue
            rows, self.pending = self.pending, []
            acks, self.acks = self.acks, []
            self.db.executemany("INSERT INTO r VALUES (?, ?)", rows)
            self.db.commit()
            self.payloads.update(p for _, p in rows)
            self.committed += len(rows)
            for ack in acks:
                ack()
            if self.committed >= self.expected:
                self.last_commit = time.monotonic()
                self.done.set()


# -- the implementations --------------------------------------------------------------------------


async def _drain_lean(host: str, port: int, client_id: str, committer: _Committer, *, codec: str) -> None:
    from edge.fieldlink import FieldLink
    from edge.mqtt import Message

    link_cls = _mqtt5_link() if codec == "mqtt5" else FieldLink

    def on_message(message: Message) -> None:
        committer.add(message.topic, message.payload, lambda: link.ack(message))

    link = link_cls(
        host=host,
        port=port,
        client_id=client_id,
        on_message=on_message,
        receive_maximum=_RECEIVE_MAXIMUM,
        subscriptions=(),  # the session has the subscription
    )
    async with asyncio.TaskGroup() as tg:
        tg.create_task(link.run(), name="bench-link")
        tg.create_task(committer.run(), name="bench-committer")
        await committer.done.wait()
        await link.close()


async def _drain_gmqtt(host: str, port: int, client_id: str, committer: _Committer) -> None:
    import gmqtt
    from gmqtt.mqtt.constants import MQTTv50

    loop = asyncio.get_running_loop()

    async def on_message(_client: Any, topic: str, payload: bytes, _qos: int, _props: Any) -> int:
        committed = loop.create_future()
        committer.add(topic, payload, lambda: committed.set_result(None))
        await committed
        return 0  # PUBACK reason code: success

    client = gmqtt.Client(
        client_id,
        clean_session=False,
        optimistic_acknowledgement=False,
        session_expiry_interval=3600,
        receive_maximum=_RECEIVE_MAXIMUM,
    )
    client.on_message = on_message
    async with asyncio.TaskGroup() as tg:
        tg.create_task(committer.run(), name="bench-committer")
        await client.connect(host, port, version=MQTTv50, keepalive=30)
        await committer.done.wait()
        await asyncio.sleep(0.05)  # let the last PUBACKs go out (gmqtt sends them from callbacks)
        await client.disconnect()


def _mqtt5_link() -> type[Any]:
    """`FieldLink` with PUBLISH decoding and PUBACK encoding done by the ``mqtt5`` package.

    The hot path goes through ``mqtt5.read`` and ``PubAckPacket.write``; framing (with the size
    limit) and the rare control packets stay with `edge.mqttcodec`, so the comparison is of the
    codec alone."""
    import mqtt5

    from edge import fieldlink, mqttcodec
    from edge.mqtt import Message

    class Mqtt5Connection(fieldlink._Connection):
        def _parse(self) -> None:
            buf, pos, end, limit = self.buf, self.start, self.end, self.limit
            link = self.link
            on_message, epoch = link._on_message, self.epoch
            view = memoryview(buf)
            try:
                while pos + 2 <= end and not self.paused:
                    first = buf[pos]
                    start, stop = mqttcodec.frame(buf, pos, end, limit)
                    if start < 0:
                        break
                    if stop > end:
                        self.need = stop - pos
                        break
                    if first & 0xF0 == mqttcodec.PUBLISH:
                        try:
                            packet, _ = mqtt5.read(view[pos:stop])
                        except (ValueError, IndexError) as exc:
                            raise mqttcodec.ProtocolViolation(str(exc)) from exc
                        if not isinstance(packet, mqtt5.PublishPacket):
                            raise mqttcodec.ProtocolViolation("not a PUBLISH")
                        on_message(
                            Message(
                                packet.topic,
                                packet.payload,
                                (first >> 1) & 3,
                                bool(first & 1),
                                packet.packet_id or 0,
                                epoch,
                            )
                        )
                    else:
                        link._on_control(self, mqttcodec.decode_control(first, bytes(buf[start:stop])))
                    pos = stop
            except mqttcodec.ProtocolViolation as exc:
                link._log.error("protocol_violation", error=str(exc))
                self.end_with(mqttcodec.MALFORMED_PACKET)
                return
            finally:
                view.release()
            if pos == end:
                self.start = self.end = 0
            else:
                self.start = pos

    class Mqtt5FieldLink(fieldlink.FieldLink):
        _connection_class = Mqtt5Connection

        def ack(self, message: Message) -> None:
            if message.qos != 1 or message.epoch != self._epoch or self._conn is None:
                return
            self._acks.append(mqtt5.PubAckPacket(message.mid).write())
            if not self._ack_scheduled:
                self._ack_scheduled = True
                asyncio.get_running_loop().call_soon(self._flush_acks)

    return Mqtt5FieldLink


# -- the run --------------------------------------------------------------------------------------


def _payloads(n: int) -> list[tuple[str, bytes]]:
    out = []
    for i in range(n):
        dev = i % 2000
        body = {
            "seq": i,
            "battery": 60 + i % 40,
            "contact": bool(i & 1),
            "linkquality": 100 + i % 155,
            "voltage": 2900 + i % 300,
            "device_temperature": 21 + i % 7,
        }
        out.append((f"bench/dev-{dev:05d}", msgspec.json.encode(body)))
    return out


def _prime_sessions(host: str, port: int, client_ids: list[str]) -> None:
    """A persistent session subscribed to the bench topics, for each client id."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    for client_id in client_ids:
        client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        subscribed: list[bool] = []
        client.on_subscribe = lambda *_a, done=subscribed: done.append(True)
        client.connect(host, port, clean_start=True, properties=props)
        client.subscribe(_TOPIC_FILTER, qos=1)
        deadline = time.monotonic() + 10
        while not subscribed:
            if time.monotonic() > deadline:
                raise BenchError(f"no SUBACK for {client_id}")
            client.loop(0.05)
        client.disconnect()
        client.loop(0.05)


def _publish(host: str, port: int, items: list[tuple[str, bytes]]) -> None:
    from simulators.mqtt import MqttPublisher

    pub = MqttPublisher(host=host, port=port, client_id="bench-publisher", qos=1)
    try:
        for topic, payload in items:
            pub.publish(topic, payload)
        left = pub.drain(120)
        if left:
            raise BenchError(f"{left} messages not acknowledged by the broker")
    finally:
        pub.close()


async def _drain(impl: str, host: str, port: int, client_id: str, n: int) -> dict[str, float]:
    committer = _Committer(n)
    t0 = time.monotonic()
    cpu0 = time.process_time()
    async with asyncio.timeout(max(60.0, n / 1000)):
        if impl == "gmqtt":
            await _drain_gmqtt(host, port, client_id, committer)
        else:
            await _drain_lean(host, port, client_id, committer, codec=impl)
    cpu = time.process_time() - cpu0
    elapsed = committer.last_commit - t0
    if committer.committed != n or len(committer.payloads) != n:
        raise BenchError(
            f"{impl}: {committer.committed} messages committed, {len(committer.payloads)} distinct, "
            f"{n} published"
        )
    return {
        "readings_per_s": round(n / elapsed, 1),
        "cpu_us_per_reading": round(cpu / n * 1e6, 2),
    }


def run_bench(*, impls: list[str], messages: int, rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    from simulators.services import MosquittoBroker

    for impl in impls:
        if impl != "lean":
            _require(impl)
    cpus = sorted(os.sched_getaffinity(0))
    items = _payloads(messages)
    results: dict[str, list[dict[str, float]]] = {impl: [] for impl in impls}
    with (
        tempfile.TemporaryDirectory(prefix="linli-bench-fieldlink-") as tmp,
        MosquittoBroker(workdir=Path(tmp) / "broker") as broker,
    ):
        if len(cpus) > 1 and broker.pid is not None:
            os.sched_setaffinity(broker.pid, {cpus[-1]})
            os.sched_setaffinity(0, {cpus[0]})
        try:
            for r in range(rounds):
                order = impls[r % len(impls) :] + impls[: r % len(impls)]
                ids = {impl: f"bench-{impl}-{r}" for impl in order}
                _prime_sessions(broker.host, broker.port, list(ids.values()))
                _publish(broker.host, broker.port, items)
                for impl in order:
                    figures = asyncio.run(_drain(impl, broker.host, broker.port, ids[impl], messages))
                    log(f"round {r + 1}/{rounds} {impl}: {figures}")
                    results[impl].append(figures)
        finally:
            os.sched_setaffinity(0, cpus)
    out: dict[str, Any] = {"messages": messages, "rounds": rounds}
    for impl, runs in results.items():
        out[impl] = {key: round(statistics.median(run[key] for run in runs), 2) for key in runs[0]}
    if "lean" in results:
        base, base_cpu = out["lean"]["readings_per_s"], out["lean"]["cpu_us_per_reading"]
        for impl in results:
            if impl != "lean":
                # Wall clock (depends on how busy the machine is) and CPU (steadier) both.
                out[impl]["share_of_lean"] = round(out[impl]["readings_per_s"] / base, 3)
                out[impl]["cpu_share_of_lean"] = round(base_cpu / out[impl]["cpu_us_per_reading"], 3)
    return out


def _handler(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    if args.impl:
        impls = list(dict.fromkeys(args.impl))
    else:
        impls = [impl for impl in IMPLS if impl == "lean" or _installed(impl)]
        for impl in IMPLS:
            if impl not in impls:
                print(f"linli bench fieldlink: skipping {impl} (pip install {impl})", file=sys.stderr)
    try:
        figures = run_bench(impls=impls, messages=args.messages, rounds=args.rounds, log=log)
    except BenchError as exc:
        print(f"linli bench fieldlink: {exc}", file=sys.stderr)
        return 2
    print(msgspec.json.encode(figures).decode())
    return 0

"""The southbound link: a lean MQTT v5 subscriber for the field broker, with manual acknowledgement.

The field link receives every message the devices send, so its receive path is the agent's hot
path. paho-mqtt builds a `Properties` object and takes several locks per incoming PUBLISH, which
cost about half of the agent's CPU; this module runs the small part of MQTT v5 the field side
needs directly on an `asyncio.Protocol`, with the packets encoded and decoded by the pure
`edge.mqttcodec`:

- CONNECT with a stable client id, ``clean_start=0`` and a Session Expiry Interval (the broker
  keeps the session and the unacknowledged messages while the agent is away), Receive Maximum
  (the broker hands over at most that many unacknowledged messages), Maximum Packet Size (the
  broker drops larger messages for us instead of sending them), username/password, TLS;
- SUBSCRIBE at QoS 1 with retain handling 1 (retained messages only for a new subscription),
  UNSUBSCRIBE for filters dropped on reload, or left in the session by an earlier configuration;
  `wait_subscribed` returns once the broker answered;
- incoming PUBLISH at QoS 0 and 1 (QoS 2 is answered correctly but never requested), framed from
  the receive buffer in place, many per read;
- manual acknowledgement: `ack()` queues a PUBACK and every PUBACK queued during one event-loop
  iteration goes out in one ``write``. An ack for a message delivered on an earlier connection is
  dropped: the broker redelivers that message on the resumed session;
- PINGREQ when nothing was sent for three quarters of the keep-alive, and the connection is
  declared lost when the broker is silent for one and a half keep-alives (on an injected clock).

What a broker can send wrong ends the connection with one log line, never with an exception out
of the link: a refused CONNACK (``connect_failed``, the reason in words, e.g. "bad user name or
password"), a DISCONNECT (``broker_disconnected`` with the reason named), a packet larger than
the Maximum Packet Size (``packet_too_large``: DISCONNECT 0x95, memory never grows past the
limit), a malformed packet (``protocol_violation``: DISCONNECT 0x81). `run()` then reconnects with
capped, jittered exponential backoff, until `close()`. Topic aliases are never enabled (we send no
Topic Alias Maximum), so every PUBLISH names its topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from edge import mqttcodec
from edge.errors import MqttError
from edge.logs import Logger, get_logger
from edge.mqtt import Message, backoff_delay
from edge.mqttcodec import ConnectionRefused, PacketTooLarge, ProtocolViolation, reason_text

#: The receive buffer: the socket reads into it, packets are parsed in place.
_RECV_SIZE: Final = 256 * 1024
#: How long a DISCONNECT we send may take to leave before the connection is aborted.
_CLOSE_GRACE_S: Final = 5.0
#: The Maximum Packet Size announced in CONNECT unless told otherwise.
DEFAULT_MAX_PACKET_BYTES: Final = 256 * 1024

_PUBLISH: Final = mqttcodec.PUBLISH


class _Connection(asyncio.BufferedProtocol):
    """One TCP/TLS connection: frames the byte stream and hands packets to the link.

    The socket reads straight into one preallocated buffer (`asyncio.BufferedProtocol`), so
    receiving allocates nothing per read: per-read buffers of a quarter megabyte, freed a moment
    later, fragment the heap and make the RSS creep. Only a packet larger than the buffer (and
    within the Maximum Packet Size, which `mqttcodec.frame` checks from the fixed header, before
    the packet's body arrives) gets a buffer of its own size, until that packet is consumed: the
    buffer never exceeds ``max(256 KiB, max_packet_bytes)``.
    """

    def __init__(self, link: FieldLink, epoch: int) -> None:
        self.link = link
        self.epoch = epoch
        self.limit = link.max_packet_bytes
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(_RECV_SIZE)
        self.start = 0  # the first byte not yet parsed
        self.end = 0  # the end of the received bytes
        self.need = 0  # the size of the incomplete packet at `start`, once its header is in
        self.paused = False
        self.failed = False  # ended for a reason already logged (violation, DISCONNECT, silence)
        self.closed = asyncio.get_running_loop().create_future()
        self.last_rx = link._monotonic()
        self.last_tx = self.last_rx

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment] # a stream transport: TCP or TLS

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(exc)
        self.link._lost(self)

    def write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)
            self.last_tx = self.link._monotonic()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def end_with(self, reason_code: int) -> None:
        """Send DISCONNECT with `reason_code`, stop reading and close (after the write)."""
        self.failed = True
        self.paused = True
        self.start = self.end = self.need = 0
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()
            self.transport.write(mqttcodec.disconnect_packet(reason_code))
            self.transport.close()
            # A broker that does not read would keep the close waiting for the write.
            asyncio.get_running_loop().call_later(_CLOSE_GRACE_S, self.abort)

    def pause(self) -> None:
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        if self.failed:
            return
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if self.end > self.start:
            self._parse()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end == len(self.buf):
            pending = self.end - self.start
            if self.start == 0:
                # One packet larger than the buffer (`_parse` checked it against the limit): a
                # buffer of its size, for as long as it takes.
                bigger = bytearray(max(self.need, len(self.buf) + 1))
                bigger[:pending] = self.buf
                self.buf = bigger
            else:  # move the partial packet to the front (same length: no resize)
                self.buf[:pending] = bytes(self.buf[self.start : self.end])
            self.start, self.end = 0, pending
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = self.link._monotonic()
        self.end += nbytes
        if not self.paused:
            self._parse()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def _parse(self) -> None:
        buf, pos, end, limit = self.buf, self.start, self.end, self.limit
        link = self.link
        on_message, epoch = link._on_message, self.epoch
        decode_publish = mqttcodec.decode_publish
        try:
            while pos + 2 <= end and not self.paused:
                first, b1 = buf[pos], buf[pos + 1]
                # The remaining length, inlined for the common one- and two-byte cases.
                if b1 < 0x80:
                    start = pos + 2
                    stop = start + b1
                elif pos + 2 < end and buf[pos + 2] < 0x80:
                    start = pos + 3
                    stop = start + (b1 & 0x7F) + (buf[pos + 2] << 7)
                else:
                    start, stop = mqttcodec.frame(buf, pos, end, limit)
                    if start < 0:
                        break
                if stop - pos > limit:
                    raise PacketTooLarge(stop - pos, limit)
                if stop > end:
                    self.need = stop - pos
                    break
                if first & 0xF0 == _PUBLISH:
                    topic, payload, qos, mid = decode_publish(first, buf, start, stop)
                    on_message(Message(topic, payload, qos, bool(first & 1), mid, epoch))
                else:
                    link._on_control(self, mqttcodec.decode_control(first, bytes(buf[start:stop])))
                pos = stop
        except ConnectionRefused as exc:
            self.failed = self.paused = True
            link._refused(self, exc)
            self.abort()
            return
        except PacketTooLarge as exc:
            link._log.error(
                "packet_too_large",
                broker=link.broker,
                size=exc.size,
                limit=exc.limit,
                action="disconnect 0x95",
            )
            self.end_with(mqttcodec.PACKET_TOO_LARGE)
            return
        except ProtocolViolation as exc:
            link._log.error("protocol_violation", broker=link.broker, error=str(exc))
            self.end_with(mqttcodec.MALFORMED_PACKET)
            return
        if pos == end:
            self.start = self.end = 0
            if len(self.buf) > _RECV_SIZE:
                self.buf = bytearray(_RECV_SIZE)
        else:
            self.start = pos


class FieldLink:
    """The field broker connection (see the module docstring), reconnected until closed.

    Args:
        name: for logs.
        host, port: the broker.
        client_id: stable across restarts: the broker keys the session on it.
        on_message: called on the event loop for each PUBLISH; acknowledge with `ack`.
        tls: a context from `edge.mqtt.tls_context`, or None for plain TCP.
        username, password: credentials, if the broker wants them.
        keepalive_s: the keep-alive announced in CONNECT (the broker's Server Keep Alive wins).
        session_expiry_s: how long the broker keeps the session while we are away.
        receive_maximum: at most this many unacknowledged QoS 1 messages in flight to us.
        subscriptions: QoS 1 filters, (re)subscribed on every connect.
        unsubscribe: filters the broker's session may still hold from an earlier configuration:
            unsubscribed after every connect until an UNSUBACK confirms it (`unsubscribed`).
        connect_timeout_s: for TCP, TLS and the CONNACK, each.
        backoff_base_s, backoff_cap_s: reconnect delays; `rng` draws the jitter.
        log: the logger (``edge.mqtt.<name>`` by default).
        max_packet_bytes: the Maximum Packet Size announced in CONNECT; the receive buffer never
            grows beyond it (or 256 KiB), and a larger packet ends the connection (DISCONNECT 0x95).
        monotonic, sleep: the clock of the keep-alive (tests pass a fake one).
    """

    _connection_class: type[_Connection] = _Connection

    def __init__(
        self,
        *,
        name: str = "field",
        host: str,
        port: int,
        client_id: str,
        on_message: Callable[[Message], None],
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        keepalive_s: int = 30,
        session_expiry_s: int = 7 * 86400,
        receive_maximum: int | None = None,
        subscriptions: Sequence[str] = (),
        unsubscribe: Sequence[str] = (),
        connect_timeout_s: float = 10.0,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 60.0,
        rng: random.Random | None = None,
        log: Logger | None = None,
        max_packet_bytes: int = DEFAULT_MAX_PACKET_BYTES,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if max_packet_bytes < 64:
            raise ValueError(f"max_packet_bytes must be at least 64, got {max_packet_bytes}")
        self.name = name
        self.host = host
        self.port = port
        self.client_id = client_id
        self._on_message = on_message
        self._tls = tls
        self._username = username
        self._password = password
        self._keepalive = keepalive_s
        self._session_expiry = session_expiry_s
        self._receive_maximum = receive_maximum
        self.subscriptions = list(subscriptions)
        self._stale = list(unsubscribe)
        self._stale_id: int | None = None
        #: Set once the broker has confirmed unsubscribing `unsubscribe` (at once when empty).
        self.unsubscribed = asyncio.Event()
        if not self._stale:
            self.unsubscribed.set()
        self._connect_timeout = connect_timeout_s
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._log = log or get_logger(f"edge.mqtt.{name}")
        self.max_packet_bytes = max_packet_bytes
        self._monotonic = monotonic
        self._sleep = sleep

        self._conn: _Connection | None = None
        self._epoch = 0
        self._next_id = 0
        self._reading = True
        self._closing = False
        self._connected = asyncio.Event()
        self._gone = asyncio.Event()
        self._wake = asyncio.Event()
        self._subscribed = asyncio.Event()
        self._pending_subs: set[int] = set()
        self._connack: asyncio.Future[bool] | None = None
        self._acks: list[bytes] = []
        self._ack_scheduled = False
        self.session_present = False
        self.connects = 0
        self.acks_sent = 0
        self.pings_sent = 0
        self.pings_answered = 0

    # -- state ----------------------------------------------------------------------------

    @property
    def broker(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def epoch(self) -> int:
        """Increases with every connection attempt."""
        return self._epoch

    async def wait_connected(self) -> None:
        await self._connected.wait()

    async def wait_disconnected(self) -> None:
        await self._gone.wait()

    async def wait_subscribed(self) -> None:
        """Return once connected and the broker has answered every SUBSCRIBE and UNSUBSCRIBE
        sent for the current subscriptions (a refusal is logged as ``subscribe_refused``)."""
        while True:
            await self._subscribed.wait()
            if self.connected and self._subscribed.is_set():
                return
            await self._connected.wait()

    # -- the connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until `close()`."""
        attempt = 0
        while not self._closing:
            try:
                conn = await self._connect_once()
            except MqttError as exc:
                self._log.warning("connect_failed", broker=self.broker, error=str(exc), attempt=attempt)
            else:
                attempt = 0
                pinger = asyncio.get_running_loop().create_task(
                    self._keep_alive(conn), name=f"mqtt-{self.name}-keepalive"
                )
                try:
                    await self._gone.wait()
                finally:
                    pinger.cancel()
                    # gather: a cancel of this task landing meanwhile is not swallowed with the pinger's
                    for outcome in await asyncio.gather(pinger, return_exceptions=True):
                        if isinstance(outcome, Exception):
                            raise outcome
                if not self._closing and not conn.failed:  # else the cause is logged already
                    self._log.warning("connection_lost", broker=self.broker)
            self._teardown()
            if self._closing:
                break
            delay = backoff_delay(attempt, base=self._backoff_base, cap=self._backoff_cap, rng=self._rng)
            attempt += 1
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), delay)

    async def _connect_once(self) -> _Connection:
        loop = asyncio.get_running_loop()
        # A new epoch before CONNECT: the broker redelivers unacknowledged messages right behind
        # the CONNACK, and their acks must go out on this connection.
        self._epoch += 1
        self._gone.clear()
        self._acks.clear()
        self._connack = loop.create_future()
        epoch = self._epoch
        try:
            async with asyncio.timeout(self._connect_timeout):
                _, conn = await loop.create_connection(
                    lambda: self._connection_class(self, epoch),
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
        except TimeoutError as exc:
            raise MqttError(f"cannot connect to {self.broker}: timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"cannot connect to {self.broker}: {exc}", reason=type(exc).__name__) from exc
        self._conn = conn
        conn.write(
            mqttcodec.connect_packet(
                client_id=self.client_id,
                keepalive_s=self._keepalive,
                session_expiry_s=self._session_expiry,
                receive_maximum=self._receive_maximum,
                max_packet_bytes=self.max_packet_bytes,
                username=self._username,
                password=self._password,
            )
        )
        if not self._reading:
            conn.pause()
        try:
            async with asyncio.timeout(self._connect_timeout):
                self.session_present = await asyncio.shield(self._connack)
        except TimeoutError as exc:
            conn.abort()
            raise MqttError(f"no CONNACK from {self.broker} in {self._connect_timeout} s") from exc
        except MqttError:
            conn.abort()
            raise
        self.connects += 1
        self._connected.set()
        self._log.info(
            "connected", broker=self.broker, client_id=self.client_id, session_present=self.session_present
        )
        return conn

    async def _keep_alive(self, conn: _Connection) -> None:
        while not self._gone.is_set():
            await self._sleep(min(1.0, self._keepalive / 4))
            self.check_keep_alive(conn)

    def check_keep_alive(self, conn: _Connection | None = None) -> None:
        """One keep-alive step (`run` calls it every second at most): a PINGREQ when nothing
        was sent for three quarters of the keep-alive; the connection is declared lost when the
        broker was silent for one and a half."""
        conn = conn or self._conn
        if conn is None or self._gone.is_set():
            return
        keepalive = self._keepalive
        now = self._monotonic()
        if conn.paused:  # not reading: the broker's PINGRESPs wait in the socket
            conn.last_rx = now
        if now - conn.last_rx > keepalive * 1.5:
            self._log.warning("keepalive_timeout", broker=self.broker, silent_s=round(now - conn.last_rx, 1))
            conn.failed = True
            conn.abort()
            self._connected.clear()
            self._gone.set()
            return
        if now - conn.last_tx > keepalive * 0.75:
            conn.write(mqttcodec.PINGREQ)
            self.pings_sent += 1

    def ping(self) -> None:
        """Send a PINGREQ now. Its PINGRESP (counted in `pings_answered`) comes after everything
        the broker sent before it: a round trip that tests use to know the broker is done."""
        if self._conn is not None and self.connected:
            self._conn.write(mqttcodec.PINGREQ)
            self.pings_sent += 1

    def _teardown(self) -> None:
        self._connected.clear()
        self._subscribed.clear()
        self._pending_subs.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._acks.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()

    def _lost(self, conn: _Connection) -> None:
        if conn is self._conn:
            self._connected.clear()
            self._subscribed.clear()
            self._gone.set()
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(MqttError(f"{self.broker} closed the connection"))

    def _refused(self, conn: _Connection, exc: ConnectionRefused) -> None:
        fut = self._connack
        if conn is self._conn and fut is not None and not fut.done():
            fut.set_exception(MqttError(f"{self.broker} {exc}", reason=exc.reason))

    # -- incoming control packets ---------------------------------------------------------

    def _on_control(self, conn: _Connection, packet: mqttcodec.Control) -> None:
        if isinstance(packet, mqttcodec.Connack):
            fut = self._connack
            if fut is None or fut.done() or conn is not self._conn:
                raise ProtocolViolation("CONNACK out of place")
            if packet.server_keep_alive is not None:
                self._keepalive = max(1, packet.server_keep_alive)
            if self.subscriptions:
                self._subscribe(conn, self.subscriptions)
            if self._stale:
                self._stale_id = self._unsubscribe(conn, self._stale)
            if not self._pending_subs:
                self._subscribed.set()
            fut.set_result(packet.session_present)
        elif isinstance(packet, mqttcodec.Suback):
            failed = ",".join(f"0x{c:02x} {reason_text(c)}" for c in packet.codes if c >= 0x80)
            if not packet.unsubscribe:
                if failed:
                    self._log.error(
                        "subscribe_refused",
                        broker=self.broker,
                        codes=failed,
                        reason_string=packet.reason_string,
                    )
                else:
                    self._log.info("subscribed", filters=",".join(self.subscriptions))
            elif failed:
                self._log.warning("unsubscribe_refused", broker=self.broker, codes=failed)
            elif self._stale and packet.packet_id == self._stale_id:
                self._log.info("unsubscribed", filters=",".join(self._stale))
                self._stale = []
                self.unsubscribed.set()
            self._pending_subs.discard(packet.packet_id)
            if not self._pending_subs:
                self._subscribed.set()
        elif isinstance(packet, mqttcodec.Pubrel):
            # QoS 2 (never requested: our subscriptions ask for QoS 1 at most): complete it.
            conn.write(mqttcodec.pubcomp_packet(packet.packet_id))
        elif isinstance(packet, mqttcodec.Disconnect):
            self._log.warning(
                "broker_disconnected",
                broker=self.broker,
                reason=f"0x{packet.code:02x} {reason_text(packet.code)}",
                reason_string=packet.reason_string,
            )
            conn.failed = conn.paused = True
            conn.abort()
        else:  # PINGRESP
            self.pings_answered += 1

    # -- the API --------------------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _subscribe(self, conn: _Connection, filters: Sequence[str]) -> None:
        packet_id = self._packet_id()
        self._pending_subs.add(packet_id)
        self._subscribed.clear()
        conn.write(mqttcodec.subscribe_packet(packet_id, list(filters)))

    def _unsubscribe(self, conn: _Connection, filters: Sequence[str]) -> int:
        """Send UNSUBSCRIBE; returns its packet id."""
        packet_id = self._packet_id()
        self._pending_subs.add(packet_id)
        self._subscribed.clear()
        conn.write(mqttcodec.unsubscribe_packet(packet_id, list(filters)))
        return packet_id

    def ack(self, message: Message) -> None:
        """Acknowledge a message. Ignored if its connection has gone (the broker redelivers it).

        PUBACKs queued in one event-loop iteration are written together."""
        if message.qos == 0 or message.epoch != self._epoch or self._conn is None:
            return
        if message.qos == 1:
            self._acks.append(mqttcodec.puback_packet(message.mid))
        else:
            self._acks.append(mqttcodec.pubrec_packet(message.mid))
        if not self._ack_scheduled:
            self._ack_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_acks)

    def _flush_acks(self) -> None:
        self._ack_scheduled = False
        acks, self._acks = self._acks, []
        conn = self._conn
        if acks and conn is not None and conn.epoch == self._epoch:
            conn.write(b"".join(acks))
            self.acks_sent += len(acks)

    def set_subscriptions(self, filters: Sequence[str]) -> None:
        """Subscribe to filters not yet subscribed and unsubscribe from dropped ones
        (`wait_subscribed` returns once the broker has answered)."""
        new, old = list(filters), self.subscriptions
        self.subscriptions = new
        conn = self._conn
        if conn is None or not self.connected:
            return
        added = [f for f in new if f not in old]
        removed = [f for f in old if f not in new]
        if added:
            self._subscribe(conn, added)
        if removed:
            self._unsubscribe(conn, removed)

    def pause_reading(self) -> None:
        """Stop reading from the socket (intake stops; acks and keep-alives still go out)."""
        self._reading = False
        if self._conn is not None:
            self._conn.pause()

    def resume_reading(self) -> None:
        self._reading = True
        if self._conn is not None:
            self._conn.resume()

    async def close(self, *, grace_s: float = 5.0) -> None:
        """Send the queued acks and DISCONNECT (the session stays on the broker); stop `run()`."""
        self._closing = True
        self._wake.set()
        conn = self._conn
        if conn is not None and self.connected:
            self._flush_acks()
            conn.write(mqttcodec.DISCONNECT_NORMAL)
            if conn.transport is not None:
                conn.transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await conn.closed
        self._gone.set()

"""The southbound link: a lean MQTT v5 subscriber for the field broker, with manual acknowledgement.

The field link receives every message the devices send, so its receive path is the agent's hot
path. paho-mqtt builds a `Properties` object and takes several locks per incoming PUBLISH, which
cost about half of the agent's CPU; this module speaks the small part of MQTT v5 the field side
needs directly on an `asyncio.Protocol`:

- CONNECT with a stable client id, ``clean_start=0`` and a Session Expiry Interval (the broker
  keeps the session and the unacknowledged messages while the agent is away), Receive Maximum
  (the broker hands over at most that many unacknowledged messages), username/password, TLS;
- SUBSCRIBE at QoS 1 with retain handling 1 (retained messages only for a new subscription),
  UNSUBSCRIBE for filters dropped on reload, or left in the session by an earlier configuration;
- incoming PUBLISH at QoS 0 and 1 (QoS 2 is answered correctly but never requested), parsed from
  the stream in place, many per ``data_received``;
- manual acknowledgement: `ack()` queues a PUBACK and every PUBACK queued during one event-loop
  iteration goes out in one ``write``. An ack for a message delivered on an earlier connection is
  dropped: the broker redelivers that message on the resumed session;
- PINGREQ when nothing was sent for three quarters of the keep-alive, and the connection is
  declared lost when the broker is silent for one and a half keep-alives.

`run()` connects and reconnects with capped, jittered exponential backoff until `close()`.
Topic aliases are never enabled (we send no Topic Alias Maximum), so every PUBLISH names its topic.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import ssl
import time
from collections.abc import Callable, Sequence
from typing import Final

from edge.errors import MqttError
from edge.logs import Logger, get_logger
from edge.mqtt import Message, backoff_delay

_CONNECT: Final = 0x10
_CONNACK: Final = 0x20
_PUBLISH: Final = 0x30
_PUBACK: Final = 0x40
_PUBREC: Final = 0x50
_PUBREL: Final = 0x60
_PUBCOMP: Final = 0x70
_SUBSCRIBE: Final = 0x82
_SUBACK: Final = 0x90
_UNSUBSCRIBE: Final = 0xA2
_UNSUBACK: Final = 0xB0
_PINGREQ: Final = b"\xc0\x00"
_PINGRESP: Final = 0xD0
_DISCONNECT: Final = 0xE0
_DISCONNECT_NORMAL: Final = b"\xe0\x00"

#: MQTT v5 property identifiers we send or read.
_P_SESSION_EXPIRY: Final = 0x11
_P_SERVER_KEEP_ALIVE: Final = 0x13
_P_RECEIVE_MAXIMUM: Final = 0x21
#: SUBSCRIBE options: maximum QoS 1, retain handling 1.
_SUB_OPTIONS: Final = b"\x11"


class ProtocolViolation(MqttError):
    """The broker sent something MQTT v5 does not allow here."""


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def _read_varint(data: bytes | bytearray, pos: int) -> tuple[int, int]:
    """(value, position after it); raises `ProtocolViolation` on more than four bytes, and
    `IndexError` when the data ends inside it."""
    value = shift = 0
    for _ in range(4):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
    raise ProtocolViolation("malformed variable byte integer")


def connect_packet(
    *,
    client_id: str,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int | None,
    username: str | None,
    password: str | None,
) -> bytes:
    flags = 0  # clean start 0: resume the session
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    props = bytes((_P_SESSION_EXPIRY,)) + session_expiry_s.to_bytes(4, "big")
    if receive_maximum is not None:
        props += bytes((_P_RECEIVE_MAXIMUM,)) + receive_maximum.to_bytes(2, "big")
    body = (
        _string("MQTT")
        + bytes((5, flags))
        + keepalive_s.to_bytes(2, "big")
        + _varint(len(props))
        + props
        + _string(client_id)
    )
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(_CONNECT, body)


#: The receive buffer: the socket reads into it, packets are parsed in place.
_RECV_SIZE: Final = 256 * 1024


class _Connection(asyncio.BufferedProtocol):
    """One TCP/TLS connection: frames the byte stream and hands packets to the link.

    The socket reads straight into one preallocated buffer (`asyncio.BufferedProtocol`), so
    receiving allocates nothing per read: per-read buffers of a quarter megabyte, freed a moment
    later, fragment the heap and make the RSS creep. Only a packet larger than the buffer grows
    it, until that packet is consumed.
    """

    def __init__(self, link: FieldLink, epoch: int) -> None:
        self.link = link
        self.epoch = epoch
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray(_RECV_SIZE)
        self.start = 0  # the first byte not yet parsed
        self.end = 0  # the end of the received bytes
        self.paused = False
        self.closed = asyncio.get_running_loop().create_future()
        self.last_rx = time.monotonic()
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
            self.last_tx = time.monotonic()

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def pause(self) -> None:
        self.paused = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.pause_reading()

    def resume(self) -> None:
        self.paused = False
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()
        if self.end > self.start:
            self._parse()

    def get_buffer(self, sizehint: int) -> memoryview:
        if self.end == len(self.buf):
            pending = self.end - self.start
            if self.start == 0:
                # One packet larger than the buffer: a bigger one, for as long as it takes.
                bigger = bytearray(2 * len(self.buf))
                bigger[:pending] = self.buf
                self.buf = bigger
            else:  # move the partial packet to the front (same length: no resize)
                self.buf[:pending] = bytes(self.buf[self.start : self.end])
            self.start, self.end = 0, pending
        return memoryview(self.buf)[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.last_rx = time.monotonic()
        self.end += nbytes
        self._parse()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def _parse(self) -> None:
        buf, pos, end = self.buf, self.start, self.end
        on_publish = self.link._on_publish
        try:
            while pos + 2 <= end and not self.paused:
                first = buf[pos]
                # The remaining length, inlined for the common one-byte case.
                b1 = buf[pos + 1]
                if b1 < 0x80:
                    length, start = b1, pos + 2
                else:
                    try:
                        length, start = _read_varint(buf, pos + 1)
                    except IndexError:
                        break
                stop = start + length
                if stop > end:
                    break
                if first & 0xF0 == _PUBLISH:
                    on_publish(self, first, buf, start, stop)
                else:
                    self.link._on_control(self, first, bytes(buf[start:stop]))
                pos = stop
        except (ProtocolViolation, IndexError, UnicodeDecodeError) as exc:
            self.link._log.error("protocol_violation", error=repr(exc))
            self.start = self.end = 0
            self.abort()
            return
        if pos == end:
            self.start = self.end = 0
            if len(buf) > _RECV_SIZE:
                self.buf = bytearray(_RECV_SIZE)
        else:
            self.start = pos


class FieldLink:
    """The field broker connection (see the module docstring), reconnected until closed.

    Args:
        name: for logs.
        host, port: the broker.
        client_id: stable across restarts: the broker keys the session on it.
        tls: a context from `edge.mqtt.tls_context`, or None for plain TCP.
        session_expiry_s: how long the broker keeps the session while we are away.
        receive_maximum: at most this many unacknowledged QoS 1 messages in flight to us.
        subscriptions: QoS 1 filters, (re)subscribed on every connect.
        unsubscribe: filters the broker's session may still hold from an earlier configuration:
            unsubscribed after every connect until an UNSUBACK confirms it (`unsubscribed`).
        on_message: called on the event loop for each PUBLISH; acknowledge with `ack`.
        backoff_base_s, backoff_cap_s: reconnect delays; `rng` draws the jitter.
    """

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
    ) -> None:
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
        self._stale_id = b""
        #: Set once the broker has confirmed unsubscribing `unsubscribe` (at once when empty).
        self.unsubscribed = asyncio.Event()
        if not self._stale:
            self.unsubscribed.set()
        self._connect_timeout = connect_timeout_s
        self._backoff_base = backoff_base_s
        self._backoff_cap = backoff_cap_s
        self._rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self._log = log or get_logger(f"edge.mqtt.{name}")

        self._conn: _Connection | None = None
        self._epoch = 0
        self._next_id = 0
        self._reading = True
        self._closing = False
        self._connected = asyncio.Event()
        self._gone = asyncio.Event()
        self._wake = asyncio.Event()
        self._connack: asyncio.Future[bool] | None = None
        self._acks: list[bytes] = []
        self._ack_scheduled = False
        self.session_present = False
        self.connects = 0
        self.acks_sent = 0

    # -- state ----------------------------------------------------------------------------

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

    # -- the connection loop --------------------------------------------------------------

    async def run(self) -> None:
        """Connect, and reconnect after every loss, until `close()`."""
        attempt = 0
        while not self._closing:
            try:
                conn = await self._connect_once()
            except MqttError as exc:
                self._log.warning(
                    "connect_failed", broker=f"{self.host}:{self.port}", error=str(exc), attempt=attempt
                )
            else:
                attempt = 0
                pinger = asyncio.get_running_loop().create_task(
                    self._keep_alive(conn), name=f"mqtt-{self.name}-keepalive"
                )
                try:
                    await self._gone.wait()
                finally:
                    pinger.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await pinger
                if not self._closing:
                    self._log.warning("connection_lost", broker=f"{self.host}:{self.port}")
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
                    lambda: _Connection(self, epoch),
                    self.host,
                    self.port,
                    ssl=self._tls,
                    server_hostname=self.host if self._tls is not None else None,
                )
        except TimeoutError as exc:
            raise MqttError(f"cannot connect to {self.host}:{self.port}: timed out") from exc
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(
                f"cannot connect to {self.host}:{self.port}: {exc}", reason=type(exc).__name__
            ) from exc
        self._conn = conn
        conn.write(
            connect_packet(
                client_id=self.client_id,
                keepalive_s=self._keepalive,
                session_expiry_s=self._session_expiry,
                receive_maximum=self._receive_maximum,
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
            raise MqttError(f"no CONNACK from {self.host}:{self.port} in {self._connect_timeout} s") from exc
        except MqttError:
            conn.abort()
            raise
        self.connects += 1
        self._connected.set()
        self._log.info(
            "connected",
            broker=f"{self.host}:{self.port}",
            client_id=self.client_id,
            session_present=self.session_present,
        )
        return conn

    async def _keep_alive(self, conn: _Connection) -> None:
        keepalive = self._keepalive
        while not self._gone.is_set():
            await asyncio.sleep(min(1.0, keepalive / 4))
            now = time.monotonic()
            if conn.paused:  # not reading: the broker's PINGRESPs wait in the socket
                conn.last_rx = now
            if now - conn.last_rx > keepalive * 1.5:
                self._log.warning("keepalive_timeout", broker=f"{self.host}:{self.port}")
                conn.abort()
                self._gone.set()
                return
            if now - conn.last_tx > keepalive * 0.75:
                conn.write(_PINGREQ)

    def _teardown(self) -> None:
        self._connected.clear()
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.abort()
        self._acks.clear()
        if self._connack is not None and not self._connack.done():
            self._connack.cancel()

    def _lost(self, conn: _Connection) -> None:
        if conn is self._conn:
            self._connected.clear()
            self._gone.set()
            if self._connack is not None and not self._connack.done():
                self._connack.set_exception(MqttError(f"{self.host}:{self.port} closed the connection"))

    # -- incoming packets -----------------------------------------------------------------

    def _on_publish(self, conn: _Connection, first: int, buf: bytearray, start: int, stop: int) -> None:
        qos = (first >> 1) & 3
        n = (buf[start] << 8) | buf[start + 1]
        pos = start + 2 + n
        topic = buf[start + 2 : pos].decode()
        mid = 0
        if qos:
            mid = (buf[pos] << 8) | buf[pos + 1]
            pos += 2
        plen = buf[pos]
        if plen < 0x80:
            pos += 1 + plen
        else:
            plen, pos = _read_varint(buf, pos)
            pos += plen
        if qos == 3 or pos > stop:
            raise ProtocolViolation(f"malformed PUBLISH (qos {qos})")
        self._on_message(Message(topic, bytes(buf[pos:stop]), qos, bool(first & 1), mid, conn.epoch))

    def _on_control(self, conn: _Connection, first: int, body: bytes) -> None:
        kind = first & 0xF0
        if kind == _CONNACK:
            fut = self._connack
            if fut is None or fut.done() or conn is not self._conn or len(body) < 2:
                return
            if body[1] >= 0x80:
                fut.set_exception(
                    MqttError(
                        f"{self.host}:{self.port} refused the connection: reason code 0x{body[1]:02x}",
                        reason=f"0x{body[1]:02x}",
                    )
                )
                return
            self._read_connack_properties(body)
            if self.subscriptions:
                self._subscribe(conn, self.subscriptions)
            if self._stale:
                self._stale_id = self._unsubscribe(conn, self._stale)
            fut.set_result(bool(body[0] & 1))
        elif kind == _SUBACK:
            plen, pos = _read_varint(body, 2)
            codes = body[pos + plen :]
            failed = [f"0x{c:02x}" for c in codes if c >= 0x80]
            if failed:
                self._log.error("subscribe_refused", codes=",".join(failed))
            else:
                self._log.info("subscribed", filters=",".join(self.subscriptions))
        elif kind == _PUBREL:
            # QoS 2 (never requested: our subscriptions ask for QoS 1 at most): complete it.
            conn.write(bytes((_PUBCOMP, 2)) + body[:2])
        elif kind == _UNSUBACK:
            if self._stale and body[:2] == self._stale_id:
                self._log.info("unsubscribed", filters=",".join(self._stale))
                self._stale = []
                self.unsubscribed.set()
        elif kind == _PINGRESP:
            pass
        elif kind == _DISCONNECT:
            reason = body[0] if body else 0
            self._log.warning("broker_disconnected", reason=f"0x{reason:02x}")
            conn.abort()
        else:
            raise ProtocolViolation(f"unexpected packet type 0x{kind:02x} from the broker")

    def _read_connack_properties(self, body: bytes) -> None:
        if len(body) < 3:
            return
        plen, pos = _read_varint(body, 2)
        end = pos + plen
        while pos < end:
            ident = body[pos]
            pos += 1
            if ident == _P_SERVER_KEEP_ALIVE:
                self._keepalive = max(1, int.from_bytes(body[pos : pos + 2], "big"))
                pos += 2
            elif ident in (0x24, 0x25, 0x28, 0x29, 0x2A):  # one byte
                pos += 1
            elif ident in (0x21, 0x22):  # two bytes
                pos += 2
            elif ident in (0x11, 0x27):  # four bytes
                pos += 4
            elif ident in (0x12, 0x1A, 0x1C, 0x1F, 0x15, 0x16):  # string or binary
                n = int.from_bytes(body[pos : pos + 2], "big")
                pos += 2 + n
            elif ident == 0x26:  # user property: a pair of strings
                for _ in range(2):
                    n = int.from_bytes(body[pos : pos + 2], "big")
                    pos += 2 + n
            else:
                return  # unknown: stop reading properties, none of the rest matters to us

    # -- the API --------------------------------------------------------------------------

    def _packet_id(self) -> int:
        self._next_id = self._next_id % 65535 + 1
        return self._next_id

    def _subscribe(self, conn: _Connection, filters: Sequence[str]) -> None:
        body = self._packet_id().to_bytes(2, "big") + b"\x00"
        body += b"".join(_string(f) + _SUB_OPTIONS for f in filters)
        conn.write(_packet(_SUBSCRIBE, body))

    def _unsubscribe(self, conn: _Connection, filters: Sequence[str]) -> bytes:
        """Send UNSUBSCRIBE; returns its packet id (two bytes, as the UNSUBACK carries it)."""
        packet_id = self._packet_id().to_bytes(2, "big")
        conn.write(_packet(_UNSUBSCRIBE, packet_id + b"\x00" + b"".join(_string(f) for f in filters)))
        return packet_id

    def ack(self, message: Message) -> None:
        """Acknowledge a message. Ignored if its connection has gone (the broker redelivers it).

        PUBACKs queued in one event-loop iteration are written together."""
        if message.qos == 0 or message.epoch != self._epoch or self._conn is None:
            return
        first = _PUBACK if message.qos == 1 else _PUBREC
        self._acks.append(bytes((first, 2, message.mid >> 8, message.mid & 0xFF)))
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
        """Subscribe to filters not yet subscribed and unsubscribe from dropped ones."""
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
            conn.write(_DISCONNECT_NORMAL)
            if conn.transport is not None:
                conn.transport.close()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(grace_s):
                    await conn.closed
        self._gone.set()

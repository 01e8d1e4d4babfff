"""`MqttPublisher`: the part of MQTT 3.1.1 a simulator needs, publishing only, with batched writes.

A device simulator sends tens of thousands of small PUBLISH packets a second and receives nothing
but PUBACKs. A general client (paho-mqtt) spends most of its per-message time on things this does
not need (a message object, a lock, a queue entry and one ``send`` per packet); here a packet is
a few bytes joined onto a write buffer, and the buffer goes out with one ``sendall`` when it holds
``write_buffer`` bytes, when the QoS 1 window is full, and whenever the caller idles or closes.

Flow control, so memory stays flat when the broker is slower than we are:

- QoS 0: the write buffer is bounded; ``sendall`` blocks while the socket is full.
- QoS 1: at most ``max_inflight`` messages await their PUBACK (keep it within the broker's
  receive window, Mosquitto's default is 1000 messages); publishing waits for acknowledgements.

PUBACKs are read between batches. There is no deadlock: with at most ``max_inflight`` 4-byte
PUBACKs unread, the broker never blocks writing to us. Every socket wait is bounded by
``io_timeout``. Failures raise `MqttLinkError`; the caller maps it to its own error.
"""

from __future__ import annotations

import contextlib
import select
import socket
import ssl
import struct
import time
from typing import Final

_CONNECT: Final = 0x10
_CONNACK: Final = 0x20
_PUBLISH: Final = 0x30
_PUBACK: Final = 0x40
_PINGREQ: Final = b"\xc0\x00"
_DISCONNECT: Final = b"\xe0\x00"
_U16: Final = struct.Struct(">H")
_REFUSED: Final = {
    1: "unacceptable protocol version",
    2: "client identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorised",
}


class MqttLinkError(Exception):
    """The broker cannot be reached, refused us, or the connection failed (`reason` says how)."""

    def __init__(self, reason: str, *, connected: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        #: whether the failure came after the broker had accepted the connection.
        self.connected = connected


def _remaining_length(n: int) -> bytes:
    if n < 128:
        return bytes((n,))
    out = bytearray()
    while True:
        n, digit = n >> 7, n & 0x7F
        out.append(digit | 0x80 if n else digit)
        if not n:
            return bytes(out)


def _length(n: int) -> bytes:
    """The remaining-length field; one or two bytes for every message a simulator sends."""
    if n < 128:
        return bytes((n,))
    if n < 16384:
        return bytes((n & 0x7F | 0x80, n >> 7))
    return _remaining_length(n)


def _string(text: str) -> bytes:
    raw = text.encode()
    return _U16.pack(len(raw)) + raw


class MqttPublisher:
    """A publish-only MQTT 3.1.1 connection (clean session).

    Args:
        host, port: the broker.
        client_id: the MQTT client id.
        qos: 0 or 1, for every message.
        username, password: credentials, if the broker wants them.
        tls: an SSL context to wrap the connection in (verifies the broker as configured).
        keepalive: seconds; a PINGREQ goes out when nothing was sent for half of it.
        max_inflight: QoS 1 messages awaiting PUBACK at most.
        write_buffer: bytes gathered before a write.
        connect_timeout: seconds for TCP, TLS and CONNACK together.
        io_timeout: seconds any later socket wait may take before the link counts as lost.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        client_id: str,
        qos: int = 0,
        username: str | None = None,
        password: str | None = None,
        tls: ssl.SSLContext | None = None,
        keepalive: int = 60,
        max_inflight: int = 1000,
        write_buffer: int = 64 * 1024,
        connect_timeout: float = 10.0,
        io_timeout: float = 30.0,
    ) -> None:
        if qos not in (0, 1):
            raise ValueError(f"qos must be 0 or 1, got {qos}")
        if not 0 < max_inflight < 65535:
            raise ValueError("max_inflight must lie in 1..65534")
        self.qos = qos
        self._keepalive = keepalive
        self._window = max_inflight
        self._limit = write_buffer
        self._io_timeout = io_timeout
        self._buf = bytearray()
        self._buffered = 0  # messages in _buf
        self._rx = bytearray()
        self._inflight: set[int] = set()
        self._next_id = 0
        self._lost: str | None = None
        self._closed = False
        self._sock = self._connect(host, port, tls, connect_timeout)
        self._last_send = time.monotonic()
        try:
            self._sock.sendall(self._connect_packet(client_id, username, password))
        except (OSError, ssl.SSLError) as exc:
            self._abandon()
            raise MqttLinkError(f"the broker closed the connection ({exc})", connected=False) from exc
        self._await_connack(connect_timeout)
        self._sock.settimeout(io_timeout)

    # -- connecting -------------------------------------------------------------------------------

    @staticmethod
    def _connect(host: str, port: int, tls: ssl.SSLContext | None, timeout: float) -> socket.socket:
        try:
            sock = socket.create_connection((host, port), timeout=timeout)
        except OSError as exc:
            raise MqttLinkError(f"cannot connect: {exc.strerror or exc}", connected=False) from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is None:
            return sock
        try:
            return tls.wrap_socket(sock, server_hostname=host)
        except (OSError, ssl.SSLError) as exc:
            sock.close()
            raise MqttLinkError(f"TLS handshake failed: {exc}", connected=False) from exc

    def _connect_packet(self, client_id: str, username: str | None, password: str | None) -> bytes:
        flags = 0x02  # clean session
        payload = _string(client_id)
        if username is not None:
            flags |= 0x80
            payload += _string(username)
            if password is not None:
                flags |= 0x40
                payload += _string(password)
        body = _string("MQTT") + bytes((4, flags)) + _U16.pack(self._keepalive) + payload
        return bytes((_CONNECT,)) + _remaining_length(len(body)) + body

    def _await_connack(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self._abandon()
                raise MqttLinkError("no CONNACK from the broker (timed out)", connected=False)
            self._sock.settimeout(left)
            try:
                chunk = self._sock.recv(4096)
            except (OSError, ssl.SSLError) as exc:
                self._abandon()
                raise MqttLinkError(f"no CONNACK from the broker ({exc})", connected=False) from exc
            if not chunk:
                self._abandon()
                raise MqttLinkError("no CONNACK from the broker (connection closed)", connected=False)
            self._rx += chunk
            if len(self._rx) >= 4:
                break
        if self._rx[0] != _CONNACK or self._rx[1] != 2:
            self._abandon()
            raise MqttLinkError("the broker did not answer with a CONNACK", connected=False)
        code = self._rx[3]
        del self._rx[:4]
        if code != 0:
            self._abandon()
            detail = _REFUSED.get(code, f"code {code}")
            raise MqttLinkError(f"the broker refused the connection: {detail}", connected=False)

    # -- publishing -------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Messages not yet written (QoS 0) or not yet acknowledged (QoS 1)."""
        return len(self._inflight) if self.qos == 1 else self._buffered

    def publish(self, topic: str, payload: bytes) -> None:
        """Queue one message; raises `MqttLinkError` once the link is lost."""
        if self._lost is not None:
            raise MqttLinkError(self._lost, connected=True)
        name = topic.encode()
        if self.qos:
            self._next_id = mid = self._next_id % 65535 + 1
            while mid in self._inflight:  # never reuse an id awaiting its PUBACK
                self._next_id = mid = mid % 65535 + 1
            self._inflight.add(mid)
            size = len(name) + len(payload) + 4
            head = b"\x32" + _length(size)
            self._buf += head + _U16.pack(len(name)) + name + _U16.pack(mid) + payload
        else:
            size = len(name) + len(payload) + 2
            head = b"\x30" + _length(size)
            self._buf += head + _U16.pack(len(name)) + name + payload
        self._buffered += 1
        if len(self._buf) >= self._limit:
            self.flush()
        if self.qos and len(self._inflight) >= self._window:
            self.flush()
            while len(self._inflight) >= self._window:
                self._read(self._io_timeout)

    def flush(self) -> None:
        """Write what is buffered, and take in any PUBACKs that have arrived."""
        if self._buf:
            self._send(self._buf)
            self._buf = bytearray()
            self._buffered = 0
        self._read(0.0)

    def idle(self, seconds: float) -> None:
        """Flush, then service the connection (PUBACKs, keepalive) for up to `seconds`."""
        self.flush()
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            if time.monotonic() - self._last_send >= self._keepalive / 2:
                self._send(_PINGREQ)
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._read(min(left, 0.2))

    def drain(self, timeout: float) -> int:
        """Flush and wait up to `timeout` for every PUBACK; returns the messages left unacknowledged."""
        self.flush()
        deadline = time.monotonic() + timeout
        while self._inflight:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            self._read(min(left, 0.2))
        return len(self._inflight)

    def close(self) -> None:
        """Send DISCONNECT (when the link is up) and close the socket (idempotent)."""
        if self._closed:
            return
        self._closed = True
        if self._lost is None:
            with contextlib.suppress(MqttLinkError):
                self._send(_DISCONNECT)
        self._abandon()

    # -- the socket -------------------------------------------------------------------------------

    def _send(self, data: bytes | bytearray) -> None:
        try:
            self._sock.sendall(data)
        except (OSError, ssl.SSLError) as exc:
            raise self._lose(f"write failed: {exc.strerror or exc}") from exc
        self._last_send = time.monotonic()

    def _read(self, timeout: float) -> None:
        """Take in what the broker sent (waiting up to `timeout` for something to arrive)."""
        sock = self._sock
        pending = isinstance(sock, ssl.SSLSocket) and sock.pending() > 0
        try:
            if not pending:
                readable, _, _ = select.select([sock], [], [], timeout)
                if not readable:
                    if timeout >= self._io_timeout:
                        raise self._lose("no acknowledgement from the broker (timed out)")
                    return
            chunk = sock.recv(65536)
        except (OSError, ssl.SSLError) as exc:
            if isinstance(exc, ssl.SSLWantReadError):
                return
            raise self._lose(f"read failed: {exc.strerror or exc}") from exc
        if not chunk:
            raise self._lose("the broker closed the connection")
        rx = self._rx
        rx += chunk
        pos = 0
        end = len(rx)
        inflight = self._inflight
        while end - pos >= 2:
            kind = rx[pos] & 0xF0
            size = rx[pos + 1]
            start = pos + 2
            if size & 0x80:  # multi-byte length: only for packets we do not expect
                size, start = self._long_length(rx, pos + 1)
                if start < 0:
                    break
            if end - start < size:
                break
            if kind == _PUBACK and size == 2:
                inflight.discard(rx[start] << 8 | rx[start + 1])
            pos = start + size  # anything else (PINGRESP) needs no answer
        del rx[:pos]

    @staticmethod
    def _long_length(rx: bytearray, at: int) -> tuple[int, int]:
        value, shift = 0, 0
        for i in range(at, min(at + 4, len(rx))):
            value |= (rx[i] & 0x7F) << shift
            if not rx[i] & 0x80:
                return value, i + 1
            shift += 7
        return 0, -1

    def _lose(self, reason: str) -> MqttLinkError:
        self._lost = self._lost or reason
        return MqttLinkError(self._lost, connected=True)

    def _abandon(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

"""The MQTT v5 packets of the field link, without I/O: encoding, framing, decoding, named errors.

Only what a QoS 1 subscriber needs: it encodes CONNECT, SUBSCRIBE, UNSUBSCRIBE, PUBACK (and
PUBREC/PUBCOMP), PINGREQ and DISCONNECT, and decodes CONNACK, SUBACK, UNSUBACK, PUBLISH, PUBREL,
PINGRESP and DISCONNECT. Every function is pure: bytes in, values or bytes out.

- `frame` reads a packet's fixed header, so the link knows a packet's size before the packet is
  complete and refuses one larger than the Maximum Packet Size it announced without buffering it.
- `decode_publish` parses a PUBLISH in place from the receive buffer: the agent's hot path.
- Anything malformed raises `ProtocolViolation`, never ``IndexError``, ``UnicodeDecodeError`` or
  ``ValueError`` (tests/edge/test_mqttcodec.py fuzzes this with hypothesis): lengths are checked
  against the packet's end before they are used, properties are checked against their types.
- A refused CONNACK, including the MQTT 3.1.1-style answer of an old broker (a 2-byte body with
  return code 1-5), raises `ConnectionRefused` with the reason in words; `reason_text` names a
  DISCONNECT's reason code.

The ``mqtt5`` package (a Rust codec) was measured as an alternative and is as fast, but version
0.8 panics on invalid UTF-8 in a string field (docs/benchmarks.md, "Field link: alternatives
measured").

Exceptions (under `edge.errors.MqttError`)::

    MqttError
    ├── ConnectionRefused     the broker answered CONNECT with a failure (``code``, ``protocol``)
    └── ProtocolViolation     bytes that are not a valid MQTT v5 packet, or a packet out of place
        └── PacketTooLarge    a packet above the Maximum Packet Size we announced (``size``, ``limit``)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

from edge.errors import MqttError

CONNECT: Final = 0x10
CONNACK: Final = 0x20
PUBLISH: Final = 0x30
PUBACK: Final = 0x40
PUBREC: Final = 0x50
PUBREL: Final = 0x60
PUBCOMP: Final = 0x70
SUBSCRIBE: Final = 0x82
SUBACK: Final = 0x90
UNSUBSCRIBE: Final = 0xA2
UNSUBACK: Final = 0xB0
PINGRESP: Final = 0xD0
DISCONNECT: Final = 0xE0

PINGREQ: Final = b"\xc0\x00"
DISCONNECT_NORMAL: Final = b"\xe0\x00"
#: DISCONNECT reason codes the link sends.
MALFORMED_PACKET: Final = 0x81
PACKET_TOO_LARGE: Final = 0x95

#: Property identifiers we send or read.
P_SESSION_EXPIRY: Final = 0x11
P_SERVER_KEEP_ALIVE: Final = 0x13
P_REASON_STRING: Final = 0x1F
P_RECEIVE_MAXIMUM: Final = 0x21
P_TOPIC_ALIAS: Final = 0x23
P_MAXIMUM_PACKET_SIZE: Final = 0x27
#: SUBSCRIBE options: maximum QoS 1, retain handling 1.
_SUB_OPTIONS: Final = b"\x11"

# Property value types (MQTT v5, 2.2.2.2).
_BYTE, _TWO, _FOUR, _VARINT, _STRING, _BINARY, _PAIR = range(7)
_PROPERTY_TYPES: Final = {
    0x01: _BYTE,  # payload format indicator
    0x02: _FOUR,  # message expiry interval
    0x03: _STRING,  # content type
    0x08: _STRING,  # response topic
    0x09: _BINARY,  # correlation data
    0x0B: _VARINT,  # subscription identifier
    0x11: _FOUR,  # session expiry interval
    0x12: _STRING,  # assigned client identifier
    0x13: _TWO,  # server keep alive
    0x15: _STRING,  # authentication method
    0x16: _BINARY,  # authentication data
    0x17: _BYTE,  # request problem information
    0x18: _FOUR,  # will delay interval
    0x19: _BYTE,  # request response information
    0x1A: _STRING,  # response information
    0x1C: _STRING,  # server reference
    0x1F: _STRING,  # reason string
    0x21: _TWO,  # receive maximum
    0x22: _TWO,  # topic alias maximum
    0x23: _TWO,  # topic alias
    0x24: _BYTE,  # maximum QoS
    0x25: _BYTE,  # retain available
    0x26: _PAIR,  # user property
    0x27: _FOUR,  # maximum packet size
    0x28: _BYTE,  # wildcard subscription available
    0x29: _BYTE,  # subscription identifier available
    0x2A: _BYTE,  # shared subscription available
}

#: Reason codes in words (MQTT v5, 2.4), for CONNACK, SUBACK, UNSUBACK and DISCONNECT.
REASONS: Final = {
    0x00: "success",
    0x04: "disconnect with will message",
    0x11: "no subscription existed",
    0x80: "unspecified error",
    0x81: "malformed packet",
    0x82: "protocol error",
    0x83: "implementation specific error",
    0x84: "unsupported protocol version",
    0x85: "client identifier not valid",
    0x86: "bad user name or password",
    0x87: "not authorized",
    0x88: "server unavailable",
    0x89: "server busy",
    0x8A: "banned",
    0x8B: "server shutting down",
    0x8C: "bad authentication method",
    0x8D: "keep alive timeout",
    0x8E: "session taken over",
    0x8F: "topic filter invalid",
    0x90: "topic name invalid",
    0x91: "packet identifier in use",
    0x93: "receive maximum exceeded",
    0x94: "topic alias invalid",
    0x95: "packet too large",
    0x96: "message rate too high",
    0x97: "quota exceeded",
    0x98: "administrative action",
    0x99: "payload format invalid",
    0x9A: "retain not supported",
    0x9B: "QoS not supported",
    0x9C: "use another server",
    0x9D: "server moved",
    0x9E: "shared subscriptions not supported",
    0x9F: "connection rate exceeded",
    0xA0: "maximum connect time",
    0xA1: "subscription identifiers not supported",
    0xA2: "wildcard subscriptions not supported",
}

#: The 3.1.1 CONNACK return codes, answered by a broker that does not speak MQTT v5.
V311_REFUSED: Final = {
    1: "unacceptable protocol version",
    2: "identifier rejected",
    3: "server unavailable",
    4: "bad user name or password",
    5: "not authorized",
}


class ProtocolViolation(MqttError):
    """The broker sent bytes that are not a valid MQTT v5 packet, or a packet out of place."""


class PacketTooLarge(ProtocolViolation):
    """A packet larger than the Maximum Packet Size we announced.

    Attributes:
        size: the packet's size in bytes, fixed header included.
        limit: the Maximum Packet Size announced in CONNECT.
    """

    def __init__(self, size: int, limit: int) -> None:
        self.size = size
        self.limit = limit
        super().__init__(f"packet of {size} bytes, the Maximum Packet Size is {limit}", reason="0x95")


class ConnectionRefused(MqttError):
    """The broker refused the connection.

    Attributes:
        code: the CONNACK reason code (MQTT v5) or return code (MQTT 3.1.1).
        protocol: ``"5"``, or ``"3.1.1"`` for the answer of a broker that does not speak v5.
        text: the reason in words.
    """

    def __init__(self, code: int, text: str, *, protocol: str = "5") -> None:
        self.code = code
        self.protocol = protocol
        self.text = text
        super().__init__(
            f"refused the connection: {text} (MQTT {protocol} code 0x{code:02x})", reason=f"0x{code:02x}"
        )


def reason_text(code: int) -> str:
    """A reason code in words (``0x8e`` -> "session taken over")."""
    return REASONS.get(code, f"reason code 0x{code:02x}")


# -- decoded control packets -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connack:
    session_present: bool
    server_keep_alive: int | None = None


@dataclass(frozen=True, slots=True)
class Suback:
    """SUBACK or UNSUBACK (``unsubscribe``): one reason code per filter."""

    packet_id: int
    codes: tuple[int, ...]
    unsubscribe: bool = False
    reason_string: str = ""


@dataclass(frozen=True, slots=True)
class Pubrel:
    packet_id: int


@dataclass(frozen=True, slots=True)
class Pingresp:
    pass


@dataclass(frozen=True, slots=True)
class Disconnect:
    code: int
    reason_string: str = ""


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str
    payload: bytes
    qos: int
    retain: bool
    packet_id: int


Control = Connack | Suback | Pubrel | Pingresp | Disconnect


# -- framing and primitives ------------------------------------------------------------------------

Buffer = bytes | bytearray


def frame(buf: Buffer, pos: int, end: int, limit: int) -> tuple[int, int]:
    """``(start, stop)`` of the body of the packet whose fixed header starts at ``buf[pos]``.

    ``(-1, -1)`` when ``buf[pos:end]`` does not hold the whole fixed header yet; the body may
    still be incomplete (``stop > end``). Raises `ProtocolViolation` for a remaining length of
    more than four bytes and `PacketTooLarge` for a packet larger than `limit`.
    """
    length = shift = 0
    i = pos + 1
    while True:
        if i >= end:
            return -1, -1
        byte = buf[i]
        i += 1
        length |= (byte & 0x7F) << shift
        if not byte & 0x80:
            break
        shift += 7
        if shift > 21:
            raise ProtocolViolation("malformed remaining length: more than four bytes")
    if i - pos + length > limit:
        raise PacketTooLarge(i - pos + length, limit)
    return i, i + length


def _varint(data: Buffer, pos: int, end: int) -> tuple[int, int]:
    """A variable byte integer inside a complete packet: ``(value, position after it)``."""
    value = shift = 0
    while True:
        if pos >= end:
            raise ProtocolViolation("malformed packet: truncated variable byte integer")
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7
        if shift > 21:
            raise ProtocolViolation("malformed variable byte integer: more than four bytes")


def _utf8(data: Buffer, start: int, stop: int, what: str) -> str:
    try:
        return bytes(data[start:stop]).decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation(f"malformed {what}: not UTF-8") from exc


def _properties(data: Buffer, pos: int, end: int) -> tuple[dict[int, int | str | bytes], int]:
    """The property block at `pos`: ``({identifier: value}, position after it)``. User
    properties are checked and skipped."""
    length, pos = _varint(data, pos, end)
    stop = pos + length
    if stop > end:
        raise ProtocolViolation("malformed packet: properties longer than the packet")
    props: dict[int, int | str | bytes] = {}
    while pos < stop:
        ident = data[pos]
        pos += 1
        kind = _PROPERTY_TYPES.get(ident)
        if kind is None:
            raise ProtocolViolation(f"malformed packet: unknown property 0x{ident:02x}")
        if kind == _VARINT:
            props[ident], pos = _varint(data, pos, stop)
            continue
        if kind in (_BYTE, _TWO, _FOUR):
            n = 1 if kind == _BYTE else 2 if kind == _TWO else 4
            if pos + n > stop:
                raise ProtocolViolation(f"malformed packet: property 0x{ident:02x} truncated")
            props[ident] = int.from_bytes(data[pos : pos + n], "big")
            pos += n
            continue
        for _ in range(2 if kind == _PAIR else 1):  # a user property: key and value
            if pos + 2 > stop:
                raise ProtocolViolation(f"malformed packet: property 0x{ident:02x} truncated")
            n = (data[pos] << 8) | data[pos + 1]
            pos += 2
            if pos + n > stop:
                raise ProtocolViolation(f"malformed packet: property 0x{ident:02x} truncated")
            if kind == _BINARY:
                props[ident] = bytes(data[pos : pos + n])
            else:
                text = _utf8(data, pos, pos + n, f"property 0x{ident:02x}")
                if kind == _STRING:  # a user property is checked, not kept
                    props[ident] = text
            pos += n
    return props, stop


# -- decoding --------------------------------------------------------------------------------------


def decode_publish(first: int, buf: Buffer, start: int, stop: int) -> tuple[str, bytes, int, int]:
    """``(topic, payload, qos, packet id)`` of the PUBLISH whose body is ``buf[start:stop]``.

    The hot path: the common case (no properties) is a few slices of the receive buffer."""
    qos = (first >> 1) & 3
    if qos == 3:
        raise ProtocolViolation("malformed PUBLISH: QoS 3")
    if start + 2 > stop:
        raise ProtocolViolation("malformed PUBLISH: truncated topic")
    at = start + 2 + ((buf[start] << 8) | buf[start + 1])
    if at > stop or at == start + 2:
        raise ProtocolViolation("malformed PUBLISH: topic length")
    try:
        topic = buf[start + 2 : at].decode()
    except UnicodeDecodeError as exc:
        raise ProtocolViolation("malformed PUBLISH: topic is not UTF-8") from exc
    mid = 0
    if qos:
        if at + 2 > stop:
            raise ProtocolViolation("malformed PUBLISH: truncated packet identifier")
        mid = (buf[at] << 8) | buf[at + 1]
        if not mid:
            raise ProtocolViolation("malformed PUBLISH: packet identifier 0")
        at += 2
    if at >= stop:
        raise ProtocolViolation("malformed PUBLISH: no properties")
    if buf[at] == 0:
        at += 1
    else:
        props, at = _properties(buf, at, stop)
        if P_TOPIC_ALIAS in props:  # we send no Topic Alias Maximum: aliases are not allowed
            raise ProtocolViolation("PUBLISH with a topic alias, which we never allowed")
    return topic, bytes(buf[at:stop]), qos, mid


def decode_control(first: int, body: Buffer) -> Control:
    """Decode a packet other than PUBLISH from the broker (its whole body)."""
    kind, end = first & 0xF0, len(body)
    if kind == CONNACK:
        return decode_connack(first, body)
    if kind in (SUBACK, UNSUBACK):
        if end < 3:
            raise ProtocolViolation("malformed SUBACK/UNSUBACK: too short")
        props, pos = _properties(body, 2, end)
        if pos == end:
            raise ProtocolViolation("malformed SUBACK/UNSUBACK: no reason codes")
        reason = props.get(P_REASON_STRING, "")
        return Suback(
            (body[0] << 8) | body[1],
            tuple(body[pos:end]),
            unsubscribe=kind == UNSUBACK,
            reason_string=reason if isinstance(reason, str) else "",
        )
    if kind == PUBREL:
        if first & 0x0F != 2 or end < 2:
            raise ProtocolViolation("malformed PUBREL")
        if end > 3:
            _properties(body, 3, end)
        return Pubrel((body[0] << 8) | body[1])
    if kind == PINGRESP:
        if first != PINGRESP or end:
            raise ProtocolViolation("malformed PINGRESP")
        return Pingresp()
    if kind == DISCONNECT:
        if first & 0x0F:
            raise ProtocolViolation("malformed DISCONNECT: reserved flags")
        if not end:
            return Disconnect(0)
        reason = ""
        if end > 1:
            props, _ = _properties(body, 1, end)
            text = props.get(P_REASON_STRING, "")
            reason = text if isinstance(text, str) else ""
        return Disconnect(body[0], reason)
    raise ProtocolViolation(f"unexpected packet type 0x{kind >> 4:x} from the broker")


def decode_connack(first: int, body: Buffer) -> Connack:
    """The broker's answer to CONNECT; raises `ConnectionRefused` when it refuses."""
    end = len(body)
    if first != CONNACK or end < 2:
        raise ProtocolViolation("malformed CONNACK")
    code = body[1]
    if end == 2:  # no property length: an MQTT 3.1.1 broker's answer
        if code == 0:
            raise ConnectionRefused(0, "the broker answered in MQTT 3.1.1, not 5", protocol="3.1.1")
        raise ConnectionRefused(code, V311_REFUSED.get(code, f"return code {code}"), protocol="3.1.1")
    props, pos = _properties(body, 2, end)
    if pos != end or body[0] > 1:
        raise ProtocolViolation("malformed CONNACK")
    if code >= 0x80:
        reason = props.get(P_REASON_STRING)
        raise ConnectionRefused(code, reason_text(code) + (f": {reason}" if isinstance(reason, str) else ""))
    if code:
        raise ProtocolViolation(f"malformed CONNACK: reason code 0x{code:02x}")
    keep_alive = props.get(P_SERVER_KEEP_ALIVE)
    return Connack(bool(body[0] & 1), keep_alive if isinstance(keep_alive, int) else None)


def decode(first: int, buf: Buffer, start: int, stop: int) -> Publish | Control:
    """Any packet from the broker, given its body's bounds (as `frame` found them)."""
    if first & 0xF0 == PUBLISH:
        topic, payload, qos, mid = decode_publish(first, buf, start, stop)
        return Publish(topic, payload, qos, bool(first & 1), mid)
    return decode_control(first, bytes(buf[start:stop]))


# -- encoding --------------------------------------------------------------------------------------


def _encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)


def _string(s: str | bytes) -> bytes:
    data = s.encode() if isinstance(s, str) else s
    if len(data) > 0xFFFF:
        raise ValueError(f"string of {len(data)} bytes: MQTT allows 65535")
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _encode_varint(len(body)) + body


def connect_packet(
    *,
    client_id: str,
    keepalive_s: int,
    session_expiry_s: int,
    receive_maximum: int | None,
    max_packet_bytes: int,
    username: str | None,
    password: str | None,
) -> bytes:
    """CONNECT resuming the session (clean start 0), with Session Expiry, Receive Maximum and
    Maximum Packet Size. No Topic Alias Maximum: every PUBLISH names its topic."""
    flags = 0  # clean start 0: resume the session
    if username is not None:
        flags |= 0x80
    if password is not None:
        flags |= 0x40
    props = bytes((P_SESSION_EXPIRY,)) + session_expiry_s.to_bytes(4, "big")
    if receive_maximum is not None:
        props += bytes((P_RECEIVE_MAXIMUM,)) + receive_maximum.to_bytes(2, "big")
    props += bytes((P_MAXIMUM_PACKET_SIZE,)) + max_packet_bytes.to_bytes(4, "big")
    body = (
        _string("MQTT")
        + bytes((5, flags))
        + keepalive_s.to_bytes(2, "big")
        + _encode_varint(len(props))
        + props
        + _string(client_id)
    )
    if username is not None:
        body += _string(username)
    if password is not None:
        body += _string(password)
    return _packet(CONNECT, body)


def subscribe_packet(packet_id: int, filters: list[str] | tuple[str, ...]) -> bytes:
    """SUBSCRIBE at QoS 1 with retain handling 1 (retained messages only for a new subscription)."""
    body = packet_id.to_bytes(2, "big") + b"\x00" + b"".join(_string(f) + _SUB_OPTIONS for f in filters)
    return _packet(SUBSCRIBE, body)


def unsubscribe_packet(packet_id: int, filters: list[str] | tuple[str, ...]) -> bytes:
    return _packet(
        UNSUBSCRIBE, packet_id.to_bytes(2, "big") + b"\x00" + b"".join(_string(f) for f in filters)
    )


def puback_packet(packet_id: int) -> bytes:
    return bytes((PUBACK, 2, packet_id >> 8, packet_id & 0xFF))


def pubrec_packet(packet_id: int) -> bytes:
    return bytes((PUBREC, 2, packet_id >> 8, packet_id & 0xFF))


def pubcomp_packet(packet_id: int) -> bytes:
    return bytes((PUBCOMP, 2, packet_id >> 8, packet_id & 0xFF))


def disconnect_packet(reason_code: int = 0) -> bytes:
    return DISCONNECT_NORMAL if reason_code == 0 else bytes((DISCONNECT, 1, reason_code))

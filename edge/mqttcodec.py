"""The MQTT v5 packets of the field link, without I/O: framing, limits and errors.

Encoding and decoding are done by ``mqtt5``, a maintained sans-IO MQTT v5 codec written in Rust
(docs/benchmarks.md, "Field link: alternatives measured", has the measurements behind that
choice). This module adds what the link needs around it:

- framing: `frame` reads a packet's fixed header, so the link knows a packet's size before the
  packet is complete and can refuse one larger than the Maximum Packet Size it announced, without
  ever buffering it;
- one error type for everything a broker can send wrong: `read` maps the codec's errors to
  `ProtocolViolation` (`PacketTooLarge` for the size limit), so a malformed stream never leaks an
  ``IndexError`` or a ``ValueError`` into the link;
- names: a refused CONNACK, including the MQTT 3.1.1-style answer of an old broker (a 2-byte body
  with return code 1-5), becomes `ConnectionRefused` with the reason in words; `reason_text` names
  a DISCONNECT's reason code.

Exceptions (under `edge.errors.MqttError`)::

    MqttError
    ├── ConnectionRefused     the broker answered CONNECT with a failure (``code``, ``protocol``)
    └── ProtocolViolation     bytes that are not a valid MQTT v5 packet, or a packet out of place
        └── PacketTooLarge    a packet above the Maximum Packet Size we announced (``size``, ``limit``)
"""

from __future__ import annotations

import enum
from typing import Final

import mqtt5

from edge.errors import MqttError

PINGREQ: Final = b"\xc0\x00"
DISCONNECT_NORMAL: Final = b"\xe0\x00"
#: DISCONNECT reason codes the link sends.
MALFORMED_PACKET: Final = 0x81
PROTOCOL_ERROR: Final = 0x82
PACKET_TOO_LARGE: Final = 0x95

#: The 3.1.1 CONNACK return codes, answered by a broker that does not speak MQTT v5.
_V311_REFUSED: Final = {
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


def reason_text(code: int, kind: type[enum.IntEnum] = mqtt5.DisconnectReasonCode) -> str:
    """A reason code in words (``0x8e`` -> "session taken over"), or its number when unknown."""
    try:
        return kind(code).name.lower().replace("_", " ")
    except (ValueError, TypeError, OverflowError):
        return f"reason code 0x{code:02x}"


def frame(buf: bytes | bytearray | memoryview, pos: int, end: int, limit: int) -> int:
    """The end (exclusive) of the packet that starts at ``buf[pos]``, from its fixed header.

    Returns -1 when ``buf[pos:end]`` does not hold the whole fixed header yet. Raises
    `ProtocolViolation` for a remaining length of more than four bytes and `PacketTooLarge` for
    a packet larger than `limit`. The packet itself may still be incomplete (``stop > end``).
    """
    length = shift = 0
    i = pos + 1
    while True:
        if i >= end:
            return -1
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
    return i + length


def read(packet: memoryview | bytes) -> mqtt5.Packet:
    """Decode one complete packet (exactly the bytes `frame` delimited).

    Raises `ConnectionRefused` for a refused CONNACK (MQTT v5 or 3.1.1) and `ProtocolViolation`
    for anything malformed."""
    try:
        decoded, used = mqtt5.read(memoryview(packet))
    except (ValueError, IndexError) as exc:
        if len(packet) == 4 and packet[0] == 0x20 and packet[1] == 2:
            _refused_311(packet[3])
        raise ProtocolViolation(f"malformed packet (type 0x{packet[0] >> 4:x}): {exc}") from exc
    if used != len(packet):
        raise ProtocolViolation(
            f"malformed packet (type 0x{packet[0] >> 4:x}): {len(packet) - used} bytes left"
        )
    if type(decoded) is mqtt5.ConnAckPacket and int(decoded.reason_code) >= 0x80:
        code = int(decoded.reason_code)
        raise ConnectionRefused(
            code,
            reason_text(code, mqtt5.ConnAckReasonCode)
            + (f": {decoded.reason_str}" if decoded.reason_str else ""),
        )
    return decoded


def _refused_311(code: int) -> None:
    """A 2-byte CONNACK: an MQTT 3.1.1 broker's answer to our v5 CONNECT."""
    text = _V311_REFUSED.get(code, f"return code {code}")
    if code == 0:  # "accepted", but in a protocol we do not speak
        raise ConnectionRefused(0, "the broker answered in MQTT 3.1.1, not 5", protocol="3.1.1")
    raise ConnectionRefused(code, text, protocol="3.1.1")


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
    return mqtt5.ConnectPacket(
        client_id,
        username=username,
        password=password.encode() if password is not None else None,
        clean_start=False,
        keep_alive=keepalive_s,
        session_expiry_interval=session_expiry_s,
        receive_max=receive_maximum if receive_maximum is not None else 65535,
        max_packet_size=max_packet_bytes,
        request_problem_info=True,
    ).write()


def subscribe_packet(packet_id: int, filters: list[str] | tuple[str, ...]) -> bytes:
    """SUBSCRIBE at QoS 1 with retain handling 1 (retained messages only for a new subscription)."""
    return mqtt5.SubscribePacket(
        packet_id,
        [
            mqtt5.TopicFilter(
                f,
                max_qos=mqtt5.QoS.AT_LEAST_ONCE,
                retain_as_published=False,
                retain_handling=mqtt5.RetainHandling.SEND_IF_SUBSCRIPTION_NOT_EXISTS,
            )
            for f in filters
        ],
    ).write()


def unsubscribe_packet(packet_id: int, filters: list[str] | tuple[str, ...]) -> bytes:
    return mqtt5.UnsubscribePacket(packet_id, list(filters)).write()


def puback_packet(packet_id: int) -> bytes:
    return mqtt5.PubAckPacket(packet_id).write()


def pubrec_packet(packet_id: int) -> bytes:
    return mqtt5.PubRecPacket(packet_id).write()


def pubcomp_packet(packet_id: int) -> bytes:
    return mqtt5.PubCompPacket(packet_id).write()


def disconnect_packet(reason_code: int = 0) -> bytes:
    return mqtt5.DisconnectPacket(reason_code=mqtt5.DisconnectReasonCode(reason_code)).write()

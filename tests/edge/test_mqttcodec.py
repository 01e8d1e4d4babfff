"""`edge.mqttcodec` and the field link's receive path on byte streams, without a network.

The fuzz tests feed arbitrary bytes, and mutations of valid streams of what a broker sends, to the
codec and to the link's own connection object: whatever the bytes, the only exceptions are the
codec's own (`ProtocolViolation`, `ConnectionRefused`), the parse always ends, and the link ends
the connection with one log line instead of raising.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge import mqttcodec
from edge.errors import MqttError
from edge.fieldlink import FieldLink, _Connection
from edge.logs import Logger
from edge.mqtt import Message
from edge.mqttcodec import ConnectionRefused, PacketTooLarge, ProtocolViolation

LIMIT = 4096

# -- what a broker sends, valid (built by hand, independently of the codec's encoders) ---------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _str(s: str) -> bytes:
    data = s.encode()
    return len(data).to_bytes(2, "big") + data


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


def _publish(
    topic: str, payload: bytes, qos: int, mid: int, props: bytes = b"", retain: bool = False
) -> bytes:
    body = _str(topic) + (mid.to_bytes(2, "big") if qos else b"") + _varint(len(props)) + props + payload
    return _packet(0x30 | qos << 1 | int(retain), body)


_topics = st.text(st.characters(codec="utf-8", exclude_characters="\x00#+"), min_size=1, max_size=40)
_publishes = st.builds(
    _publish,
    _topics,
    st.binary(max_size=300),
    st.sampled_from([0, 1]),
    st.integers(1, 65535),
    st.sampled_from([b"", b"\x01\x01", b"\x26" + _str("k") + _str("v") + b"\x03" + _str("json")]),
    st.booleans(),
)
_controls = st.sampled_from(
    [
        _packet(0x20, b"\x01\x00\x00"),  # CONNACK, session present
        _packet(0x20, b"\x00\x00\x0f\x13\x00\x14\x21\x00\x64\x27\x00\x00\x03\xe8\x24\x01"),
        _packet(0x90, b"\x00\x01\x00\x01"),  # SUBACK granted QoS 1
        _packet(0x90, b"\x00\x02\x06\x1f" + _str("acl") + b"\x87"),  # SUBACK not authorized
        _packet(0xB0, b"\x00\x03\x00\x00"),  # UNSUBACK
        b"\x62\x02\x00\x07",  # PUBREL
        b"\xd0\x00",  # PINGRESP
        _packet(0xE0, b"\x8e\x06\x1f" + _str("bye")),  # DISCONNECT session taken over
    ]
)
_streams = st.lists(st.one_of(_publishes, _controls), min_size=1, max_size=20).map(b"".join)


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(_streams))
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["flip", "set", "insert", "delete", "truncate"]))
        at = draw(st.integers(0, max(0, len(data) - 1)))
        if kind == "flip" and data:
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        elif kind == "delete" and data:
            del data[at : at + draw(st.integers(1, 8))]
        elif kind == "truncate":
            del data[at:]
    return bytes(data)


def split(data: bytes, limit: int = LIMIT) -> Iterator[mqttcodec.Publish | mqttcodec.Control]:
    """The link's framing loop over a complete stream: packets until the stream ends."""
    pos = 0
    while pos + 2 <= len(data):
        start, stop = mqttcodec.frame(data, pos, len(data), limit)
        if start < 0 or stop > len(data):
            return
        yield mqttcodec.decode(data[pos], data, start, stop)
        pos = stop


# -- the codec alone ---------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=600))
def test_arbitrary_bytes_raise_only_the_codecs_errors(data: bytes) -> None:
    try:
        for _ in split(data):
            pass
    except (ProtocolViolation, ConnectionRefused):
        pass


@settings(max_examples=400, deadline=None)
@given(_mutated())
def test_mutated_streams_raise_only_the_codecs_errors(data: bytes) -> None:
    try:
        for _ in split(data):
            pass
    except (ProtocolViolation, ConnectionRefused):
        pass


@st.composite
def _sent(draw: st.DrawFn) -> tuple[bytes, list[tuple[str, bytes, int, bool, int]]]:
    items = draw(
        st.lists(
            st.tuples(
                _topics,
                st.binary(max_size=300),
                st.sampled_from([0, 1]),
                st.booleans(),
                st.integers(1, 65535),
            ),
            min_size=1,
            max_size=10,
        )
    )
    items = [(t, p, q, r, m if q else 0) for t, p, q, r, m in items]
    return b"".join(_publish(t, p, q, m, retain=r) for t, p, q, r, m in items), items


@settings(max_examples=100, deadline=None)
@given(_sent())
def test_valid_streams_decode_to_what_was_sent(
    sent: tuple[bytes, list[tuple[str, bytes, int, bool, int]]],
) -> None:
    data, items = sent
    got = list(split(data, limit=1 << 20))
    assert got == [mqttcodec.Publish(*item) for item in items]


def test_control_packets_decode() -> None:
    connack = _packet(0x20, b"\x01\x00\x05\x13\x00\x14\x24\x01")
    assert list(split(connack)) == [mqttcodec.Connack(session_present=True, server_keep_alive=20)]
    stream = (
        _packet(0x90, b"\x00\x02\x06\x1f" + _str("acl") + b"\x01\x87")
        + _packet(0xB0, b"\x00\x03\x00\x11")
        + b"\x62\x02\x00\x07\xd0\x00\xe0\x00"
        + _packet(0xE0, b"\x8e\x06\x1f" + _str("bye"))
    )
    assert list(split(stream)) == [
        mqttcodec.Suback(2, (0x01, 0x87), reason_string="acl"),
        mqttcodec.Suback(3, (0x11,), unsubscribe=True),
        mqttcodec.Pubrel(7),
        mqttcodec.Pingresp(),
        mqttcodec.Disconnect(0),
        mqttcodec.Disconnect(0x8E, "bye"),
    ]


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (_publish("t", b"x", 1, 0), "packet identifier 0"),
        (b"\x36\x05\x00\x01t\x00x", "QoS 3"),
        (_packet(0x30, b"\x00\x00\x00x"), "topic length"),
        (_packet(0x30, b"\x00\x02\xff\xfe\x00"), "not UTF-8"),
        (_packet(0x30, b"\x00\x01t\x03\x23\x00\x01x"), "topic alias"),
        (_packet(0x30, b"\x00\x01t\x02\x7f\x00x"), "unknown property 0x7f"),
        (_packet(0x30, b"\x00\x01t\x05\x1f\x00\x09ab"), "truncated"),
        (_packet(0x30, b"\x00\x01t\x03\x1f\x00\x01"), "truncated"),
        (_packet(0xE0, b"\x8e\x04\x1f\x00\x01\xff"), "not UTF-8"),
        (b"\xc0\x00", "unexpected packet type 0xc"),
        (b"\x10\x00", "unexpected packet type 0x1"),
        (b"\xd0\x01\x00", "malformed PINGRESP"),
        (b"\x90\x02\x00\x01", "too short"),
    ],
)
def test_malformed_packets_are_named(data: bytes, what: str) -> None:
    with pytest.raises(ProtocolViolation, match=what):
        list(split(data))


def test_frame_limits_and_incomplete_headers() -> None:
    assert mqttcodec.frame(b"\x30", 0, 1, LIMIT) == (-1, -1)
    assert mqttcodec.frame(b"\x30\x80", 0, 2, LIMIT) == (-1, -1)  # the length continues
    assert mqttcodec.frame(b"\x30\x7f", 0, 2, LIMIT) == (2, 2 + 127)
    assert mqttcodec.frame(b"\x30\x80\x01", 0, 3, LIMIT) == (3, 3 + 128)
    with pytest.raises(ProtocolViolation, match="more than four bytes"):
        mqttcodec.frame(b"\x30\xff\xff\xff\xff\x01", 0, 6, 1 << 30)
    with pytest.raises(PacketTooLarge) as info:
        mqttcodec.frame(b"\x30\x80\x80\x80\x05", 0, 5, 256 * 1024)  # 10 MiB announced
    assert info.value.size == 5 + (5 << 21)
    assert info.value.limit == 256 * 1024
    assert info.value.reason == "0x95"
    assert mqttcodec.frame(b"\x30\xfb\x7f", 0, 3, 3 + 0x3FFB) == (3, 3 + 0x3FFB)  # exactly the limit


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (0x80, "unspecified error"),
        (0x84, "unsupported protocol version"),
        (0x85, "client identifier not valid"),
        (0x86, "bad user name or password"),
        (0x87, "not authorized"),
        (0x88, "server unavailable"),
        (0x8A, "banned"),
        (0x9C, "use another server"),
        (0x9F, "connection rate exceeded"),
        (0xFE, "reason code 0xfe"),
    ],
)
def test_a_refused_connack_names_the_reason(code: int, words: str) -> None:
    with pytest.raises(ConnectionRefused) as info:
        list(split(_packet(0x20, bytes((0, code, 0)))))
    assert info.value.code == code
    assert info.value.protocol == "5"
    assert words in str(info.value)
    assert f"0x{code:02x}" in str(info.value)
    assert isinstance(info.value, MqttError)
    with pytest.raises(ConnectionRefused, match=f"{words}: go away"):
        list(split(_packet(0x20, bytes((0, code, 10, 0x1F)) + _str("go away"))))


@pytest.mark.parametrize(
    ("code", "words"),
    [
        (1, "unacceptable protocol version"),
        (2, "identifier rejected"),
        (3, "server unavailable"),
        (4, "bad user name or password"),
        (5, "not authorized"),
        (0, "answered in MQTT 3.1.1"),
        (9, "return code 9"),
    ],
)
def test_the_311_answer_of_an_old_broker_is_named(code: int, words: str) -> None:
    with pytest.raises(ConnectionRefused) as info:
        list(split(bytes((0x20, 2, 0, code))))
    assert info.value.protocol == "3.1.1"
    assert words in str(info.value)


def test_reason_text() -> None:
    assert mqttcodec.reason_text(0x8E) == "session taken over"
    assert mqttcodec.reason_text(0x95) == "packet too large"
    assert mqttcodec.reason_text(0x03) == "reason code 0x03"


def test_what_the_link_sends() -> None:
    connect = mqttcodec.connect_packet(
        client_id="gw-1",
        keepalive_s=30,
        session_expiry_s=3600,
        receive_maximum=1000,
        max_packet_bytes=256 * 1024,
        username="u",
        password="p",  # noqa: S106 - a test value
    )
    props = b"\x11\x00\x00\x0e\x10" + b"\x21\x03\xe8" + b"\x27\x00\x04\x00\x00"
    body = (
        _str("MQTT")
        + b"\x05\xc0\x00\x1e"
        + _varint(len(props))
        + props
        + _str("gw-1")
        + _str("u")
        + _str("p")
    )
    assert connect == _packet(0x10, body)
    sub = mqttcodec.subscribe_packet(1, ["a/#", "b/+"])
    assert sub == b"\x82\x0f\x00\x01\x00\x00\x03a/#\x11\x00\x03b/+\x11"  # QoS 1, retain handling 1
    assert mqttcodec.unsubscribe_packet(2, ["a/#"]) == b"\xa2\x08\x00\x02\x00\x00\x03a/#"
    assert mqttcodec.puback_packet(0x1234) == b"\x40\x02\x12\x34"
    assert mqttcodec.disconnect_packet(0x95) == b"\xe0\x01\x95"
    assert mqttcodec.disconnect_packet() == mqttcodec.DISCONNECT_NORMAL


# -- the link's connection object on the same streams ------------------------------------------


class _Transport(asyncio.Transport):
    def __init__(self) -> None:
        super().__init__()
        self.written = bytearray()
        self.closing = False
        self.aborted = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.closing = True

    def abort(self) -> None:
        self.closing = self.aborted = True

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.events: list[tuple[str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.events.append((record.getMessage(), getattr(record, "fields", {})))


def _feed(data: bytes, chunk: int, limit: int = LIMIT) -> tuple[list[Message], _Transport, _Records]:
    """Feed `data` to a fresh connection of a link, `chunk` bytes per read, as the event loop would."""
    records = _Records()
    logger = logging.getLogger(f"test.mqttcodec.{id(records)}")
    logger.addHandler(records)
    logger.propagate = False
    got: list[Message] = []

    async def go() -> _Transport:
        link = FieldLink(
            host="127.0.0.1",
            port=1,
            client_id="fuzz",
            on_message=got.append,
            max_packet_bytes=limit,
            log=Logger(logger),
        )
        conn = _Connection(link, 1)
        link._conn = conn
        transport = _Transport()
        conn.connection_made(transport)
        pos = 0
        while pos < len(data) and not transport.is_closing():
            buf = conn.get_buffer(-1)
            n = min(chunk, len(buf), len(data) - pos)
            buf[:n] = data[pos : pos + n]
            conn.buffer_updated(n)
            assert len(conn.buf) <= max(256 * 1024, limit)
            pos += n
        return transport

    try:
        transport = asyncio.run(go())
    finally:
        logger.removeHandler(records)
    return got, transport, records


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(_mutated(), st.binary(max_size=600)), st.integers(1, 64))
def test_the_link_ends_a_malformed_stream_with_one_log_line(data: bytes, chunk: int) -> None:
    _got, transport, records = _feed(data, chunk)
    errors = [e for e in records.events if e[0] in ("protocol_violation", "packet_too_large")]
    assert len(errors) <= 1
    if errors:
        assert transport.is_closing()
        assert transport.written.endswith((b"\xe0\x01\x81", b"\xe0\x01\x95"))


@settings(max_examples=60, deadline=None)
@given(st.lists(_publishes, min_size=1, max_size=30), st.integers(1, 200))
def test_the_link_frames_any_chunking(packets: list[bytes], chunk: int) -> None:
    got, transport, records = _feed(b"".join(packets), chunk)
    assert not records.events
    assert not transport.is_closing()
    assert [_publish(m.topic, m.payload, m.qos, m.mid, retain=m.retain) for m in got] == [
        _publish(p.topic, p.payload, p.qos, p.packet_id, retain=p.retain)
        for p in split(b"".join(packets), limit=1 << 20)
        if isinstance(p, mqttcodec.Publish)
    ]


def test_a_packet_above_the_limit_is_refused_before_its_body_arrives() -> None:
    header = b"\x32\x80\x80\x80\x05"  # PUBLISH QoS 1, 10 MiB
    got, transport, records = _feed(header + b"\x00" * 100_000, 4096, limit=256 * 1024)
    assert not got
    assert records.events == [
        (
            "packet_too_large",
            {
                "broker": "127.0.0.1:1",
                "size": 5 + (5 << 21),
                "limit": 256 * 1024,
                "action": "disconnect 0x95",
            },
        )
    ]
    assert transport.written == b"\xe0\x01\x95"
    assert transport.is_closing()


def test_a_packet_within_a_large_limit_gets_a_buffer_of_its_size() -> None:
    big = _publish("t/big", bytes(range(256)) * 2000, 1, 5)  # 512,000 bytes of payload
    got, transport, records = _feed(big + _publish("t/small", b"s", 0, 0), 65536, limit=1 << 20)
    assert [(m.topic, len(m.payload)) for m in got] == [("t/big", 512_000), ("t/small", 1)]
    assert not records.events
    assert not transport.is_closing()


@pytest.mark.parametrize("size", [120, 200, 20_000])  # one-, two- and three-byte remaining lengths
def test_the_limit_holds_for_every_length_encoding(size: int) -> None:
    packet = _publish("t", b"x" * (size - 7), 0, 0)
    got, transport, records = _feed(packet, 4096, limit=100)
    assert not got
    assert [(e, f["size"]) for e, f in records.events] == [("packet_too_large", len(packet))]
    assert transport.written == b"\xe0\x01\x95"

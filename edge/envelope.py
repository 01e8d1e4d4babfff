"""The uplink envelope: the wire format of one batch on ``linli/v1/<community>/<gateway>/up``.

docs/edge.md is the specification the cloud reads; this module is the edge's implementation of
it. In short, the MQTT payload is one MessagePack map::

    {"v": 1, "gateway_id": str, "community_id": str, "batch_seq": int, "class": "alarm"|"telemetry",
     "created_at_us": int, "counters": {str: int}, "readings": [reading, ...]}

and each reading is a MessagePack array (positional, so it costs no key bytes)::

    [device_id, device_type, ts_us, received_at_us, metrics, events, quality, profile, reading_id,
     device_ts_us?]

Times are integer microseconds since the Unix epoch, UTC. Metric values are MessagePack integers
when they are whole numbers and floats otherwise; readers treat both as floats. ``device_ts_us`` is
present only when the gateway replaced a skewed device time (quality holds ``clock_skew``).

A reading is encoded once, when it is buffered; the buffer stores exactly these bytes, and an
envelope embeds them unchanged (`msgspec.Raw`), so forming a batch copies bytes and never
re-encodes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final, Literal

import msgspec

from device_profiles import Reading

ENVELOPE_VERSION: Final = 1
_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_INT_SAFE: Final = 2.0**53

BatchClass = Literal["alarm", "telemetry"]


class WireReading(msgspec.Struct, frozen=True, array_like=True, omit_defaults=True):
    """One reading as it travels: positional fields, in this order (see the module docstring)."""

    device_id: str
    device_type: str
    ts_us: int
    received_at_us: int
    metrics: dict[str, int | float]
    events: tuple[str, ...]
    quality: tuple[str, ...]
    profile: str
    reading_id: str
    device_ts_us: int | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True, rename={"batch_class": "class"}):
    """The envelope as a reader decodes it (readings typed)."""

    v: int
    gateway_id: str
    community_id: str
    batch_seq: int
    batch_class: BatchClass
    created_at_us: int
    counters: dict[str, int]
    readings: list[WireReading]


class _OutEnvelope(msgspec.Struct, frozen=True, kw_only=True, rename={"batch_class": "class"}):
    v: int
    gateway_id: str
    community_id: str
    batch_seq: int
    batch_class: str
    created_at_us: int
    counters: dict[str, int]
    readings: msgspec.Raw


_encoder = msgspec.msgpack.Encoder()
_reading_decoder = msgspec.msgpack.Decoder(WireReading)
_envelope_decoder = msgspec.msgpack.Decoder(Envelope)


def to_us(dt: datetime) -> int:
    """Microseconds since the epoch (exact: no float rounding)."""
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime.fromtimestamp(us // 1_000_000, UTC).replace(microsecond=us % 1_000_000)


def compact_metrics(metrics: dict[str, float]) -> dict[str, int | float]:
    """Whole-number values as ints: one to three bytes instead of nine on the wire and on disk."""
    return {k: int(v) if v.is_integer() and -_INT_SAFE < v < _INT_SAFE else v for k, v in metrics.items()}


def wire_reading(
    reading: Reading,
    *,
    events: tuple[str, ...] | None = None,
    quality: tuple[str, ...] | None = None,
    ts: datetime | None = None,
    device_ts: datetime | None = None,
) -> WireReading:
    """The wire form of a decoded reading, with the agent's additions (derived events, flags)."""
    return WireReading(
        device_id=reading.device_id,
        device_type=reading.device_type,
        ts_us=to_us(ts if ts is not None else reading.ts),
        received_at_us=to_us(reading.received_at),
        metrics=compact_metrics(reading.metrics),
        events=reading.events if events is None else events,
        quality=reading.quality if quality is None else quality,
        profile=reading.profile,
        reading_id=reading.reading_id,
        device_ts_us=None if device_ts is None else to_us(device_ts),
    )


def encode_reading(reading: WireReading) -> bytes:
    return _encoder.encode(reading)


def decode_reading(data: bytes) -> WireReading:
    return _reading_decoder.decode(data)


def pack_array(count: int, body: bytes) -> bytes:
    """A MessagePack array of `count` already-encoded elements whose bytes are `body`."""
    if count < 16:
        return bytes((0x90 | count,)) + body
    if count < 0x10000:
        return b"\xdc" + count.to_bytes(2, "big") + body
    return b"\xdd" + count.to_bytes(4, "big") + body


def split_array(packed: bytes) -> list[bytes]:
    """The encoded elements of a MessagePack array (the inverse of `pack_array`)."""
    return [bytes(r) for r in msgspec.msgpack.decode(packed, type=list[msgspec.Raw])]


def encode_envelope(
    *,
    gateway_id: str,
    community_id: str,
    batch_seq: int,
    batch_class: BatchClass,
    created_at_us: int,
    counters: dict[str, int],
    readings: bytes,
) -> bytes:
    """One batch's payload. `readings` is a `pack_array` of `encode_reading` outputs, embedded
    byte for byte."""
    return _encoder.encode(
        _OutEnvelope(
            v=ENVELOPE_VERSION,
            gateway_id=gateway_id,
            community_id=community_id,
            batch_seq=batch_seq,
            batch_class=batch_class,
            created_at_us=created_at_us,
            counters=counters,
            readings=msgspec.Raw(readings),
        )
    )


def decode_envelope(payload: bytes) -> Envelope:
    """Parse and type-check a payload (used by tests and tools; the cloud has its own reader)."""
    return _envelope_decoder.decode(payload)

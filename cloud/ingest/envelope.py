"""The cloud's reader of the uplink envelope (docs/edge.md is the specification; the edge's code
is never imported).

The payload on ``linli/v1/<community_id>/<gateway_id>/up`` is one MessagePack map::

    {"v": 1, "gateway_id": str, "community_id": str, "batch_seq": int, "class": "alarm"|"telemetry",
     "created_at_us": int, "counters": {str: int}, "readings": [reading, ...]}

and each reading a positional MessagePack array::

    [device_id, device_type, ts_us, received_at_us, metrics, events, quality, profile, reading_id,
     device_ts_us?]

Times are integer microseconds since the Unix epoch (UTC). Metric values may be integers or
floats; both are stored as double precision. Anything else (not MessagePack, missing fields,
wrong types, a topic naming another gateway, an unknown ``v``) raises `EnvelopeError`, and the
payload goes to the dead-letter table.
"""

from __future__ import annotations

import re
import uuid
from typing import Final

import msgspec

from cloud.errors import EnvelopeError, UnknownVersion

VERSION: Final = 1
_UUID_HEX: Final = re.compile(r"^[0-9a-f]{32}$")
_NS: Final = uuid.UUID("2f0e8c47-6c69-6e6c-6920-72656164696e")


class WireReading(msgspec.Struct, frozen=True, array_like=True):
    device_id: str
    device_type: str
    ts_us: int
    received_at_us: int
    metrics: dict[str, float]
    events: list[str]
    quality: list[str]
    profile: str
    reading_id: str
    device_ts_us: int | None = None


class Envelope(msgspec.Struct, frozen=True, kw_only=True, rename={"batch_class": "class"}):
    v: int
    gateway_id: str
    community_id: str
    batch_seq: int
    batch_class: str
    created_at_us: int
    counters: dict[str, int]
    readings: list[WireReading]


class _Head(msgspec.Struct):
    v: object = None


_decoder: Final = msgspec.msgpack.Decoder(Envelope)
_head: Final = msgspec.msgpack.Decoder(_Head)


def topic_ids(topic: str) -> tuple[str, str] | None:
    """``(community_id, gateway_id)`` of ``linli/v1/<community>/<gateway>/<kind>``, else None."""
    parts = topic.split("/")
    if len(parts) != 5 or parts[0] != "linli" or parts[1] != "v1":
        return None
    return parts[2], parts[3]


def decode(topic: str, payload: bytes) -> Envelope:
    """Decode and check one uplink payload; raises `EnvelopeError` (or `UnknownVersion`)."""
    try:
        env = _decoder.decode(payload)
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        try:
            version = _head.decode(payload).v
        except (msgspec.DecodeError, msgspec.ValidationError):
            version = None
        if version is not None and version != VERSION:
            raise UnknownVersion(version) from exc
        raise EnvelopeError(f"malformed envelope: {exc}") from exc
    if env.v != VERSION:
        raise UnknownVersion(env.v)
    ids = topic_ids(topic)
    if ids != (env.community_id, env.gateway_id):
        raise EnvelopeError(
            f"topic {topic!r} does not match envelope community {env.community_id!r}"
            f" gateway {env.gateway_id!r}"
        )
    if env.batch_seq < 0:
        raise EnvelopeError(f"negative batch_seq {env.batch_seq}")
    return env


def reading_uuid(reading_id: str) -> uuid.UUID:
    """The stored form of a reading id: the id itself when it is a UUID or 32 hex digits,
    otherwise a UUIDv5 of it (so any vendor message id de-duplicates)."""
    if len(reading_id) == 36 or _UUID_HEX.match(reading_id):
        try:
            return uuid.UUID(reading_id)
        except ValueError:
            pass
    return uuid.uuid5(_NS, reading_id)

"""Compiling a `Profile` into an encoder: `Reading` -> ``(topic, payload)`` in the vendor's dialect.

The simulators use this to speak each dialect. Encoding is the inverse of decoding, field by
field, and deterministic: what a `Reading` does not carry comes from the profile's ``encode``
section (a JSON template, topic variables) or is derived from the reading:

- a vendor message id (``reading_id.path``) is `reading_id` when that is UUID-shaped, otherwise a
  UUID hashed from it;
- a frame counter (``encode.counters``) is the reading's epoch second modulo 2**16.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from datetime import UTC
from typing import Any, Final

import msgspec

from device_profiles.decoders import uuid8
from device_profiles.errors import EncodeError
from device_profiles.model import BINARY_FORMATS, FieldSpec, Profile, binary_size, topic_vars
from device_profiles.paths import parse_path, set_path
from device_profiles.reading import Reading

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_INT_BOUNDS: Final = {
    name: (-(1 << (8 * binary_size(name) - 1)), (1 << (8 * binary_size(name) - 1)) - 1)
    if name.startswith("int")
    else (0, (1 << (8 * binary_size(name))) - 1)
    for name in BINARY_FORMATS
    if name != "float32"
}


def message_uuid(reading_id: str) -> str:
    """`reading_id` itself when it is a lowercase UUID string, else a UUID hashed from it."""
    if _UUID.match(reading_id):
        return reading_id
    return uuid8(hashlib.blake2b(reading_id.encode(), digest_size=16).digest())


class CompiledEncoder:
    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.id = profile.id
        self._template = msgspec.json.encode(profile.encode.template)
        pattern = profile.topics[0]
        self._topic_names = topic_vars(pattern)
        self._topic_pattern = pattern
        self._metrics = {f.metric for f in profile.fields if f.metric is not None}
        self._events = {e for f in profile.fields for e in (f.events or {}).values() if e is not None}
        self._fields = [(f, parse_path(f.path) if f.path is not None else None) for f in profile.fields]
        binary = profile.payload.binary
        self._order = {"big": ">", "little": "<"}[binary.byte_order] if binary is not None else ">"

    def _fail(self, field: str, detail: str) -> EncodeError:
        return EncodeError(self.id, field, detail)

    def _topic(self, reading: Reading) -> str:
        values = dict(self.profile.encode.topic_vars)
        if self.profile.device_id.topic is not None:
            values[self.profile.device_id.topic] = reading.device_id
        missing = [name for name in self._topic_names if name not in values]
        if missing:
            raise self._fail("topic", f"no value for {{{missing[0]}}} (add it to encode.topic_vars)")
        for name in self._topic_names:
            if not values[name] or "/" in values[name] or "+" in values[name] or "#" in values[name]:
                raise self._fail("topic", f"{name}={values[name]!r} cannot be a topic segment")
        topic = self._topic_pattern
        for name in self._topic_names:
            topic = topic.replace("{" + name + "}", values[name])
        return topic

    def encode(self, reading: Reading) -> tuple[str, bytes]:
        p = self.profile
        if reading.device_type != p.device_type:
            raise self._fail(
                "device_type", f"reading is a {reading.device_type}, profile is for {p.device_type}"
            )
        extra = set(reading.metrics) - self._metrics
        if extra:
            raise self._fail("metrics", f"the profile cannot express {sorted(extra)}")
        extra = set(reading.events) - self._events
        if extra:
            raise self._fail("events", f"the profile cannot express {sorted(extra)}")
        topic = self._topic(reading)
        doc: dict[str, Any] = msgspec.json.decode(self._template) if p.payload.format == "json" else {}
        for rule in p.match:
            if rule.equals is not None:
                set_path(doc, parse_path(rule.path), rule.equals)
        if p.device_id.path is not None:
            set_path(doc, parse_path(p.device_id.path), reading.device_id)
        ts = reading.ts.astimezone(UTC)
        epoch = ts.timestamp()
        slot_values: dict[tuple[int, str], int | float] = {}
        if p.timestamp is not None:
            value: Any = ts.isoformat() if p.timestamp.format == "iso8601" else epoch
            if p.timestamp.format == "epoch_ms":
                value = round(epoch * 1000)
            elif p.timestamp.format == "epoch_s":
                value = int(epoch) if epoch == int(epoch) else epoch
            if p.timestamp.path is not None:
                set_path(doc, parse_path(p.timestamp.path), value)
            elif p.timestamp.at is not None:
                slot_values[(p.timestamp.at, p.timestamp.type or "uint32")] = int(value)
        if p.reading_id is not None:
            set_path(doc, parse_path(p.reading_id.path), message_uuid(reading.reading_id))
        for path in p.encode.counters:
            set_path(doc, parse_path(path), int(epoch) % 65536)
        for f, segments in self._fields:
            raw = self._raw(f, reading)
            if raw is _OMIT:
                if segments is not None:
                    set_path(doc, segments, None)
                continue
            if segments is not None:
                set_path(doc, segments, raw)
            elif f.at is not None and f.type is not None:
                key = (f.at, f.type)
                if f.mask is not None:
                    shift = (f.mask & -f.mask).bit_length() - 1
                    if int(raw) << shift & ~f.mask:
                        raise self._fail(f.metric or str(f.at), f"{raw} does not fit mask {f.mask:#x}")
                    raw = int(slot_values.get(key, 0)) | int(raw) << shift
                slot_values[key] = raw
        payload = self._body(doc, slot_values)
        return topic, payload

    def _body(self, doc: dict[str, Any], slot_values: dict[tuple[int, str], int | float]) -> bytes:
        p = self.profile
        binary = p.payload.binary
        if binary is None:
            return msgspec.json.encode(doc)
        body = bytearray(binary.length)
        for (at, type_name), value in slot_values.items():
            fmt = self._order + BINARY_FORMATS[type_name]
            bounds = _INT_BOUNDS.get(type_name)
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise self._fail(f"byte {at}", f"{value} does not fit {type_name}")
            struct.pack_into(fmt, body, at, value)
        if p.payload.format == "binary":
            return bytes(body)
        if p.payload.format == "hex":
            return body.hex().encode()
        assert binary.path is not None  # noqa: S101 - checked by the model
        text = base64.b64encode(body).decode() if binary.encoding == "base64" else body.hex()
        set_path(doc, parse_path(binary.path), text)
        return msgspec.json.encode(doc)

    def _raw(self, f: FieldSpec, reading: Reading) -> Any:
        """The vendor value of one field for this reading, or `_OMIT`."""
        name = f.metric or f.path or f"byte {f.at}"
        if f.events is not None:
            found = [raw for raw, event in f.events.items() if event is not None and event in reading.events]
            if len({f.events[raw] for raw in found}) > 1:
                names = sorted({str(f.events[raw]) for raw in found})
                raise self._fail(name, f"one message can carry only one of {names}")
            if found:
                return found[0]
            for raw, event in f.events.items():
                if event is None:
                    return raw
            if f.required:
                raise self._fail(
                    name, "the reading has none of this field's events and there is no quiet value"
                )
            return _OMIT
        assert f.metric is not None  # noqa: S101 - FieldSpec guarantees metric or events
        value = reading.metrics.get(f.metric)
        if value is None:
            if f.absent_if:
                return f.absent_if[0]
            if f.required or f.at is not None:
                raise self._fail(name, "required by the profile but not in the reading")
            return _OMIT
        if f.map is not None:
            for raw, mapped in f.map.items():
                if mapped == value:
                    return raw
            raise self._fail(name, f"{value} is not a value of the profile's map")
        number = value if f.scale == 1 and f.offset == 0 else (value - f.offset) / f.scale
        ftype = f.type or "number"
        if ftype == "float32":
            return number
        if ftype in _INT_BOUNDS or ftype == "integer":
            return round(number)
        return int(number) if float(number).is_integer() and abs(number) < 2**53 else round(number, 9)


class _Omit:
    def __repr__(self) -> str:
        return "<omit>"


_OMIT: Final = _Omit()

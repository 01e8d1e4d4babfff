"""Compiling a `Profile` into an encoder: `Reading` -> ``(topic, payload)`` in the vendor's dialect.

The simulators use this to speak each dialect. Encoding is the inverse of decoding, field by
field, and deterministic: what a `Reading` does not carry comes from the profile's ``encode``
section (a JSON template, topic variables) or is derived from the reading:

- a vendor message id (``reading_id.path``) is `reading_id` when that is UUID-shaped, otherwise a
  UUID hashed from it;
- a frame counter (``encode.counters``) is the reading's epoch second modulo 2**16.

Everything that depends only on the profile is done once, when the encoder is built: each field
becomes a small function from the reading's metrics and events to the vendor value, the topic is
split around the device id, the binary body gets one `struct.Struct`, and a JSON message is laid
out once (`device_profiles.layout`), so encoding a reading fills in the values and joins bytes.
The output is byte for byte what writing each value into a copy of the template gives
(`set_path`), which remains the way for layouts that cannot be fixed in advance.
"""

from __future__ import annotations

import base64
import hashlib
import re
import struct
from collections.abc import Callable
from datetime import UTC
from typing import TYPE_CHECKING, Any, Final

import msgspec

from device_profiles.decoders import derived_reading_id, profile_person, uuid8
from device_profiles.dialect import BINARY_FORMATS, binary_size, topic_vars
from device_profiles.errors import EncodeError
from device_profiles.layout import CONSTANT, JsonLayout, Write
from device_profiles.paths import parse_path
from device_profiles.reading import Reading

if TYPE_CHECKING:
    from device_profiles.model import FieldSpec, Profile

_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_INT_BOUNDS: Final = {
    name: (-(1 << (8 * binary_size(name) - 1)), (1 << (8 * binary_size(name) - 1)) - 1)
    if name.startswith("int")
    else (0, (1 << (8 * binary_size(name))) - 1)
    for name in BINARY_FORMATS
    if name != "float32"
}
_BAD_SEGMENT: Final = re.compile(r"[/+#]")

#: Write kinds of a JSON message other than `CONSTANT` (the order values are produced in).
DEVICE: Final = "device"
TIMESTAMP: Final = "timestamp"
READING_ID: Final = "reading_id"
COUNTER: Final = "counter"
FIELD: Final = "field"
BODY: Final = "body"


def message_uuid(reading_id: str) -> str:
    """`reading_id` itself when it is a lowercase UUID string, else a UUID hashed from it."""
    if _UUID.match(reading_id):
        return reading_id
    return uuid8(hashlib.blake2b(reading_id.encode(), digest_size=16).digest())


class _Omit:
    def __repr__(self) -> str:
        return "<omit>"


_OMIT: Final = _Omit()

#: A compiled field: (the reading's metrics, its events) -> the vendor value, or `_OMIT`.
FieldEncoder = Callable[[dict[str, float], tuple[str, ...]], Any]


class CompiledEncoder:
    """One profile's encoder, compiled. `encode` raises `EncodeError` for what it cannot express."""

    def __init__(self, profile: Profile) -> None:
        self.profile = profile
        self.id = profile.id
        p = profile
        self._device_type = p.device_type
        self._metrics = frozenset(f.metric for f in p.fields if f.metric is not None)
        self._events = frozenset(e for f in p.fields for e in (f.events or {}).values() if e is not None)
        self._compile_topic(p.topics[0])
        case = p.device_id.case
        self._case: Callable[[str], str] | None = (
            str.lower if case == "lower" else str.upper if case == "upper" else None
        )
        self._person = profile_person(p.id)
        self._is_json = p.payload.format == "json"
        ts = p.timestamp
        self._ts_format = ts.format if ts is not None else None
        #: An optional device time is written as null for a reading whose time was estimated.
        self._ts_optional = ts is not None and not ts.required
        self._ts_key = (ts.at, ts.type or "uint32") if ts is not None and ts.at is not None else None
        self._need_epoch = ts is not None or bool(p.encode.counters)
        self._counters = len(p.encode.counters)
        self._has_rid = p.reading_id is not None
        binary = p.payload.binary
        self._order = {"big": ">", "little": "<"}[binary.byte_order] if binary is not None else ">"
        writes: list[Write] = []
        for rule in p.match:
            if rule.equals is not None:
                writes.append(Write(parse_path(rule.path), CONSTANT, rule.equals))
        self._device_path = p.device_id.path is not None
        if p.device_id.path is not None:
            writes.append(Write(parse_path(p.device_id.path), DEVICE))
        if ts is not None and ts.path is not None:
            writes.append(Write(parse_path(ts.path), TIMESTAMP))
        if p.reading_id is not None:
            writes.append(Write(parse_path(p.reading_id.path), READING_ID))
        for path in p.encode.counters:
            writes.append(Write(parse_path(path), COUNTER))
        #: Per field: its encoder, whether it has a JSON path, and a binary one's slot, mask shift,
        #: mask and name for errors.
        self._fields: list[tuple[FieldEncoder, bool, tuple[int, str] | None, int, int | None, str]] = []
        for f in p.fields:
            key = (f.at, f.type) if f.path is None and f.at is not None and f.type is not None else None
            shift = (f.mask & -f.mask).bit_length() - 1 if f.mask is not None else 0
            label = f.metric or str(f.at)
            encode_field = _compile_field(f, self._fail)
            self._fields.append((encode_field, f.path is not None, key, shift, f.mask, label))
            if f.path is not None:
                writes.append(Write(parse_path(f.path), FIELD))
        self._embedded = binary is not None and p.payload.format == "json"
        if binary is not None and binary.path is not None and self._embedded:
            writes.append(Write(parse_path(binary.path), BODY))
        self._b64 = binary is not None and binary.encoding == "base64"
        self._json = (
            JsonLayout(template=p.encode.template, writes=writes, encoder=msgspec.json.Encoder())
            if self._is_json
            else None
        )
        self._length = binary.length if binary is not None else 0
        self._compile_body()

    def _fail(self, field: str, detail: str) -> EncodeError:
        return EncodeError(self.id, field, detail)

    # -- compiling ------------------------------------------------------------------------------

    def _compile_topic(self, pattern: str) -> None:
        """The topic as text around the device id, and any error that does not depend on it."""
        names = topic_vars(pattern)
        static = dict(self.profile.encode.topic_vars)
        var = self.profile.device_id.topic
        self._pattern = pattern
        self._topic_names = names
        self._topic_error: EncodeError | None = None
        self._topic_error_at = len(names)  # index of the first static variable that cannot be used
        self._device_var_at = names.index(var) if var is not None and var in names else -1
        missing = [n for n in names if n not in static and n != var]
        if missing:
            self._topic_error = self._fail(
                "topic", f"no value for {{{missing[0]}}} (add it to encode.topic_vars)"
            )
            self._topic_error_at = -1
        else:
            for i, n in enumerate(names):
                if n != var and (not static[n] or _BAD_SEGMENT.search(static[n])):
                    self._topic_error = self._fail("topic", f"{n}={static[n]!r} cannot be a topic segment")
                    self._topic_error_at = i
                    break
        self._topic_static = static
        # Substituted in order, a value holding "{name}" of a later variable would be replaced
        # again; such profiles take the general path.
        self._topic_plain = not any("{" in static.get(n, "") for n in names if n != var)
        text = pattern
        for n in names:
            if n != var and n in static:
                text = text.replace("{" + n + "}", static[n])
        if var is not None and self._device_var_at >= 0:
            head, _, tail = text.partition("{" + var + "}")
            self._topic_head, self._topic_tail = head, tail
        else:
            self._topic_head, self._topic_tail = text, ""

    def _compile_body(self) -> None:
        """The binary body's struct when its slots are disjoint, in order of first write."""
        binary = self.profile.payload.binary
        self._slot_order: list[tuple[int, str]] = []
        self._whole: struct.Struct | None = None
        if binary is None:
            return
        keys: list[tuple[int, str]] = []
        if self._ts_key is not None:
            keys.append(self._ts_key)
        for _, _, key, _, _, _ in self._fields:
            if key is not None and key not in keys:
                keys.append(key)
        self._slot_order = keys
        fmt, end = "", 0
        for at, type_name in sorted(keys):
            if at < end:
                return  # overlapping slots: pack one by one, in order of first write
            fmt += "x" * (at - end) + BINARY_FORMATS[type_name]
            end = at + binary_size(type_name)
        fmt += "x" * (binary.length - end)
        self._whole = struct.Struct(self._order + fmt)
        self._packed_order = sorted(keys)

    # -- encoding -------------------------------------------------------------------------------

    def _topic(self, device_id: str) -> str:
        at = self._topic_error_at
        if at < self._device_var_at or (at < len(self._topic_names) and self._device_var_at < 0):
            assert self._topic_error is not None  # noqa: S101 - set together
            raise self._topic_error
        if self._device_var_at >= 0:
            if not device_id or _BAD_SEGMENT.search(device_id):
                name = self._topic_names[self._device_var_at]
                raise self._fail("topic", f"{name}={device_id!r} cannot be a topic segment")
            if self._topic_error is not None:
                raise self._topic_error
            if self._topic_plain and "{" not in device_id:
                return self._topic_head + device_id + self._topic_tail
            values = dict(self._topic_static)
            values[self._topic_names[self._device_var_at]] = device_id
            topic = self._pattern
            for name in self._topic_names:
                topic = topic.replace("{" + name + "}", values[name])
            return topic
        return self._topic_head

    def encode(self, reading: Reading) -> tuple[str, bytes]:
        topic, payload, _ = self.encode_message(reading)
        return topic, payload

    def encode_message(self, reading: Reading) -> tuple[str, bytes, str]:
        """``(topic, payload, reading_id)``: the id is the one decoding the payload will give."""
        if reading.device_type != self._device_type:
            raise self._fail(
                "device_type", f"reading is a {reading.device_type}, profile is for {self._device_type}"
            )
        metrics = reading.metrics
        if not self._metrics.issuperset(metrics):
            raise self._fail("metrics", f"the profile cannot express {sorted(set(metrics) - self._metrics)}")
        events = reading.events
        if events and not self._events.issuperset(events):
            raise self._fail("events", f"the profile cannot express {sorted(set(events) - self._events)}")
        device_id = reading.device_id
        topic = self._topic(device_id)
        values: list[Any] = []
        if self._device_path:
            values.append(device_id)
        slot_values: dict[tuple[int, str], int | float] = {}
        epoch = 0.0
        if self._need_epoch:
            ts = reading.ts.astimezone(UTC)
            epoch = ts.timestamp()
            fmt = self._ts_format
            if fmt is not None:
                value: Any
                if self._ts_optional and "estimated_ts" in reading.quality:
                    value = None
                elif fmt == "iso8601":
                    value = ts.isoformat()
                elif fmt == "epoch_ms":
                    value = round(epoch * 1000)
                else:
                    value = int(epoch) if epoch == int(epoch) else epoch
                if self._ts_key is not None:
                    slot_values[self._ts_key] = int(value)
                else:
                    values.append(value)
        rid = message_uuid(reading.reading_id) if self._has_rid else ""
        if self._has_rid:
            values.append(rid)
        if self._counters:
            counter = int(epoch) % 65536
            values.extend([counter] * self._counters)
        for encode_field, in_json, key, shift, mask, label in self._fields:
            raw = encode_field(metrics, events)
            if in_json:
                values.append(None if raw is _OMIT else raw)
            elif key is not None and raw is not _OMIT:
                if mask is not None:
                    if int(raw) << shift & ~mask:
                        raise self._fail(label, f"{raw} does not fit mask {mask:#x}")
                    raw = int(slot_values.get(key, 0)) | int(raw) << shift
                slot_values[key] = raw
        if self._length:
            body = self._pack(slot_values)
            if not self._is_json:
                payload = body if self.profile.payload.format == "binary" else body.hex().encode()
                return topic, payload, rid or self._derived(device_id, payload)
            if self._embedded:
                values.append(base64.b64encode(body).decode() if self._b64 else body.hex())
        assert self._json is not None  # noqa: S101 - a payload is JSON, hex or binary
        payload = self._json.render(values)
        return topic, payload, rid or self._derived(device_id, payload)

    def _derived(self, device_id: str, payload: bytes) -> str:
        """The id a decoder derives for a dialect without a message id (it reads the device id back
        through the profile's `case`)."""
        case = self._case
        return derived_reading_id(self._person, case(device_id) if case is not None else device_id, payload)

    def _pack(self, slot_values: dict[tuple[int, str], int | float]) -> bytes:
        for key, value in slot_values.items():
            bounds = _INT_BOUNDS.get(key[1])
            if bounds is not None and not bounds[0] <= value <= bounds[1]:
                raise self._fail(f"byte {key[0]}", f"{value} does not fit {key[1]}")
        whole = self._whole
        if whole is not None and len(slot_values) == len(self._packed_order):
            return whole.pack(*[slot_values[key] for key in self._packed_order])
        body = bytearray(self._length)
        for (at, type_name), value in slot_values.items():
            struct.pack_into(self._order + BINARY_FORMATS[type_name], body, at, value)
        return bytes(body)


def _compile_field(f: FieldSpec, fail: Callable[[str, str], EncodeError]) -> FieldEncoder:
    """A function giving the vendor value of field `f` for a reading, or `_OMIT`."""
    name = f.metric or f.path or f"byte {f.at}"
    required = f.required
    if f.events is not None:
        table = dict(f.events)
        loud = [(raw, event) for raw, event in table.items() if event is not None]
        quiet = [raw for raw, event in table.items() if event is None]

        def events_field(metrics: dict[str, float], events: tuple[str, ...]) -> Any:
            if events:
                found = [raw for raw, event in loud if event in events]
                if found:
                    if len({table[raw] for raw in found}) > 1:
                        names = sorted({str(table[raw]) for raw in found})
                        raise fail(name, f"one message can carry only one of {names}")
                    return found[0]
            if quiet:
                return quiet[0]
            if required:
                raise fail(name, "the reading has none of this field's events and there is no quiet value")
            return _OMIT

        return events_field
    metric = f.metric
    assert metric is not None  # noqa: S101 - FieldSpec guarantees metric or events
    absent = f.absent_if[0] if f.absent_if else _OMIT
    needed = f.required or f.at is not None
    table_map = f.map
    reverse: dict[Any, Any] | None = None
    if table_map is not None and all(v == v for v in table_map.values()):
        reverse = {}
        for raw, mapped in table_map.items():
            reverse.setdefault(mapped, raw)
    identity = f.scale == 1 and f.offset == 0
    scale, offset = f.scale, f.offset
    ftype = f.type or "number"
    whole = ftype in _INT_BOUNDS or ftype == "integer"
    as_float = ftype == "float32"

    def metric_field(metrics: dict[str, float], events: tuple[str, ...]) -> Any:
        value = metrics.get(metric)
        if value is None:
            if absent is not _OMIT:
                return absent
            if needed:
                raise fail(name, "required by the profile but not in the reading")
            return _OMIT
        if table_map is not None:
            if reverse is not None:
                try:
                    return reverse[value]
                except KeyError:
                    pass
            else:
                for raw, mapped in table_map.items():
                    if mapped == value:
                        return raw
            raise fail(name, f"{value} is not a value of the profile's map")
        number = value if identity else (value - offset) / scale
        if as_float:
            return number
        if whole:
            return round(number)
        return int(number) if float(number).is_integer() and abs(number) < 2**53 else round(number, 9)

    return metric_field

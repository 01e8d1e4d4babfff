"""Compiling a `Profile` into a decoder: closures and precomputed tables, built once per profile.

The hot path does no dictionary lookups on the profile, no regex work except a device-id pattern
the profile asks for, and a single `struct.Struct.unpack_from` for a binary body. Every failure
raises `Rejected`, which the engine turns into a `DecodeError`; nothing here is partial: a
`Reading` is built only after every field has been read.
"""

from __future__ import annotations

import binascii
import hashlib
import re
import struct
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from device_profiles.dialect import BINARY_FORMATS, binary_size
from device_profiles.errors import Rejected
from device_profiles.fields import MAX_INT, GetterFactory, check_number, out_of_range, plan_fields
from device_profiles.paths import compile_getter
from device_profiles.reading import Reading

if TYPE_CHECKING:
    from device_profiles.model import FieldSpec, Profile, TimestampSpec

MAX_ID_LEN: Final = 128
MAX_TS_TEXT: Final = 64
#: Device times outside [2000-01-01, 2100-01-01) are implausible: a clock that was never set.
TS_LOW: Final = 946684800.0
TS_HIGH: Final = 4102444800.0
TS_LOW_DT: Final = datetime.fromtimestamp(TS_LOW, UTC)
TS_HIGH_DT: Final = datetime.fromtimestamp(TS_HIGH, UTC)


class Slots:
    """The binary layout: distinct (offset, type, byte order) slots unpacked by one struct."""

    def __init__(self, profile: Profile) -> None:
        binary = profile.payload.binary
        assert binary is not None  # noqa: S101 - only built for binary profiles
        self.length = binary.length
        keys: list[tuple[int, str, str]] = []
        for f in profile.fields:
            if f.at is not None and f.type is not None:
                keys.append((f.at, f.type, f.byte_order or binary.byte_order))
        ts = profile.timestamp
        if ts is not None and ts.at is not None:
            keys.append((ts.at, ts.type or "uint32", binary.byte_order))
        self.keys = sorted(set(keys))
        self.index = {key: i for i, key in enumerate(self.keys)}
        # One struct for all slots when they neither overlap nor mix byte orders, else one each.
        orders = {order for _, _, order in self.keys}
        fmt = ""
        end = 0
        single = len(orders) == 1
        for at, type_name, _ in self.keys:
            if at < end:
                single = False
                break
            fmt += "x" * (at - end) + BINARY_FORMATS[type_name]
            end = at + binary_size(type_name)
        prefix = {"big": ">", "little": "<"}
        if single:
            self.whole: struct.Struct | None = struct.Struct(prefix[orders.pop()] + fmt)
            self.parts: list[tuple[int, struct.Struct]] = []
        else:
            self.whole = None
            self.parts = [
                (at, struct.Struct(prefix[order] + BINARY_FORMATS[t])) for at, t, order in self.keys
            ]

    def unpack_values(self, body: bytes) -> tuple[Any, ...]:
        """The slot values of a body of the right length (the caller checks the length)."""
        if self.whole is not None:
            return self.whole.unpack_from(body)
        return tuple(s.unpack_from(body, at)[0] for at, s in self.parts)


def _ts_from_epoch(raw: Any, divisor: float, where: str) -> datetime:
    if type(raw) is not int and type(raw) is not float:
        raise Rejected("bad_timestamp", f"{where}: expected an epoch number, got {type(raw).__name__}")
    seconds = raw / divisor if divisor != 1 else raw
    if not TS_LOW <= seconds < TS_HIGH:  # also false for NaN
        raise Rejected("bad_timestamp", f"{where}: {raw!r} is not a plausible device time")
    return datetime.fromtimestamp(seconds, UTC)


def _ts_from_iso(raw: Any, where: str) -> datetime:
    if type(raw) is not str or len(raw) > MAX_TS_TEXT:
        raise Rejected("bad_timestamp", f"{where}: expected an ISO 8601 string")
    try:
        ts = datetime.fromisoformat(raw)
    except ValueError:
        raise Rejected("bad_timestamp", f"{where}: {raw!r} is not ISO 8601") from None
    if ts.tzinfo is None:
        raise Rejected("bad_timestamp", f"{where}: {raw!r} has no UTC offset")
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    if not TS_LOW_DT <= ts < TS_HIGH_DT:
        raise Rejected("bad_timestamp", f"{where}: {raw!r} is not a plausible device time")
    return ts


#: The device time of a message; None when an optional timestamp is absent.
TimestampReader = Callable[[Any, tuple[Any, ...]], datetime | None]


def compile_timestamp(
    spec: TimestampSpec, slots: Slots | None, byte_order: str, getter: GetterFactory
) -> TimestampReader:
    divisor = 1000 if spec.format == "epoch_ms" else 1
    required = spec.required
    if spec.path is not None:
        get = getter(spec.path)
        where = f"timestamp ({spec.path})"
        if spec.format == "iso8601":

            def iso_from_json(doc: Any, vals: tuple[Any, ...]) -> datetime | None:
                raw = get(doc)
                if type(raw) is str and len(raw) <= MAX_TS_TEXT:
                    try:
                        ts = datetime.fromisoformat(raw)
                    except ValueError:
                        raise Rejected("bad_timestamp", f"{where}: {raw!r} is not ISO 8601") from None
                    if ts.tzinfo is UTC and TS_LOW_DT <= ts < TS_HIGH_DT:
                        return ts
                if raw is None:
                    if not required:
                        return None
                    raise Rejected("bad_timestamp", f"{where}: absent or null")
                return _ts_from_iso(raw, where)

            return iso_from_json

        def epoch_from_json(doc: Any, vals: tuple[Any, ...]) -> datetime | None:
            raw = get(doc)
            t = type(raw)
            if t is not int and t is not float:
                if raw is None:
                    if not required:
                        return None
                    raise Rejected("bad_timestamp", f"{where}: absent or null")
                raise Rejected("bad_timestamp", f"{where}: expected an epoch number, got {t.__name__}")
            seconds = raw / divisor if divisor != 1 else raw
            if not TS_LOW <= seconds < TS_HIGH:  # also false for NaN
                raise Rejected("bad_timestamp", f"{where}: {raw!r} is not a plausible device time")
            return datetime.fromtimestamp(seconds, UTC)

        return epoch_from_json
    assert slots is not None  # noqa: S101 - checked by the model
    assert spec.at is not None  # noqa: S101 - checked by the model
    index = slots.index[(spec.at, spec.type or "uint32", byte_order)]
    where = f"timestamp (byte {spec.at})"

    def from_slot(doc: Any, vals: tuple[Any, ...]) -> datetime | None:
        return _ts_from_epoch(vals[index], divisor, where)

    return from_slot


_VARIANT: Final = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def profile_person(profile_id: str) -> bytes:
    """The 16-byte BLAKE2b personalisation that keeps each profile's derived ids apart."""
    return hashlib.blake2b(profile_id.encode(), digest_size=16).digest()


def derived_reading_id(person: bytes, device_id: str, payload: bytes) -> str:
    """32 hex digits: BLAKE2b-128 of device id and raw payload, personalised by the profile.

    The device time, when the payload has one, is part of the payload, so two messages of one
    device differ in id whenever their time or content differs; the same message decoded twice
    gets the same id. `person` is `profile_person(profile_id)`. PostgreSQL reads the digits as a
    uuid.
    """
    return hashlib.blake2b(device_id.encode() + b"\0" + payload, digest_size=16, person=person).hexdigest()


def uuid8(digest: bytes) -> str:
    """Format 16 bytes as an RFC 9562 version-8 (custom) UUID string."""
    x = digest.hex()
    return f"{x[:8]}-{x[8:12]}-8{x[13:16]}-{_VARIANT[x[16]]}{x[17:20]}-{x[20:]}"


class CompiledDecoder:
    """One profile, compiled. `decode` raises `Rejected`; the engine catches it."""

    def __init__(self, profile: Profile, getter: GetterFactory = compile_getter) -> None:
        """`getter` compiles a JSON path for the parsed documents this decoder will see."""
        self._getter = getter
        self.profile = profile
        self.id = profile.id
        self.device_type = profile.device_type
        self.is_json = profile.payload.format == "json"
        self.max_payload_bytes = profile.max_payload_bytes
        binary = profile.payload.binary
        self.slots = Slots(profile) if binary is not None else None
        self._body = self._compile_body()
        self._json, self._binary_numbers, self._fields = plan_fields(
            profile.fields, self._slot_of, self._getter
        )
        self._length = binary.length if binary is not None else 0
        self._unpack = self.slots.unpack_values if self.slots is not None else None
        order = binary.byte_order if binary is not None else "big"
        self._ts = (
            compile_timestamp(profile.timestamp, self.slots, order, self._getter)
            if profile.timestamp
            else None
        )
        self._rid = self._getter(profile.reading_id.path) if profile.reading_id else None
        self.device_id = self._compile_device_id()
        self._person = profile_person(profile.id)

    def _slot_of(self, f: FieldSpec) -> int | None:
        binary = self.profile.payload.binary
        if f.at is None or self.slots is None or binary is None:
            return None
        return self.slots.index[(f.at, f.type or "", f.byte_order or binary.byte_order)]

    def _compile_body(self) -> Callable[[Any, bytes], bytes] | None:
        binary = self.profile.payload.binary
        fmt = self.profile.payload.format
        if binary is None:
            return None
        if fmt == "binary":
            return lambda doc, payload: payload
        if fmt == "hex":

            def from_hex(doc: Any, payload: bytes) -> bytes:
                try:
                    return bytes.fromhex(payload.decode("ascii"))
                except ValueError:  # UnicodeDecodeError is a ValueError too
                    raise Rejected("bad_encoding", "payload is not hex") from None

            return from_hex
        assert binary.path is not None  # noqa: S101 - checked by the model
        get = self._getter(binary.path)
        where = binary.path
        b64 = binary.encoding == "base64"
        max_text = binary.length * 2 + 8

        def embedded(doc: Any, payload: bytes) -> bytes:
            text = get(doc)
            if text is None:
                raise Rejected("missing_field", f"{where}: absent or null")
            if type(text) is not str:
                raise Rejected("bad_type", f"{where}: expected a string, got {type(text).__name__}")
            if len(text) > max_text:
                raise Rejected("bad_length", f"{where}: {len(text)} characters, too long")
            try:
                return binascii.a2b_base64(text, strict_mode=True) if b64 else bytes.fromhex(text)
            except (binascii.Error, ValueError):
                raise Rejected("bad_encoding", f"{where}: not valid {binary.encoding}") from None

        return embedded

    def _compile_device_id(self) -> Callable[[Any, dict[str, str]], str]:
        spec = self.profile.device_id
        get = self._getter(spec.path) if spec.path is not None else None
        var = spec.topic or ""
        check_topic = get is not None and spec.topic is not None
        case = str.lower if spec.case == "lower" else str.upper if spec.case == "upper" else None
        fullmatch = re.compile(spec.pattern).fullmatch if spec.pattern is not None else None
        where = spec.path or f"topic {{{var}}}"

        # Validated on every message: a memo of valid ids saved about 0.7 us per message but held
        # a string or two per device (1.4 MB for a gateway's 10,000 devices, more under a flood of
        # made-up ids).
        def device_id(doc: Any, topic_vars: dict[str, str]) -> str:
            if get is not None:
                raw = get(doc)
                if type(raw) is not str:
                    if type(raw) is int and raw >= 0:
                        raw = str(raw)
                    elif raw is None:
                        raise Rejected("bad_device_id", f"device id ({where}): absent or null")
                    else:
                        raise Rejected("bad_device_id", f"device id ({where}): expected a string")
            else:
                raw = topic_vars[var]
            value = case(raw) if case is not None else raw
            if not value or len(value) > MAX_ID_LEN:
                raise Rejected("bad_device_id", f"device id ({where}): empty or longer than {MAX_ID_LEN}")
            if fullmatch is not None and fullmatch(value) is None:
                raise Rejected(
                    "bad_device_id", f"device id {value[:40]!r} ({where}) does not fit {spec.pattern!r}"
                )
            if check_topic:
                in_topic = topic_vars[var]
                if in_topic != value and (case is None or case(in_topic) != value):
                    raise Rejected("device_mismatch", f"payload names device {value!r}, topic {in_topic!r}")
            return value

        return device_id

    def decode(
        self,
        doc: Any,
        topic_vars: dict[str, str],
        payload: bytes,
        received_at: datetime,
        *,
        device_id: str | None = None,
    ) -> Reading:
        """Decode a payload already parsed (`doc`: the projected JSON document, None for hex/binary).

        `device_id`: the id already read and validated by this decoder's rule (profile selection
        by the inventory reads it first), else it is read here.
        """
        if device_id is None:
            device_id = self.device_id(doc, topic_vars)
        vals: tuple[Any, ...] = ()
        if self._unpack is not None and self._body is not None:
            body = self._body(doc, payload)
            if len(body) != self._length:
                raise Rejected("bad_length", f"binary payload is {len(body)} bytes, expected {self._length}")
            vals = self._unpack(body)
        metrics: dict[str, float] = {}
        events: list[str] = []
        flags: list[str] = []
        for get, metric, required, ranged, lo, hi, flag, label, integer, absent, table, s, o, d in self._json:
            raw = get(doc)
            t = type(raw)
            if t is int:
                if raw > MAX_INT or raw < -MAX_INT:
                    check_number(raw, label, integer)
            elif t is float and not integer:
                if raw - raw != 0:
                    raise Rejected("not_finite", f"{label}: {raw!r} is not a finite number")
            elif raw is None:
                if required:
                    raise Rejected("missing_field", f"{label}: absent or null")
                continue
            else:
                check_number(raw, label, integer)
            if absent and raw in absent:
                continue
            if table is not None:
                value = table.get(raw)
                if value is None:
                    raise Rejected("unknown_value", f"{label}: {raw!r} is not in the profile's map")
                metrics[metric] = value
                continue
            if d:
                raw = (raw * s + o) / d
            if ranged and (raw < lo or raw > hi):
                out_of_range(label, raw, lo, hi, flag, flags)
            metrics[metric] = float(raw)
        for index, bits, shift, s, o, d, ranged, lo, hi, flag, metric, label in self._binary_numbers:
            raw = vals[index]
            if bits:
                raw = (raw & bits) >> shift
            if d:
                raw = (raw * s + o) / d
            if ranged and (raw < lo or raw > hi):
                out_of_range(label, raw, lo, hi, flag, flags)
            metrics[metric] = float(raw)
        for field in self._fields:
            field(doc, vals, metrics, events, flags)
        ts = self._ts(doc, vals) if self._ts is not None else None
        if ts is None:
            ts = received_at
            flags.append("estimated_ts")
        if self._rid is not None:
            rid = self._rid(doc)
            if type(rid) is not str or not 0 < len(rid) <= MAX_ID_LEN:
                reason = "missing_field" if rid is None else "bad_type"
                raise Rejected(reason, "reading id: expected a non-empty string of at most 128 characters")
        else:
            rid = derived_reading_id(self._person, device_id, payload)
        return Reading(
            device_id=device_id,
            device_type=self.device_type,
            ts=ts,
            received_at=received_at,
            metrics=metrics,
            events=(tuple(sorted(set(events))) if len(events) > 1 else (events[0],)) if events else (),
            quality=(tuple(sorted(set(flags))) if len(flags) > 1 else (flags[0],)) if flags else (),
            profile=self.id,
            reading_id=rid,
        )

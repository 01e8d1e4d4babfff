"""Random valid readings for a profile: for the benchmark, the property tests and the simulators.

`sample_reading` draws each field's *vendor* value from what the profile can express (the binary
type's bounds, the mask's width, the valid range, the enum and event maps) and converts it the way
the decoder does, so ``decode(*encode(r))`` gives `r` back (up to `reading_id` for profiles whose
dialect has no message id, and `ts` for those without device time: see docs/data-standard.md).
"""

from __future__ import annotations

import math
import random
import re
import struct
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from device_profiles.dialect import BINARY_FORMATS, binary_size
from device_profiles.fields import decimals_of
from device_profiles.model import FieldSpec, Profile
from device_profiles.reading import Reading
from device_profiles.standard import METRICS

_ID_SHAPES: tuple[Callable[[random.Random], str], ...] = (
    lambda rng: f"{rng.getrandbits(64):016x}",
    lambda rng: "86" + "".join(str(rng.randrange(10)) for _ in range(13)),
    lambda rng: f"dev-{rng.randrange(10**6):06d}",
)


def sample_device_id(profile: Profile, rng: random.Random) -> str:
    """A device id of a shape the profile accepts (16 hex digits, an IMEI, or ``dev-NNNNNN``)."""
    spec = profile.device_id
    for shape in _ID_SHAPES:
        value = shape(rng)
        value = value.lower() if spec.case == "lower" else value.upper() if spec.case == "upper" else value
        if spec.pattern is None or re.fullmatch(spec.pattern, value):
            return value
    if spec.pattern is not None:
        made = _from_simple_pattern(spec.pattern, rng)
        if made is not None and re.fullmatch(spec.pattern, made):
            return made
    raise ValueError(f"{profile.id}: cannot make up a device id matching {spec.pattern!r}")


_PATTERN_TOKEN = re.compile(r"(\[[^\]]+\]|\\d|[A-Za-z0-9_\-.:])(?:\{(\d+)\})?")


def _from_simple_pattern(pattern: str, rng: random.Random) -> str | None:
    """A string matching a simple pattern (literals, ``[0-9A-F]`` classes, ``\\d``, ``{n}``), or None."""
    out: list[str] = []
    pos = 0
    while pos < len(pattern):
        match = _PATTERN_TOKEN.match(pattern, pos)
        if match is None:
            return None
        atom, count = match.group(1), int(match.group(2) or 1)
        if atom == "\\d":
            chars = "0123456789"
        elif atom.startswith("["):
            body = atom[1:-1]
            chars = "".join(
                "".join(chr(c) for c in range(ord(a), ord(b) + 1)) if b else a
                for a, b in re.findall(r"(.)(?:-(.))?", body)
            )
        else:
            chars = atom
        out.extend(rng.choice(chars) for _ in range(count))
        pos = match.end()
    return "".join(out)


def _bounds(f: FieldSpec, profile: Profile) -> tuple[float, float]:
    if f.range is not None:
        return f.range
    table = METRICS.get(profile.device_type)
    definition = table.get(f.metric or "") if table is not None else None
    if definition is not None:
        return definition.low, definition.high
    return -1000.0, 1000.0


def _raw_int_domain(f: FieldSpec, lo: float, hi: float) -> tuple[int, int]:
    """Integer vendor values whose canonical value lies in [lo, hi]."""
    if f.type is not None and f.type in BINARY_FORMATS and f.type != "float32":
        bits = 8 * binary_size(f.type)
        tmin, tmax = (
            (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if f.type.startswith("int") else (0, (1 << bits) - 1)
        )
    else:
        tmin, tmax = -(1 << 31), (1 << 31) - 1
    if f.mask is not None:
        tmin, tmax = 0, f.mask >> ((f.mask & -f.mask).bit_length() - 1)
    a, b = (lo - f.offset) / f.scale, (hi - f.offset) / f.scale
    a, b = min(a, b), max(a, b)
    return max(tmin, math.ceil(a - 1e-9)), min(tmax, math.floor(b + 1e-9))


def _metric_value(f: FieldSpec, profile: Profile, rng: random.Random) -> float | None:
    if f.map is not None:
        keys = [k for k in f.map if k not in f.absent_if]
        return f.map[rng.choice(keys)]
    lo, hi = _bounds(f, profile)
    absent = set(f.absent_if)
    digits = f.decimals if f.decimals is not None else decimals_of(f.scale, f.offset)
    if f.type == "float32":
        a, b = sorted(((lo - f.offset) / f.scale, (hi - f.offset) / f.scale))
        raw: float = struct.unpack("f", struct.pack("f", rng.uniform(a, b)))[0]
    elif f.type == "number" or (f.type is None and f.at is None and f.reduce is None):
        raw = round(rng.uniform(lo, hi), rng.choice((0, 1, 2)))
        raw = min(max(raw, lo), hi)
    else:
        a, b = _raw_int_domain(f, lo, hi)
        if a > b:
            raise ValueError(f"{profile.id}: field {f.metric} has no valid raw value")
        raw = rng.randint(a, b)
        while raw in absent:
            raw = rng.randint(a, b)
    value = raw if f.scale == 1 and f.offset == 0 else raw * f.scale + f.offset
    if digits is not None:
        value = round(value, digits)
    return float(value)


def sample_reading(
    profile: Profile, rng: random.Random, *, received_at: datetime | None = None, device_id: str | None = None
) -> Reading:
    """One random reading that `profile` can encode and decodes back to (see the module docstring)."""
    received = received_at or datetime(2025, 11, 22, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**7))
    metrics: dict[str, float] = {}
    events: list[str] = []
    selecting = {rule.path for rule in profile.match if rule.present}
    for f in profile.fields:
        if not f.required and f.path not in selecting and rng.random() < 0.2:
            continue
        if f.events is not None:
            keys = [k for k in f.events if k not in f.absent_if]
            event = f.events[rng.choice(keys)]
            if event is not None:
                events.append(event)
        elif f.metric is not None:
            value = _metric_value(f, profile, rng)
            if value is not None:
                metrics[f.metric] = value
    quality: tuple[str, ...] = ()
    ts = received
    if profile.timestamp is None or (not profile.timestamp.required and rng.random() < 0.3):
        quality = ("estimated_ts",)
    else:
        fmt = profile.timestamp.format
        offset_us = rng.randrange(-3_600_000_000, 0)
        ts = received + timedelta(microseconds=offset_us)
        if fmt == "epoch_s":
            ts = ts.replace(microsecond=0)
        elif fmt == "epoch_ms":
            ts = ts.replace(microsecond=ts.microsecond // 1000 * 1000)
    return Reading(
        device_id=device_id or sample_device_id(profile, rng),
        device_type=profile.device_type,
        ts=ts,
        received_at=received,
        metrics=metrics,
        events=tuple(sorted(set(events))),
        quality=quality,
        profile=profile.id,
        reading_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
    )


def sample_payloads(
    profile: Profile, encode: Callable[[Reading], tuple[str, bytes]], rng: random.Random, count: int
) -> list[tuple[str, bytes]]:
    """`count` encoded sample messages ``(topic, payload)`` for a profile (`encode`: `ProfileSet.encode`)."""
    return [encode(sample_reading(profile, rng)) for _ in range(count)]

"""What one profile's dialect can carry, and how to make a reading it carries exactly.

Behaviour models produce physical values for every canonical metric of their device type. A dialect
carries a subset, at its own resolution (ChirpStack's tilt in 0.1 deg, NB-IoT's signal as CSQ
steps of 2 dBm, Zigbee2MQTT without device time). `ProfileShape` keeps the metrics and events the
profile carries and snaps each value to what the decoder will read back, so that
``decode(*encode(reading)) == reading`` holds for every message the simulators emit.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Final

from device_profiles import METRICS, Profile
from device_profiles.dialect import BINARY_FORMATS, binary_size
from device_profiles.model import FieldSpec

#: Decimal places a simulated metric keeps when the dialect sends plain JSON numbers.
METRIC_DECIMALS: Final = {
    "tilt_deg": 1,
    "water_level_mm": 0,
    "h2s_ppm": 2,
    "ch4_pct_lel": 1,
    "battery_pct": 0,
    "voltage_v": 1,
    "current_a": 3,
    "power_w": 1,
    "energy_kwh": 3,
    "dim_pct": 0,
    "rssi_dbm": 0,
    "link_quality": 0,
    "open_count": 0,
}

Quantiser = Callable[[float], float]


def _decimals_of(scale: float, offset: float) -> int | None:
    """The decoder's rounding of ``raw * scale + offset`` (device_profiles.decoders.decimals_of)."""
    if scale == 1 and offset == 0:
        return None
    digits = 0
    for number in (scale, offset):
        text = repr(float(number))
        if "e" in text:
            return 9
        digits = max(digits, len(text.split(".")[1].rstrip("0")))
    return digits


def _raw_bounds(f: FieldSpec) -> tuple[float, float]:
    """Bounds of the vendor (raw) value from the binary type and mask."""
    t = f.type
    if f.mask is not None:
        return 0, f.mask >> ((f.mask & -f.mask).bit_length() - 1)
    if t is not None and t in BINARY_FORMATS and t != "float32":
        bits = 8 * binary_size(t)
        if t.startswith("int"):
            return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        return 0, (1 << bits) - 1
    return -(2.0**53), 2.0**53


def quantiser(f: FieldSpec, device_type: str) -> Quantiser:
    """A function snapping a physical value to what field `f` encodes and decodes back exactly."""
    metric = f.metric or ""
    table = METRICS.get(device_type)
    definition = table.get(metric) if table is not None else None
    lo, hi = (
        f.range
        if f.range is not None
        else ((definition.low, definition.high) if definition is not None else (-(2.0**53), 2.0**53))
    )
    if f.map is not None:
        values = sorted({v for k, v in f.map.items() if k not in f.absent_if})

        def snap(value: float) -> float:
            return float(min(values, key=lambda v: abs(v - value)))

        return snap
    scale, offset = f.scale, f.offset
    integer_raw = f.at is not None or f.type == "integer"
    if not integer_raw and scale == 1 and offset == 0:
        places = METRIC_DECIMALS.get(metric, 2)

        def plain(value: float) -> float:
            if value < lo:
                value = lo
            elif value > hi:
                value = hi
            return float(round(value, places))

        return plain
    digits = _decimals_of(scale, offset)
    rlo, rhi = _raw_bounds(f)
    a, b = sorted(((lo - offset) / scale, (hi - offset) / scale))
    raw_lo, raw_hi = max(rlo, a), min(rhi, b)
    int_lo, int_hi = math.ceil(raw_lo - 1e-9), math.floor(raw_hi + 1e-9)
    absent = {k for k in f.absent_if if type(k) is int}
    places = METRIC_DECIMALS.get(metric, 6)

    if integer_raw:

        def integer(value: float) -> float:
            raw = round((value - offset) / scale)
            if raw < int_lo:
                raw = int_lo
            elif raw > int_hi:
                raw = int_hi
            if absent and raw in absent:
                raw = raw - 1 if raw - 1 >= int_lo else raw + 1
            # Exactly the decoder's arithmetic: raw * scale + offset, rounded to its digits.
            out = raw * scale + offset
            return float(out if digits is None else round(out, digits))

        return integer

    def scaled(value: float) -> float:
        raw = min(max(round((value - offset) / scale, places), raw_lo), raw_hi)
        out = raw * scale + offset
        return float(out if digits is None else round(out, digits))

    return scaled


class ProfileShape:
    """The metrics (with quantisers) and events one profile carries, and its time and id handling.

    Attributes:
        profile_id: the profile.
        metrics: metric name -> quantiser, for the metrics the profile carries.
        events: the events the profile can express.
        has_ts: whether the payload carries the device's time (else ts is the receive time).
        whole_seconds: whether that time has only second resolution.
        has_reading_id: whether the payload carries a message id.
        is_json: whether the payload is JSON (else hex or raw binary).
    """

    __slots__ = (
        "events",
        "has_lqi",
        "has_reading_id",
        "has_rssi",
        "has_ts",
        "is_json",
        "metrics",
        "profile_id",
        "whole_seconds",
    )

    def __init__(self, profile: Profile) -> None:
        self.profile_id = profile.id
        self.metrics: dict[str, Quantiser] = {
            f.metric: quantiser(f, profile.device_type) for f in profile.fields if f.metric is not None
        }
        self.events = frozenset(e for f in profile.fields for e in (f.events or {}).values() if e is not None)
        self.has_ts = profile.timestamp is not None
        self.whole_seconds = profile.timestamp is not None and profile.timestamp.format == "epoch_s"
        self.has_reading_id = profile.reading_id is not None
        self.is_json = profile.payload.format == "json"
        self.has_rssi = "rssi_dbm" in self.metrics
        self.has_lqi = "link_quality" in self.metrics

    def carry(self, metrics: dict[str, float]) -> dict[str, float]:
        """The metrics this profile carries, each snapped to its resolution."""
        out: dict[str, float] = {}
        for name, value in metrics.items():
            q = self.metrics.get(name)
            if q is not None:
                out[name] = q(value)
        return out

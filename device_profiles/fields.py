"""Compiling a profile's fields: one closure per field, the common shapes fused and specialised.

A compiled field takes (projected JSON document or None, unpacked binary values, metrics,
events, quality flags), writes what it found and raises `Rejected` on bad input. The common
shapes (a JSON number, a binary integer with a mask or an exact decimal scale) get short
closures of their own; the rest share a general one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from device_profiles.errors import Rejected
from device_profiles.paths import Getter

if TYPE_CHECKING:
    from device_profiles.model import FieldSpec

#: Integers beyond this magnitude are refused before any float arithmetic (2**53: exact in a float).
MAX_INT: Final = 1 << 53

#: A compiled field: (parsed JSON document or None, unpacked binary values or None, metrics,
#: events, quality flags) -> None; it writes what it found and raises `Rejected` on bad input.
FieldDecoder = Callable[[Any, tuple[Any, ...], dict[str, float], list[str], list[str]], None]
GetterFactory = Callable[[str], Getter]


def decimals_of(scale: float, offset: float) -> int | None:
    """Digits to round `raw * scale + offset` to, so 3 * 0.1 gives 0.3, not 0.30000000000000004."""
    if scale == 1 and offset == 0:
        return None
    digits = 0
    for number in (scale, offset):
        text = repr(float(number))
        if "e" in text:
            return 9
        frac = text.split(".")[1].rstrip("0")
        digits = max(digits, len(frac))
    return digits


def exact_scaling(scale: float, offset: float, digits: int | None) -> tuple[int, int, int] | None:
    """(S, O, D) with scale = S/D and offset = O/D exactly, so an integer raw value maps to
    (raw * S + O) / D: one correctly rounded division instead of a multiply and a `round`."""
    if digits is None:
        return None
    d = 10**digits
    s, o = round(scale * d), round(offset * d)
    return (s, o, d) if s / d == scale and o / d == offset else None


def out_of_range(label: str, value: float, lo: float, hi: float, flag: bool, flags: list[str]) -> None:
    if not flag:
        raise Rejected("out_of_range", f"{label}: {value} is outside [{lo}, {hi}]")
    flags.append("out_of_range")


def check_number(raw: Any, name: str, integer: bool) -> None:
    t = type(raw)
    if t is float and not integer:
        if raw - raw != 0:
            raise Rejected("not_finite", f"{name}: {raw!r} is not a finite number")
    elif t is int:
        if raw > MAX_INT or raw < -MAX_INT:
            raise Rejected("not_finite", f"{name}: {raw} is too large")
    else:
        kind = "an integer" if integer else "a number"
        raise Rejected("bad_type", f"{name}: expected {kind}, got {type(raw).__name__}")


def _json_metric(f: FieldSpec, label: str, json_type: str, get: Getter) -> FieldDecoder:
    """A JSON metric field, fused into one closure: find, check, map or scale, range, store."""
    metric = f.metric
    assert metric is not None  # noqa: S101 - caller checked
    required = f.required
    absent = frozenset(f.absent_if)
    lo, hi = f.range if f.range is not None else (-math.inf, math.inf)
    flag = f.out_of_range == "flag"
    scale, offset = f.scale, f.offset
    identity = scale == 1 and offset == 0
    digits = f.decimals if f.decimals is not None else decimals_of(scale, offset)
    exact = exact_scaling(scale, offset, digits)
    s_num, o_num, denom = exact or (1, 0, 1)
    integer = json_type == "integer"
    table: dict[Any, float] | None = dict(f.map) if f.map is not None else None
    expect = {"bool": bool, "string": str}.get(json_type, int)

    ranged = f.range is not None
    if table is None and not absent and identity and json_type == "number":

        def json_number(
            doc: Any, vals: tuple[Any, ...], metrics: dict[str, float], events: list[str], flags: list[str]
        ) -> None:
            raw = get(doc)
            t = type(raw)
            if t is float:
                if raw - raw != 0:
                    raise Rejected("not_finite", f"{label}: {raw!r} is not a finite number")
            elif t is not int or raw > MAX_INT or raw < -MAX_INT:
                if raw is None:
                    if required:
                        raise Rejected("missing_field", f"{label}: absent or null")
                    return
                check_number(raw, label, False)
            if ranged and (raw < lo or raw > hi):
                out_of_range(label, raw, lo, hi, flag, flags)
            metrics[metric] = float(raw)

        return json_number

    def json_metric(
        doc: Any, vals: tuple[Any, ...], metrics: dict[str, float], events: list[str], flags: list[str]
    ) -> None:
        raw = get(doc)
        if raw is None:
            if required:
                raise Rejected("missing_field", f"{label}: absent or null")
            return
        if table is not None:
            if type(raw) is not expect:
                raise Rejected("bad_type", f"{label}: expected {expect.__name__}, got {type(raw).__name__}")
            if absent and raw in absent:
                return
            try:
                metrics[metric] = table[raw]
            except KeyError:
                raise Rejected("unknown_value", f"{label}: {raw!r} is not in the profile's map") from None
            return
        t = type(raw)
        if t is float and not integer:
            if raw - raw != 0:
                raise Rejected("not_finite", f"{label}: {raw!r} is not a finite number")
        elif t is int:
            if raw > MAX_INT or raw < -MAX_INT:
                raise Rejected("not_finite", f"{label}: {raw} is too large")
        else:
            kind = "an integer" if integer else "a number"
            raise Rejected("bad_type", f"{label}: expected {kind}, got {t.__name__}")
        if absent and raw in absent:
            return
        if identity:
            pass
        elif exact is not None and t is int:
            raw = (raw * s_num + o_num) / denom if denom != 1 else raw * s_num + o_num
        else:
            raw = raw * scale + offset
            if digits is not None:
                raw = round(raw, digits)
        if raw < lo or raw > hi:
            if not flag:
                raise Rejected("out_of_range", f"{label}: {raw} is outside [{lo}, {hi}]")
            flags.append("out_of_range")
        metrics[metric] = float(raw)

    return json_metric


def _binary_metric(f: FieldSpec, label: str, index: int, mask: int | None) -> FieldDecoder:
    """A binary metric field, fused into one closure: take the slot, mask, scale, range, store."""
    metric = f.metric
    assert metric is not None  # noqa: S101 - caller checked
    absent = frozenset(f.absent_if)
    lo, hi = f.range if f.range is not None else (-math.inf, math.inf)
    flag = f.out_of_range == "flag"
    scale, offset = f.scale, f.offset
    identity = scale == 1 and offset == 0
    digits = f.decimals if f.decimals is not None else decimals_of(scale, offset)
    nan_possible = f.type == "float32"
    table: dict[Any, float] | None = dict(f.map) if f.map is not None else None
    exact = exact_scaling(scale, offset, digits)
    s_num, o_num, denom = exact or (1, 0, 1)
    bits = mask or 0
    shift = (bits & -bits).bit_length() - 1 if bits else 0
    ranged = f.range is not None
    if not nan_possible and table is None and not absent and (identity or exact is not None):
        # The usual shapes, each in its own short closure.
        if bits and identity:

            def bit_metric(
                doc: Any,
                vals: tuple[Any, ...],
                metrics: dict[str, float],
                events: list[str],
                flags: list[str],
            ) -> None:
                raw = (vals[index] & bits) >> shift
                if ranged and (raw < lo or raw > hi):
                    out_of_range(label, raw, lo, hi, flag, flags)
                metrics[metric] = float(raw)

            return bit_metric
        if not bits:

            def slot_metric(
                doc: Any,
                vals: tuple[Any, ...],
                metrics: dict[str, float],
                events: list[str],
                flags: list[str],
            ) -> None:
                raw = vals[index] if identity else (vals[index] * s_num + o_num) / denom
                if ranged and (raw < lo or raw > hi):
                    out_of_range(label, raw, lo, hi, flag, flags)
                metrics[metric] = float(raw)

            return slot_metric

    def binary_metric(
        doc: Any, vals: tuple[Any, ...], metrics: dict[str, float], events: list[str], flags: list[str]
    ) -> None:
        raw = vals[index]
        if bits:
            raw = (raw & bits) >> shift
        elif nan_possible and raw - raw != 0:
            raise Rejected("not_finite", f"{label}: {raw!r} is not a finite number")
        if absent and raw in absent:
            return
        if table is not None:
            value = table.get(raw)
            if value is None:
                raise Rejected("unknown_value", f"{label}: {raw!r} is not in the profile's map")
            metrics[metric] = value
            return
        if identity:
            pass
        elif exact is not None and not nan_possible:
            raw = (raw * s_num + o_num) / denom if denom != 1 else raw * s_num + o_num
        else:
            raw = raw * scale + offset
            if digits is not None:
                raw = round(raw, digits)
        if raw < lo or raw > hi:
            if not flag:
                raise Rejected("out_of_range", f"{label}: {raw} is outside [{lo}, {hi}]")
            flags.append("out_of_range")
        metrics[metric] = float(raw)

    return binary_metric


def _reduced(get: Getter, kind: str, label: str, integer: bool) -> Getter:
    """A getter for a ``[*]`` path: every element checked as a number, then max, min or first."""
    reduce: Callable[[list[Any]], Any] = max if kind == "max" else min if kind == "min" else (lambda v: v[0])

    def reduced(doc: Any) -> Any:
        found = get(doc)
        if not found:
            return None
        for item in found:
            t = type(item)
            if (t is not int or item > MAX_INT or item < -MAX_INT) and (
                t is not float or integer or item - item != 0
            ):
                check_number(item, label, integer)
        return reduce(found)

    return reduced


def _events_field(f: FieldSpec, label: str, get: Getter | None, index: int, mask: int | None) -> FieldDecoder:
    """A field whose value names an event: from a JSON path (`get`) or a binary slot."""
    table = dict(f.events or {})
    absent = frozenset(f.absent_if)
    required = f.required
    expect: type = {"bool": bool, "string": str}.get(f.type or "", int)
    bits = mask or 0
    shift = (bits & -bits).bit_length() - 1 if bits else 0

    def events_field(
        doc: Any, vals: tuple[Any, ...], metrics: dict[str, float], events: list[str], flags: list[str]
    ) -> None:
        if get is None:
            raw = vals[index]
            if bits:
                raw = (raw & bits) >> shift
        else:
            raw = get(doc)
            if raw is None:
                if required:
                    raise Rejected("missing_field", f"{label}: absent or null")
                return
            if type(raw) is not expect:
                raise Rejected("bad_type", f"{label}: expected {expect.__name__}, got {type(raw).__name__}")
        if absent and raw in absent:
            return
        try:
            event = table[raw]
        except KeyError:
            raise Rejected("unknown_value", f"{label}: {raw!r} is not in the profile's events") from None
        if event is not None:
            events.append(event)

    return events_field


def compile_field(f: FieldSpec, index: int | None, mask: int | None, getter: GetterFactory) -> FieldDecoder:
    """Compile one field. `index` is its position in the unpacked binary tuple (binary fields)."""
    name = f.metric or f.path or f"byte {f.at}"
    label = f"{name} ({f.path})" if f.metric and f.path else name
    get = getter(f.path) if f.path is not None else None
    if f.events is not None:
        return _events_field(f, label, get, index or 0, mask)
    if get is not None:
        json_type = f.type or "number"
        if f.reduce is not None:
            get = _reduced(get, f.reduce, label, json_type == "integer")
        return _json_metric(f, label, json_type, get)
    assert index is not None  # noqa: S101 - binary fields always have a slot
    return _binary_metric(f, label, index, mask)


#: A JSON number the decoder reads inline: (getter, metric, required, ranged, low, high, flag,
#: label, integer only, absent values, enum map or None, scale numerator, offset numerator,
#: denominator (0: identity)).
JsonNumber = tuple[
    Getter,
    str,
    bool,
    bool,
    float,
    float,
    bool,
    str,
    bool,
    frozenset[Any],
    "dict[Any, float] | None",
    int,
    int,
    int,
]
#: A binary integer the decoder reads inline:
#: (slot index, mask, shift, scale numerator, offset numerator, denominator (0: identity), ranged,
#: low, high, flag, metric, label). canonical = ((raw & mask) >> shift * S + O) / D.
BinaryNumber = tuple[int, int, int, int, int, int, bool, float, float, bool, str, str]


def plan_fields(
    fields: list[FieldSpec], slot_of: Callable[[FieldSpec], int | None], getter: GetterFactory
) -> tuple[tuple[JsonNumber, ...], tuple[BinaryNumber, ...], tuple[FieldDecoder, ...]]:
    """Split fields into the two common shapes, which the decoder reads in plain loops (no call per
    field), and closures for the rest. The results are the same either way; this is speed only."""
    json_numbers: list[JsonNumber] = []
    binary_numbers: list[BinaryNumber] = []
    closures: list[FieldDecoder] = []
    for f in fields:
        lo, hi = f.range if f.range is not None else (-math.inf, math.inf)
        ranged, flag = f.range is not None, f.out_of_range == "flag"
        plain = f.metric is not None and f.map is None and not f.absent_if
        digits = f.decimals if f.decimals is not None else decimals_of(f.scale, f.offset)
        exact = exact_scaling(f.scale, f.offset, digits)
        identity = f.scale == 1 and f.offset == 0
        index = slot_of(f)
        integer = f.type == "integer"
        inline_json = f.metric is not None and f.path is not None and f.reduce is None
        # number: as is; integer: as is, scaled exactly, or through an enum map.
        inline_json = inline_json and (
            (f.type in (None, "number") and identity and f.map is None and not f.absent_if)
            or (integer and (f.map is not None or identity or exact is not None))
        )
        if inline_json and f.metric is not None and f.path is not None:
            label = f"{f.metric} ({f.path})"
            table = dict(f.map) if f.map is not None else None
            s, o, d = exact if exact is not None and not identity and table is None else (1, 0, 0)
            json_numbers.append(
                (getter(f.path), f.metric, f.required, ranged, lo, hi, flag, label, integer,
                 frozenset(f.absent_if), table, s, o, d)
            )  # fmt: skip
        elif plain and f.metric and index is not None and f.type != "float32" and (identity or exact):
            s, o, d = exact if exact is not None and not identity else (1, 0, 0)
            bits = f.mask or 0
            shift = (bits & -bits).bit_length() - 1 if bits else 0
            binary_numbers.append((index, bits, shift, s, o, d, ranged, lo, hi, flag, f.metric, f.metric))
        else:
            closures.append(compile_field(f, index, f.mask, getter))
    return tuple(json_numbers), tuple(binary_numbers), tuple(closures)

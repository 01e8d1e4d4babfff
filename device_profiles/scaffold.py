"""A starter profile from one sample payload: ``linli profiles new --from-sample``.

An integrator has a sensor linli has never seen and one message it sent. `scaffold` writes a YAML
profile with every field of the sample: the device id from the topic's ``+`` level (or a payload
field named like an id), the device time from a field named like one (epoch seconds, milliseconds
or ISO 8601, by its value), and one metric per value, named by the standard where the field name
says what it is (``temp`` -> ``temperature_c``, ``hum`` -> ``humidity_pct``, ``bat`` ->
``battery_pct``, ...) and ``x_<name>`` otherwise. Whatever was guessed (a name, a unit, the device
type) is marked ``# REVIEW`` in the file; the result always passes `linli profiles check`, so the
integrator edits a working profile, never an invalid one. `fields_not_read` says which sample
fields a profile leaves out (``linli profiles test``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any, Final

import msgspec

from device_profiles.loader import profile_from_data
from device_profiles.model import Profile
from device_profiles.standard import METRICS

#: Field names (lowercase, without ``_``, ``-``, ``.``) -> canonical metric.
SYNONYMS: Final = {
    **dict.fromkeys(("temperature", "temp", "tmp", "tempc", "temperaturec", "airtemp"), "temperature_c"),
    **dict.fromkeys(("humidity", "hum", "humi", "rh", "relativehumidity", "humiditypct"), "humidity_pct"),
    **dict.fromkeys(("pm25", "pm2p5", "pm25ugm3", "pm25value"), "pm25_ugm3"),
    **dict.fromkeys(("co", "coppm", "carbonmonoxide"), "co_ppm"),
    **dict.fromkeys(("smoke", "smokealarm", "smokedetected", "smokestate"), "smoke"),
    **dict.fromkeys(("leak", "waterleak", "flood", "leakage", "water"), "water_leak"),
    **dict.fromkeys(
        ("battery", "bat", "batt", "batterylevel", "batterypct", "battpct", "soc"), "battery_pct"
    ),
    **dict.fromkeys(("rssi", "rssidbm", "signal", "signalstrength"), "rssi_dbm"),
    **dict.fromkeys(("linkquality", "lqi"), "link_quality"),
    **dict.fromkeys(("waterlevel", "level", "waterlevelmm"), "water_level_mm"),
    **dict.fromkeys(("tilt", "tiltdeg", "angle"), "tilt_deg"),
    **dict.fromkeys(("h2s", "h2sppm"), "h2s_ppm"),
    **dict.fromkeys(("ch4", "methane", "ch4lel"), "ch4_pct_lel"),
    **dict.fromkeys(("voltage", "volt", "voltagev"), "voltage_v"),
    **dict.fromkeys(("current", "currenta"), "current_a"),
    **dict.fromkeys(("power", "powerw"), "power_w"),
    **dict.fromkeys(("energy", "energykwh"), "energy_kwh"),
}
#: Field names that carry the device id or the device time.
ID_FIELDS: Final = ("deviceid", "devid", "id", "deveui", "imei", "sn", "serial", "mac", "uid")
TIME_FIELDS: Final = ("ts", "time", "timestamp", "t", "datetime", "lastseen", "at", "date")
#: Metrics -> the device type a sample with them most likely comes from (first match wins).
TYPE_HINTS: Final = (
    ("smoke", "smoke_detector"),
    ("water_leak", "water_leak_sensor"),
    ("cover_open", "manhole_cover"),
    ("water_level_mm", "manhole_cover"),
    ("lamp_on", "streetlight"),
    ("temperature_c", "environment_sensor"),
    ("humidity_pct", "environment_sensor"),
    ("pm25_ugm3", "environment_sensor"),
    ("co_ppm", "smoke_detector"),
)


class ScaffoldError(ValueError):
    """The sample or the topic cannot make a profile (not a JSON object, a ``#`` in the topic, ...)."""


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _snake(name: str) -> str:
    snake = re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name)
    snake = re.sub(r"[^a-z0-9]+", "_", snake.lower()).strip("_")
    return snake if snake and snake[0].isalpha() else f"f_{snake}"


def leaves(doc: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(path, value) of every scalar in a JSON document, in document order (list items by index)."""
    if isinstance(doc, dict):
        for key, value in doc.items():
            if re.fullmatch(r"[A-Za-z0-9_\-]+", str(key)):
                yield from leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(doc, list):
        for i, value in enumerate(doc[:8]):
            yield from leaves(value, f"{prefix}[{i}]")
    else:
        yield prefix, doc


def _topic(topic: str) -> tuple[str, bool]:
    """The profile's topic pattern (``+`` levels as ``{device_id}``, ``{var2}``, ...) and whether
    the device id comes from it."""
    if "#" in topic:
        raise ScaffoldError(f"topic {topic!r}: give the exact topic or one with + levels, not #")
    levels = topic.split("/")
    if any(not level for level in levels):
        raise ScaffoldError(f"topic {topic!r} has an empty level")
    out, n = [], 0
    for level in levels:
        if level == "+":
            n += 1
            out.append("{device_id}" if n == 1 else f"{{var{n}}}")
        else:
            out.append(level)
    return "/".join(out), n > 0


def _yaml_scalar(value: Any) -> str:
    return msgspec.json.encode(value).decode()


def scaffold(
    sample: bytes, *, topic: str, profile_id: str | None = None, device_type: str | None = None
) -> tuple[str, Profile]:
    """The starter profile's YAML text, and the profile it validates to."""
    try:
        doc = msgspec.json.decode(sample)
    except msgspec.DecodeError as exc:
        raise ScaffoldError(f"the sample is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ScaffoldError("the sample must be one JSON object (a binary payload needs a profile by hand)")
    pattern, id_in_topic = _topic(topic)
    review: list[str] = []
    id_path = time_path = None
    time_value: Any = None
    values: list[tuple[str, Any]] = []
    for path, value in leaves(doc):
        last = _key(path.rsplit(".", 1)[-1].split("[", 1)[0])
        if (
            id_path is None
            and last in ID_FIELDS
            and isinstance(value, str | int)
            and not isinstance(value, bool)
        ):
            id_path = path
        elif time_path is None and last in TIME_FIELDS and isinstance(value, str | int | float):
            time_path, time_value = path, value
        else:
            values.append((path, value))
    guessed = {SYNONYMS.get(_key(_name(path))) for path, _ in values} - {None}
    kind = device_type or next((t for m, t in TYPE_HINTS if m in guessed), None)
    allowed = METRICS.get(kind or "", None)
    used: set[str] = set()
    fields = [_field(path, value, used, allowed) for path, value in values]
    if not used:
        raise ScaffoldError("the sample has no number or true/false value to make a metric of")
    slug = _snake(topic.split("/")[0]).replace("_", "-")
    lines = [
        f"# Starter profile from a sample on {topic!r}: check every line marked REVIEW, then",
        "# `linli profiles check DIR` and `linli profiles test FILE --sample SAMPLE`.",
        f"id: {profile_id or f'custom/{slug}'}",
        "vendor: REVIEW vendor",
        "model: REVIEW model",
        f"device_type: {kind or 'sensor'}" + ("" if device_type else "   # REVIEW: guessed from the fields"),
        f"description: {_yaml_scalar(f'Sensor publishing JSON on {topic}')}",
        "# report_interval_s: 3600   # REVIEW: seconds between reports (offline after 3 silent intervals)",
        f"topics: [{_yaml_scalar(pattern)}]",
        "device_id:",
    ]
    if id_in_topic:
        lines.append("  topic: device_id")
        if id_path is not None:
            lines.append(
                f"  # path: {id_path}   # REVIEW: the payload names it too; with both, they must agree"
            )
    elif id_path is not None:
        lines.append(f"  path: {id_path}")
    else:
        raise ScaffoldError(
            f"no device id: the topic {topic!r} has no + level and the sample no field named like an id "
            f"({', '.join(ID_FIELDS)})"
        )
    lines += ["payload:", "  format: json"]
    if time_path is not None:
        if isinstance(time_value, str):
            fmt = "iso8601"
        else:
            fmt = "epoch_ms" if float(time_value) > 1e11 else "epoch_s"
        lines += [
            "timestamp:",
            f"  path: {time_path}",
            f"  format: {fmt}   # REVIEW: from the sample's value",
        ]
    else:
        review.append("no device time in the sample: readings are stamped when received (estimated_ts)")
    lines.append("fields:")
    for block in fields:
        lines += block
    lines += [f"# REVIEW: {note}" for note in review]
    text = "\n".join(lines) + "\n"
    import yaml

    profile = profile_from_data(yaml.safe_load(text))
    return text, profile


def _name(path: str) -> str:
    return path.rsplit(".", 1)[-1].replace("[", "_").replace("]", "")


def _field(path: str, value: Any, used: set[str], allowed: Any) -> list[str]:
    """The YAML lines of one sample value (a comment for what cannot be a metric); `allowed` is the
    device type's canonical metrics (None: any canonical name)."""
    name = _name(path)
    if isinstance(value, str) or value is None:
        shown = _yaml_scalar(value)[:40]
        return [f"  # REVIEW: {path} = {shown} is not a number: map its values (map: {{...}}) or drop it"]
    metric = SYNONYMS.get(_key(name))
    guessed = metric is not None and metric not in used and (allowed is None or metric in allowed)
    if not guessed:
        metric = f"x_{_snake(name)}"
        while metric in used:
            metric += "_2"
    assert metric is not None  # noqa: S101
    used.add(metric)
    lines = [f"  - metric: {metric}", f"    path: {path}"]
    if isinstance(value, bool):
        lines += ["    type: bool", "    map: {true: 1, false: 0}   # REVIEW: which value means 1"]
    else:
        lines.append(f"    type: {'integer' if isinstance(value, int) else 'number'}")
    definition = next((table[metric] for table in METRICS.values() if metric in table), None)
    if definition is not None and not isinstance(value, bool):
        lines += [f"    range: [{definition.low:g}, {definition.high:g}]", "    out_of_range: flag"]
        unit = definition.unit
        lines.append(
            f"    # REVIEW: {name} = {value} taken as {metric} in {unit}: scale/offset for another unit"
        )
    elif not guessed:
        shown = _yaml_scalar(value)
        lines.append(f"    # REVIEW: {name} = {shown}: a canonical name (docs/data-standard.md), or keep x_")
    lines.append("    required: false   # REVIEW: true for the values every message carries")
    return lines


def fields_not_read(profile: Profile, sample: Any) -> list[str]:
    """Paths of the sample's values that no field, id or timestamp of the profile reads."""
    read = {f.path for f in profile.fields if f.path is not None}
    read |= {p for p in (profile.device_id.path, profile.timestamp.path if profile.timestamp else None) if p}
    return [path for path, _ in leaves(sample) if path not in read]

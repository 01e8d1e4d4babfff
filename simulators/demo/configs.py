"""Edge and cloud configuration files for the processes the demo and the benchmark start.

The keys are those documented in docs/edge.md and deploy/cloud.example.toml; the values suit
simulated devices in accelerated time on one machine (see `accelerated_edge_overrides`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

#: Device clocks in accelerated time run ahead of the gateway's: never replace them (ten years).
ACCELERATED_SKEW_BOUND_S = 10 * 365 * 86400.0


def toml_text(values: Mapping[str, Any]) -> str:
    """A small TOML writer for tables of strings, numbers, booleans, lists and inline tables."""
    plain = {k: v for k, v in values.items() if not isinstance(v, Mapping)}
    tables = {k: v for k, v in values.items() if isinstance(v, Mapping)}
    lines = [f"{k} = {_value(v)}" for k, v in plain.items()]
    for name, table in tables.items():
        lines.append(f"\n[{name}]")
        lines.extend(f"{k} = {_value(v)}" for k, v in table.items())
    return "\n".join(lines) + "\n"


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return repr(v)
    if isinstance(v, str | Path):
        return json.dumps(str(v))
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k} = {_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(f"cannot write {type(v).__name__} as TOML")


def _merge(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def accelerated_edge_overrides() -> dict[str, Any]:
    """Edge settings for simulated devices running faster than the wall clock."""
    return {
        "normalise": {"max_clock_skew_s": ACCELERATED_SKEW_BOUND_S},
        "status": {"interval_s": 2.0},
    }


def write_edge_config(
    path: Path,
    *,
    gateway_id: str,
    community_id: str,
    inventory: Path,
    field_url: str,
    cloud_url: str,
    buffer: Path,
    http_address: str = "",
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    values: dict[str, Any] = {
        "gateway_id": gateway_id,
        "community_id": community_id,
        "inventory": str(inventory),
        "log_level": "info",
        "field": {"url": field_url},
        "cloud": {"url": cloud_url},
        "buffer": {"path": str(buffer)},
        "http": {"address": http_address},
    }
    values = _merge(values, accelerated_edge_overrides())
    if overrides:
        values = _merge(values, overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(values))
    return path


def write_cloud_config(
    path: Path,
    *,
    database_url: str,
    mqtt_url: str,
    client_id: str = "linli-ingest-1",
    http_address: str = "",
    overrides: Mapping[str, Any] | None = None,
) -> Path:
    values: dict[str, Any] = {
        "database_url": database_url,
        "log_level": "info",
        "mqtt": {"url": mqtt_url, "client_id": client_id},
        # Simulated time may start long ago: keep everything (retention is not what we show).
        "retention": {"readings_days": 36500, "events_days": 36500, "rollup_days": 36500},
        "http": {"address": http_address},
    }
    if overrides:
        values = _merge(values, overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(toml_text(values))
    return path

"""Scenarios: YAML files that inject conditions at simulated times and record them in the ground truth.

    name: manhole-lifted
    description: A cover is lifted and tilted 45 degrees at 02:13 local time.
    events:
      - type: manhole_lifted
        at: "02:13"        # local time of day (next one after the start), "+2h" after the start,
                           # or an ISO 8601 instant
        device: auto       # or a device id from the inventory
        tilt_deg: 45
        duration: 2h

Event types: ``resident_inactive``, ``manhole_lifted``, ``lamp_failure``, ``lamp_on_daytime``,
``sos_press``, ``gateway_storm``, ``devices_silent``, and the slow ones the detectors anticipate
(``lamp_degrading``, ``battery_draining``, ``radio_fading``) (fields below and in docs/simulators.md).
Shipped scenarios live in ``simulators/scenarios/``; `load_scenario` takes their name or a path.
"""

from __future__ import annotations

import re
from datetime import datetime
from importlib.resources import files
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from simulators.clock import MS_PER_DAY, MS_PER_HOUR, parse_duration, to_ms
from simulators.errors import ConfigError, ScenarioError

_LOCAL = re.compile(r"^(\d{1,2}):(\d{2})(?::(\d{2}))?$")


def _check_at(value: str) -> str:
    if value.startswith("+"):
        parse_duration(value[1:], option="at")
        return value
    match = _LOCAL.match(value)
    if match:
        if int(match.group(1)) > 23 or int(match.group(2)) > 59 or int(match.group(3) or 0) > 59:
            raise ValueError(f"{value!r} is not a time of day")
        return value
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(f"{value!r} is not HH:MM (local), +DURATION (after the start) or ISO 8601") from None
    if moment.tzinfo is None:
        raise ValueError(f"{value!r}: an ISO 8601 time needs a UTC offset")
    return value


def _check_duration(value: str) -> str:
    try:
        parse_duration(value)
    except ConfigError as exc:
        raise ValueError(exc.detail) from None
    return value


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    #: when: ``HH:MM`` local time (the first one at or after the start), ``+1h30m``, or ISO 8601.
    at: str = "+0s"
    #: add whole days to `at` (``day: 1`` with ``at: "02:13"``: the second night).
    day: int = Field(default=0, ge=0, le=3650)

    _at = field_validator("at")(_check_at)


class ResidentInactive(_Event):
    """A resident living alone opens the door not at all for `hours`."""

    type: Literal["resident_inactive"]
    device: str = "auto"
    hours: float = Field(default=30.0, gt=0, le=24 * 30)


class ManholeLifted(_Event):
    """A cover is lifted (open) and tilted for `duration`."""

    type: Literal["manhole_lifted"]
    device: str = "auto"
    tilt_deg: float = Field(default=45.0, ge=-180, le=180)
    duration: str = "2h"

    _duration = field_validator("duration")(_check_duration)


class LampFailure(_Event):
    """A lamp stays switched on but draws no power for `duration` (at night, so it should be lit)."""

    type: Literal["lamp_failure"]
    device: str = "auto"
    duration: str = "4h"

    _duration = field_validator("duration")(_check_duration)


class LampOnDaytime(_Event):
    """A lamp is left on at full output in daylight for `duration`."""

    type: Literal["lamp_on_daytime"]
    device: str = "auto"
    duration: str = "3h"

    _duration = field_validator("duration")(_check_duration)


class SosPress(_Event):
    """An SOS press with no cancel."""

    type: Literal["sos_press"]
    device: str = "auto"


class GatewayStorm(_Event):
    """Every device of a gateway reports `factor` times as often for `duration`."""

    type: Literal["gateway_storm"]
    gateway: str = "auto"
    factor: float = Field(default=10.0, ge=2, le=1000)
    duration: str = "30m"

    _duration = field_validator("duration")(_check_duration)


class DevicesSilent(_Event):
    """Devices send nothing for `duration`, then come back."""

    type: Literal["devices_silent"]
    devices: list[str] | None = None
    count: int = Field(default=3, ge=1, le=100_000)
    device_type: str | None = None
    duration: str = "2h"

    _duration = field_validator("duration")(_check_duration)


class LampDegrading(_Event):
    """A lamp's power at full output falls linearly to `to_ratio` of its rating over `days`; then
    the lamp fails (switched on, no power) for `failed_for`."""

    type: Literal["lamp_degrading"]
    device: str = "auto"
    days: float = Field(default=21.0, gt=0, le=365)
    to_ratio: float = Field(default=0.4, gt=0, lt=1)
    failed_for: str = "2d"

    _failed_for = field_validator("failed_for")(_check_duration)


class BatteryDraining(_Event):
    """A battery starts at `from_pct` at `at` and runs flat linearly in `days` (a faulty cell, a
    device stuck retrying)."""

    type: Literal["battery_draining"]
    device: str = "auto"
    device_type: str = "door_contact"
    from_pct: float = Field(default=40.0, gt=0, le=100)
    days: float = Field(default=30.0, gt=0, le=3650)


class RadioFading(_Event):
    """A device's messages are lost more and more often over `ramp` (none lost at the start, all
    at the end), then it is silent for `silent_for`: radio trouble before silence."""

    type: Literal["radio_fading"]
    device: str = "auto"
    device_type: str = "door_contact"
    ramp: str = "3d"
    silent_for: str = "1d"

    _ramp = field_validator("ramp")(_check_duration)
    _silent_for = field_validator("silent_for")(_check_duration)


ScenarioEvent = Annotated[
    ResidentInactive
    | ManholeLifted
    | LampFailure
    | LampOnDaytime
    | SosPress
    | GatewayStorm
    | DevicesSilent
    | LampDegrading
    | BatteryDraining
    | RadioFading,
    Field(discriminator="type"),
]


class Scenario(BaseModel):
    """A named list of events to inject."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9\-_]*$", max_length=64)
    description: str = ""
    events: list[ScenarioEvent] = Field(min_length=1)


def shipped_dir() -> Path:
    return Path(str(files("simulators") / "scenarios"))


def shipped_scenarios() -> list[str]:
    """Names of the scenarios shipped with linli."""
    return sorted(p.stem for p in shipped_dir().glob("*.yaml"))


def load_scenario(name_or_path: str | Path) -> Scenario:
    """A shipped scenario by name (``manhole-lifted``), or a scenario file."""
    path = Path(name_or_path)
    if not path.exists() and isinstance(name_or_path, str) and "/" not in name_or_path:
        shipped = shipped_dir() / f"{name_or_path}.yaml"
        if not shipped.exists():
            names = ", ".join(shipped_scenarios())
            raise ScenarioError(
                None, "scenario", f"no scenario file or shipped scenario {name_or_path!r} ({names})"
            )
        path = shipped
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ScenarioError(str(path), "", f"cannot read: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise ScenarioError(str(path), "", f"not valid YAML: {exc}") from exc
    try:
        return Scenario.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise ScenarioError(str(path), field, first["msg"].removeprefix("Value error, ")) from exc


def resolve_at(event: _Event, *, start_ms: int, offset_ms: int) -> int:
    """The event's time in epoch ms: local times of day use `offset_ms` (the place's UTC offset)."""
    spec = event.at
    if spec.startswith("+"):
        t = start_ms + parse_duration(spec[1:], option="at")
    else:
        match = _LOCAL.match(spec)
        if match:
            of_day = (int(match.group(1)) * 3600 + int(match.group(2)) * 60 + int(match.group(3) or 0)) * 1000
            midnight = (start_ms + offset_ms) // MS_PER_DAY * MS_PER_DAY - offset_ms
            t = midnight + of_day
            if t < start_ms:
                t += MS_PER_DAY
        else:
            t = to_ms(datetime.fromisoformat(spec))
    return t + event.day * MS_PER_DAY


def duration_ms(text: str) -> int:
    return parse_duration(text)


__all__ = [
    "MS_PER_HOUR",
    "BatteryDraining",
    "DevicesSilent",
    "GatewayStorm",
    "LampDegrading",
    "LampFailure",
    "LampOnDaytime",
    "ManholeLifted",
    "RadioFading",
    "ResidentInactive",
    "Scenario",
    "ScenarioEvent",
    "SosPress",
    "load_scenario",
    "resolve_at",
    "shipped_scenarios",
]

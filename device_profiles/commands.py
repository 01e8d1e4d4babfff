"""Commands down to devices as data: the canonical commands per device type and their parameters.

A command is a name and typed parameters (``dim`` with ``level_pct: 40``), the same whatever the
device speaks; each profile says how its dialect carries it (`device_profiles.command_model`,
docs/commands.md). `check_command` refuses a command the standard does not define for the type, or
parameters of the wrong name, type or range, with a message naming them. `CONFIRMS` says which
metric of the device's next report shows a command took effect (``lamp_on`` equal to ``on``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, Literal, NamedTuple

from device_profiles.errors import DeviceProfilesError

ParamKind = Literal["bool", "int", "time"]
Value = bool | int | str


class ParamDef(NamedTuple):
    """One parameter: its kind (``time`` is local ``HH:MM``), range for ints, unit and meaning."""

    kind: ParamKind
    description: str
    low: int = 0
    high: int = 0
    unit: str = ""


class CommandDef(NamedTuple):
    """One canonical command: what it does and its parameters (all required)."""

    description: str
    params: Mapping[str, ParamDef]


_REPORT_INTERVAL = CommandDef(
    "set how often the device reports",
    MappingProxyType(
        {"report_interval_s": ParamDef("int", "seconds between periodic reports", 60, 86_400, "s")}
    ),
)

#: Canonical commands per device type (docs/commands.md lists the same).
COMMANDS: Final = MappingProxyType(
    {
        "streetlight": MappingProxyType(
            {
                "switch": CommandDef(
                    "switch the lamp on or off", MappingProxyType({"on": ParamDef("bool", "true: on")})
                ),
                "dim": CommandDef(
                    "set the dimming level (the lamp stays as it is, on or off)",
                    MappingProxyType({"level_pct": ParamDef("int", "output, 100 = full", 0, 100, "%")}),
                ),
                "set_schedule": CommandDef(
                    "the controller's own daily schedule, local time, kept when the network is down",
                    MappingProxyType(
                        {
                            "on_at": ParamDef("time", "switch on at HH:MM"),
                            "off_at": ParamDef("time", "switch off at HH:MM"),
                            "night_dim_pct": ParamDef(
                                "int", "dimming level between 00:00 and off_at", 0, 100, "%"
                            ),
                        }
                    ),
                ),
                "configure": _REPORT_INTERVAL,
            }
        ),
        "sos_button": MappingProxyType(
            {
                "acknowledge": CommandDef(
                    "tell the resident help is coming (LED or buzzer on the button)", MappingProxyType({})
                ),
                "configure": _REPORT_INTERVAL,
            }
        ),
        "door_contact": MappingProxyType({"configure": _REPORT_INTERVAL}),
        "manhole_cover": MappingProxyType({"configure": _REPORT_INTERVAL}),
    }
)

#: Command -> (metric, parameter): the device's next report shows the command took effect when the
#: metric equals the parameter (true as 1). Commands not here are confirmed by the network
#: (a confirmed LoRaWAN downlink's acknowledgement) or not at all.
CONFIRMS: Final = MappingProxyType({"switch": ("lamp_on", "on"), "dim": ("dim_pct", "level_pct")})

_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")


class CommandError(DeviceProfilesError, ValueError):
    """A command the standard refuses: unknown for the type, or bad parameters."""


def command_def(device_type: str, name: str) -> CommandDef:
    """The definition of `name` for `device_type`; `CommandError` naming the known ones otherwise."""
    table = COMMANDS.get(device_type)
    if table is None:
        raise CommandError(f"the standard defines no commands for {device_type}")
    found = table.get(name)
    if found is None:
        raise CommandError(f"{name!r} is not a command of {device_type} ({', '.join(sorted(table))})")
    return found


def check_command(device_type: str, name: str, params: Mapping[str, object]) -> dict[str, Value]:
    """The parameters of a valid command (as their kinds), or `CommandError` naming every fault."""
    definition = command_def(device_type, name)
    problems = [f"unknown parameter {k!r}" for k in params if k not in definition.params]
    out: dict[str, Value] = {}
    for key, spec in definition.params.items():
        if key not in params:
            problems.append(f"{key} is required ({spec.description})")
            continue
        value = params[key]
        if spec.kind == "bool":
            if not isinstance(value, bool):
                problems.append(f"{key} must be true or false, not {value!r}")
            else:
                out[key] = value
        elif spec.kind == "int":
            if isinstance(value, bool) or not isinstance(value, int):
                problems.append(f"{key} must be a whole number, not {value!r}")
            elif not spec.low <= value <= spec.high:
                problems.append(f"{key} {value} is outside {spec.low}..{spec.high} {spec.unit}".rstrip())
            else:
                out[key] = value
        elif not isinstance(value, str) or not _TIME.match(value):
            problems.append(f"{key} must be a local time HH:MM, not {value!r}")
        else:
            out[key] = value
    if problems:
        raise CommandError(f"{device_type} {name}: " + "; ".join(problems))
    return out

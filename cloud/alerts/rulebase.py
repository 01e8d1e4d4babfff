"""What every alert rule shares: durations, operators, bilingual templates, and the base model.

`cloud.alerts.rules` (the engine's kinds) and `cloud.alerts.detect.kinds` (the detectors' kinds)
build on these; `cloud.alerts.rules.RuleBook` reads both from the same files.
"""

from __future__ import annotations

import re
import string
from typing import Annotated, Final, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: What a title or detail template may name.
PLACEHOLDERS: Final = frozenset(
    {
        "rule",
        "device_id",
        "device_type",
        "resident_id",
        "gateway_id",
        "community_id",
        "building",
        "unit",
        "room",
        "metric",
        "value",
        "threshold",
        "duration",
        "event",
        "why",
    }
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNITS: Final = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}

Op = Literal[">", ">=", "<", "<=", "==", "!="]


def parse_duration(value: object) -> float:
    """Seconds of ``"90s"``, ``"5m"``, ``"2h"``, ``"1d"``, ``"250ms"`` or a number."""
    if isinstance(value, bool):
        raise ValueError("a duration such as 90s, 5m, 2h or 1d")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (m := _DURATION.match(value)):
        seconds = float(m.group(1)) * _UNITS[m.group(2)]
    else:
        raise ValueError(f"{value!r} is not a duration such as 90s, 5m, 2h or 1d")
    if seconds < 0:
        raise ValueError("a duration cannot be negative")
    return seconds


Duration = Annotated[float, Field(ge=0)]


def compare(op: str, value: float, threshold: float) -> bool:
    if op == ">":
        return value > threshold
    if op == ">=":
        return value >= threshold
    if op == "<":
        return value < threshold
    if op == "<=":
        return value <= threshold
    if op == "==":
        return value == threshold
    return value != threshold


#: The clear side of each operator: a condition ``value op threshold`` is over when
#: ``value CLEAR_OP[op] clear`` holds.
CLEAR_OP: Final = {">": "<=", ">=": "<", "<": ">=", "<=": ">", "==": "!=", "!=": "=="}


class Text(BaseModel):
    """A template in both languages."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    zh: str
    en: str

    @field_validator("zh", "en")
    @classmethod
    def _placeholders(cls, value: str) -> str:
        try:
            names = {name for _, name, _, _ in string.Formatter().parse(value) if name is not None}
        except ValueError as exc:
            raise ValueError(f"not a template: {exc}") from exc
        unknown = sorted(n for n in names if n not in PLACEHOLDERS)
        if unknown:
            raise ValueError(f"unknown placeholder(s) {unknown}; known: {sorted(PLACEHOLDERS)}")
        return value


class RuleCommand(BaseModel):
    """A command a fire sends to its device (docs/commands.md), when the device's model carries it."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str
    params: dict[str, bool | int | str] = Field(default_factory=dict)
    #: how long it may wait for an offline gateway or device
    ttl: float = 600.0

    @field_validator("ttl", mode="before")
    @classmethod
    def _ttl(cls, value: object) -> object:
        return parse_duration(value)


class RuleBase(BaseModel):
    """What every rule has: an id, a severity, the device types it watches, and its texts."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    id: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")]
    enabled: bool = True
    severity: Literal["critical", "major", "minor", "info"]
    #: Device types the rule watches (empty: every type).
    device_types: tuple[str, ...] = ()
    title: Text
    detail: Text
    #: sent to the device when the rule fires on it (a lamp off at night: switch it on)
    command: RuleCommand | None = None

    @model_validator(mode="after")
    def _command(self) -> Self:
        if self.command is None:
            return self
        from device_profiles.commands import CommandError, check_command

        if not self.device_types:
            raise ValueError("a rule with a command names its device_types (the command is theirs)")
        for device_type in self.device_types:
            try:
                check_command(device_type, self.command.name, self.command.params)
            except CommandError as exc:
                raise ValueError(f"command: {exc}") from None
        return self

    @field_validator(
        "for_",
        "keep_firing_for",
        "no_data_after",
        "after",
        "clear_after",
        "fresh_for",
        "history",
        "min_history",
        "margin",
        "min_gap",
        "half_life",
        "baseline",
        "recent",
        "tolerance",
        "window",
        "horizon",
        "warn_within",
        "list_within",
        "min_span",
        "every",
        "match_within",
        "min_baseline",
        mode="before",
        check_fields=False,
    )
    @classmethod
    def _durations(cls, value: object) -> object:
        return value if value is None else parse_duration(value)

    def applies_to(self, device_type: str) -> bool:
        return not self.device_types or device_type in self.device_types

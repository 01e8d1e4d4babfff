"""Streetlight schedules: per community, on at dusk and off at dawn (with offsets), dim levels by
time of night, holiday overrides; the cloud turns them into commands.

A schedules file (``[commands] schedules``, YAML)::

    version: 1
    timezone: Asia/Shanghai          # local times below, and the date of a holiday
    communities:
      "*":                           # every community with streetlights not named below
        on: {at: dusk, offset_min: -10}      # dusk and dawn: the sun 2 deg below the horizon
        off: {at: dawn, offset_min: 10}      # at the community's lamps (their mean position)
        dim:
          - {from: "23:00", to: "05:00", level_pct: 50}
      c01:
        on: {at: "18:30"}                    # or a fixed local time
        holidays:
          - {date: 2027-02-05, dim: []}      # Spring Festival eve: full brightness all night
          - {date: 2027-10-01, off: {at: "01:00"}}

A night starts on the local date of its ``on``; ``off`` and the dim windows fall in the same
night (a time before noon is the next morning). Each night has its transitions: on (``switch``
on, then ``dim`` to the level then in force), the dim windows' starts and ends (``dim``), off
(``switch`` off). `due_commands` gives the commands of the last transition at or before now for
every streetlight of the community; their ids are derived from the device, the transition's time
and the command, so asking again (every round, after a restart) queues nothing twice, and a
lamp's command lives until the next transition (a lamp offline for longer misses it, and the next
one sets it right).
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from pathlib import Path
from typing import Annotated, Any, Final, Literal, NamedTuple, Self
from zoneinfo import ZoneInfo

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cloud.errors import CloudError
from device_profiles.config_sources import TimeZoneName, error_detail
from device_profiles.solar import MS_PER_DAY, dawn_dusk

#: Namespace of the schedules' command ids.
SCHEDULE_NS: Final = uuid.UUID("6c696e6c-692d-7363-6865-64756c650000")
#: The community-wide default plan's key.
EVERY: Final = "*"
#: The shortest life of a schedule's command (seconds).
MIN_TTL_S: Final = 60
_HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"


class ScheduleError(CloudError):
    """A schedules file that is not one: every problem with its place."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Switch(_Model):
    #: ``dusk``, ``dawn`` or a local time ``HH:MM``
    at: str = "dusk"
    offset_min: Annotated[int, Field(ge=-240, le=240)] = 0

    @field_validator("at")
    @classmethod
    def _at(cls, value: str) -> str:
        import re

        if value not in ("dusk", "dawn") and not re.match(_HHMM, value):
            raise ValueError(f"{value!r}: dusk, dawn or a local time HH:MM")
        return value


class OnSwitch(Switch):
    """``on``: at dusk unless it says otherwise."""


class OffSwitch(Switch):
    """``off``: at dawn unless it says otherwise (``off: {offset_min: 10}`` is dawn + 10 min)."""

    at: str = "dawn"


class DimWindow(_Model):
    start: Annotated[str, Field(alias="from", pattern=_HHMM)]
    end: Annotated[str, Field(alias="to", pattern=_HHMM)]
    level_pct: Annotated[int, Field(ge=0, le=100)]


class Holiday(_Model):
    date: date
    on: OnSwitch | None = None
    off: OffSwitch | None = None
    dim: list[DimWindow] | None = None


class Plan(_Model):
    on: OnSwitch = OnSwitch()
    off: OffSwitch = OffSwitch()
    dim: list[DimWindow] = Field(default_factory=list)
    holidays: list[Holiday] = Field(default_factory=list)

    @model_validator(mode="after")
    def _nights(self) -> Self:
        """Refuse a night that could never happen (the lamps would silently never switch)."""
        problems = _night_problems(self.on, self.off, self.dim)
        for h in self.holidays:
            problems += [
                f"holiday {h.date}: {p}"
                for p in _night_problems(
                    h.on or self.on, h.off or self.off, self.dim if h.dim is None else h.dim
                )
            ]
        if problems:
            raise ValueError("; ".join(problems))
        return self


def _night_minute(hhmm: str) -> int:
    """Minutes from the noon before a night to local time `hhmm` (before noon: the next morning)."""
    hours, minutes = (int(x) for x in hhmm.split(":"))
    return (hours - 12) * 60 + minutes + (1440 if hours < 12 else 0)


def _night_problems(on: Switch, off: Switch, dim: Sequence[DimWindow]) -> list[str]:
    problems = []
    if on.at == "dawn":
        problems.append("on at dawn would light the lamps in the morning: dusk or an evening time")
    if off.at == "dusk":
        problems.append("off at dusk would leave them dark all night: dawn or a morning time")
    if on.at not in ("dusk", "dawn") and off.at not in ("dusk", "dawn"):
        on_at, off_at = _night_minute(on.at) + on.offset_min, _night_minute(off.at) + off.offset_min
        if off_at <= on_at:
            problems.append(
                f"off at {off.at} does not come after on at {on.at} in the same night"
                " (a time before noon is the next morning)"
            )
    for w in dim:
        if _night_minute(w.end) <= _night_minute(w.start):
            problems.append(
                f"the dim window from {w.start} to {w.end} ends before it starts"
                " (a time before noon is the next morning; a window lies within one night)"
            )
    return problems


class Schedules(_Model):
    version: Literal[1] = 1
    timezone: TimeZoneName = "Asia/Shanghai"
    communities: dict[str, Plan] = Field(default_factory=dict)

    def plan(self, community_id: str) -> Plan | None:
        return self.communities.get(community_id) or self.communities.get(EVERY)


def load_schedules(path: Path) -> Schedules:
    """Read and check a schedules file; `ScheduleError` naming the file and every problem."""
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ScheduleError(f"{path}: cannot read the schedules: {exc}") from None
    try:
        return Schedules.model_validate(_onoff(doc) if doc is not None else {})
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'file'}: {error_detail(e['msg'])}" for e in exc.errors()
        )
        raise ScheduleError(f"{path}: {problems}") from None


def _onoff(value: Any) -> Any:
    """YAML 1.1 reads the keys ``on`` and ``off`` as true and false: give them their names back."""
    if isinstance(value, dict):
        return {
            ({True: "on", False: "off"}.get(k, k) if isinstance(k, bool) else k): _onoff(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_onoff(v) for v in value]
    return value


class Transition(NamedTuple):
    """At `at`, the lamps go to (`on`, `level_pct`)."""

    at: datetime
    on: bool
    level_pct: int


def _local(day: date, hhmm: str, tz: ZoneInfo, *, night_of: date | None = None) -> datetime:
    hours, minutes = (int(x) for x in hhmm.split(":"))
    if night_of is not None and hours < 12:  # the next morning of the night
        day = night_of + timedelta(days=1)
    return datetime.combine(day, time(hours, minutes), tzinfo=tz)


def _solar(which: str, day: date, lat: float, lon: float, tz: ZoneInfo) -> datetime:
    """Dusk of `day` or dawn of `day` (local dates) at (`lat`, `lon`)."""
    noon = datetime.combine(day, time(12), tzinfo=tz)
    utc_day_ms = math.floor(noon.timestamp() * 1000 / MS_PER_DAY) * MS_PER_DAY
    dawn_ms, dusk_ms = dawn_dusk(lat, lon, utc_day_ms)
    ms = dusk_ms if which == "dusk" else dawn_ms
    # the solar model's dates are UTC days: take the one whose time falls on the local `day`
    for shift in (0, -MS_PER_DAY, MS_PER_DAY):
        candidate = datetime.fromtimestamp((ms + shift) / 1000, tz)
        if candidate.date() == day:
            return candidate
    return datetime.fromtimestamp(ms / 1000, tz)


def night(plan: Plan, day: date, *, lat: float, lon: float, tz: ZoneInfo) -> list[Transition]:
    """The transitions of the night that starts on local date `day`, in time order."""
    holiday = next((h for h in plan.holidays if h.date == day), None)
    on_spec = holiday.on if holiday and holiday.on else plan.on
    off_spec = holiday.off if holiday and holiday.off else plan.off
    windows = holiday.dim if holiday and holiday.dim is not None else plan.dim

    def when(spec: Switch, evening: bool) -> datetime:
        if spec.at in ("dusk", "dawn"):
            base = _solar(spec.at, day if evening else day + timedelta(days=1), lat, lon, tz)
        else:
            base = _local(day, spec.at, tz, night_of=day)
        return base + timedelta(minutes=spec.offset_min)

    on_at, off_at = when(on_spec, True), when(off_spec, False)
    if off_at <= on_at:
        return []

    def level(t: datetime) -> int:
        for w in windows:
            start, end = _local(day, w.start, tz, night_of=day), _local(day, w.end, tz, night_of=day)
            if start <= t < end:
                return w.level_pct
        return 100

    out = [Transition(on_at, True, level(on_at))]
    edges = sorted({_local(day, hhmm, tz, night_of=day) for w in windows for hhmm in (w.start, w.end)})
    out += [Transition(t, True, level(t)) for t in edges if on_at < t < off_at]
    out.append(Transition(off_at, False, 0))
    return out


def current(
    plan: Plan, now: datetime, *, lat: float, lon: float, tz: ZoneInfo
) -> tuple[Transition, datetime] | None:
    """The last transition at or before `now`, and when the next one falls (its commands' end)."""
    today = now.astimezone(tz).date()
    transitions = [
        t for d in (today - timedelta(days=1), today, today + timedelta(days=1))
        for t in night(plan, d, lat=lat, lon=lon, tz=tz)
    ]  # fmt: skip
    transitions.sort(key=lambda t: t.at)
    past = [t for t in transitions if t.at <= now]
    if not past:
        return None
    later = [t.at for t in transitions if t.at > now]
    return past[-1], later[0] if later else past[-1].at + timedelta(hours=12)


def tonight(plan: Plan, now: datetime, *, lat: float, lon: float, tz: ZoneInfo) -> list[Transition]:
    """The transitions of the night in force at `now`, or of the next night when none is."""
    today = now.astimezone(tz).date()
    for day in (today - timedelta(days=1), today, today + timedelta(days=1)):
        transitions = night(plan, day, lat=lat, lon=lon, tz=tz)
        if transitions and now < transitions[-1].at:
            return transitions
    return []


class Due(NamedTuple):
    command_id: uuid.UUID
    device_id: str
    name: str
    params: dict[str, Any]
    ttl_s: int


def due_commands(
    schedules: Schedules,
    community_id: str,
    lamps: Sequence[tuple[str, float | None, float | None]],
    now: datetime,
) -> list[Due]:
    """The commands of the community's current transition for its lamps (device, lat, lon)."""
    plan = schedules.plan(community_id)
    located = [(lat, lon) for _, lat, lon in lamps if lat is not None and lon is not None]
    if plan is None or not lamps or not located:
        return []
    lat = sum(p[0] for p in located) / len(located)
    lon = sum(p[1] for p in located) / len(located)
    tz = ZoneInfo(schedules.timezone)
    found = current(plan, now, lat=lat, lon=lon, tz=tz)
    if found is None:
        return []
    transition, until = found
    ttl = max(MIN_TTL_S, int((until - now).total_seconds()))
    stamp = transition.at.isoformat()
    commands: list[tuple[str, dict[str, Any]]] = [("switch", {"on": transition.on})]
    if transition.on:
        commands.append(("dim", {"level_pct": transition.level_pct}))
    return [
        Due(uuid.uuid5(SCHEDULE_NS, f"{device_id}|{stamp}|{name}|{params}"), device_id, name, params, ttl)
        for device_id, _, _ in lamps
        for name, params in commands
    ]

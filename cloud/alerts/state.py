"""The rule engine's state, per community: what `cloud.alerts.engine.Engine` saves with each
checkpoint (msgspec MessagePack, one ``alert_state`` row per community) and restores after a
restart. Times are Unix microseconds: device times, or engine times (the wall clock, or the
community's data clock)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

US: Final = 1_000_000


class DeviceState(msgspec.Struct, array_like=True):
    """A device the community has: its newest reading's device time (0: never heard)."""

    device_type: str
    profile: str
    gateway_id: str
    interval_s: float
    last_us: int = 0


class RuleState(msgspec.Struct, array_like=True):
    """One (rule, subject) that is pending, firing, or recently cleared (kept to recognise late
    data): `since` the condition held (0: not pending), `started` when the firing condition
    began, `seen` the newest device time evaluated, `until` the last time an event came or the
    time a firing condition stopped holding (for ``keep_firing_for``), `value` the last value."""

    firing: bool = False
    since: int = 0
    started: int = 0
    seen: int = 0
    until: int = 0
    value: float = 0.0


class ResidentState(msgspec.Struct, array_like=True):
    """A resident living alone: the last door activity, and when active time runs out."""

    device_id: str
    last_us: int = 0
    deadline_us: int = 0
    open_count: float = -1.0
    firing: bool = False


class GatewayState(msgspec.Struct, array_like=True):
    """A gateway's last status (``online``/``offline``) and when the engine learned it."""

    state: str
    at_us: int
    firing: bool = False


class CommunityState(msgspec.Struct):
    """Everything the engine knows of one community."""

    #: the data clock (newest telemetry device time); the wall clock's mode leaves it 0
    clock_us: int = 0
    #: engine time the community was first seen: the baseline of devices never heard
    since_us: int = 0
    #: engine time the time-based checks last ran
    checked_us: int = 0
    #: engine time before which no device can be absent (0: go through them at the next check)
    absence_due_us: int = 0
    #: with the data clock, each gateway's own clock (its newest telemetry device time): a device
    #: is absent when its gateway's time has moved on without it, not because another gateway's
    #: backlog moved the community's clock
    gateway_clock_us: dict[str, int] = msgspec.field(default_factory=dict)
    devices: dict[str, DeviceState] = msgspec.field(default_factory=dict)
    rules: dict[str, RuleState] = msgspec.field(default_factory=dict)
    residents: dict[str, ResidentState] = msgspec.field(default_factory=dict)
    gateways: dict[str, GatewayState] = msgspec.field(default_factory=dict)


ENCODER: Final = msgspec.msgpack.Encoder()
DECODER: Final = msgspec.msgpack.Decoder(CommunityState)


def active_deadline(start_us: int, active_s: float, *, tz: ZoneInfo, window_s: tuple[int, int]) -> int:
    """The moment `active_s` seconds of active time (local `window_s` each day) have passed
    since `start_us`."""
    left = active_s * US
    start = datetime.fromtimestamp(start_us / US, tz=tz)
    day = start.replace(hour=0, minute=0, second=0, microsecond=0)
    for _ in range(400):
        open_us = _at(day, window_s[0], tz)
        close_us = _at(day, window_s[1], tz)
        begin = max(open_us, start_us)
        if close_us > begin:
            if close_us - begin >= left:
                return int(begin + left)
            left -= close_us - begin
        day = (day + timedelta(days=1, hours=2)).replace(hour=0)  # DST-safe next local midnight
    return 2**62


def _at(day: datetime, seconds: int, tz: ZoneInfo) -> int:
    local = datetime(day.year, day.month, day.day, tzinfo=tz) + timedelta(seconds=seconds)
    return round(local.timestamp() * US)

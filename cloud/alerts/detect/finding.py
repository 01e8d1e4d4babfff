"""What a detector reports, and the words it uses: local clock times and durations in Chinese and
English, as a grid worker reads them ("no door activity since 19:42 yesterday")."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Final
from zoneinfo import ZoneInfo

import msgspec

from cloud.alerts.model import DeviceInfo, Directory, Evidence

DAY_S: Final = 86_400


class Place(msgspec.Struct, frozen=True, kw_only=True):
    """Where a community is: its time zone (for clock times) and coordinates (for the sun)."""

    timezone: str = "Asia/Shanghai"
    lat: float = 31.23
    lon: float = 121.47

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    @classmethod
    def of(cls, directory: Directory, community_id: str, devices: Sequence[DeviceInfo]) -> Place:
        """The community's place from the directory, else its first device's and the default zone."""
        comm = directory.communities.get(community_id)
        return cls(
            timezone=comm.timezone if comm else directory.default_timezone,
            lat=comm.lat if comm else devices[0].lat,
            lon=comm.lon if comm else devices[0].lon,
        )

    def utc_offset(self, now: int) -> int:
        """Seconds the local clock is ahead of UTC at `now`."""
        delta = datetime.fromtimestamp(now, tz=self.zone).utcoffset()
        return int(delta.total_seconds()) if delta is not None else 0


class Finding(msgspec.Struct, frozen=True, kw_only=True):
    """One device a detector finds out of its normal at the time of the run.

    ``started_s``: when the condition began (the moment the quiet time became improbable, the
    projection crossed the horizon); ``value``: the detector's figure (a probability, days or
    minutes left, a ratio); ``why_zh`` / ``why_en``: the explanation for the incident's text.
    """

    rule: str
    device_id: str
    started_s: int
    value: float
    why_zh: str
    why_en: str
    evidence: tuple[Evidence, ...] = ()


def clock(t_s: float, now_s: float, zone: ZoneInfo) -> tuple[str, str]:
    """``t_s`` as the local clock time a person says at ``now_s``: "07:10", "19:42 yesterday",
    "12-01 19:42" (zh, en)."""
    t = datetime.fromtimestamp(t_s, tz=zone)
    now = datetime.fromtimestamp(now_s, tz=zone)
    hm = t.strftime("%H:%M")
    days = (now.date() - t.date()).days
    if days == 0:
        return f"今天 {hm}", hm
    if days == 1:
        return f"昨天 {hm}", f"{hm} yesterday"
    if days == -1:
        return f"明天 {hm}", f"{hm} tomorrow"
    return t.strftime("%m-%d ") + hm, t.strftime("%d %b ") + hm


def span(seconds: float) -> tuple[str, str]:
    """A duration in hours and minutes (zh, en): "13 小时 18 分钟", "13 h 18 min"."""
    minutes = max(0, round(seconds / 60))
    if minutes >= 2 * 24 * 60:
        days = minutes / 1440
        return f"{days:.1f} 天", f"{days:.1f} days"
    h, m = divmod(minutes, 60)
    if h and m:
        return f"{h} 小时 {m} 分钟", f"{h} h {m} min"
    if h:
        return f"{h} 小时", f"{h} h"
    return f"{m} 分钟", f"{m} min"

"""The sun's elevation at a place and time (NOAA's general solar position formulas, accurate to
a fraction of a degree): what ``sun: day|night`` of a state-duration rule asks."""

from __future__ import annotations

import datetime as dt
import math
from typing import Final

_US_PER_DAY: Final = 86_400_000_000
_DAYS_TO_1970: Final = 719_163  # date(1970, 1, 1).toordinal()


def elevation_deg(lat: float, lon: float, t_us: int) -> float:
    """Degrees of the sun's centre above the horizon at (`lat`, `lon`) at Unix time `t_us`."""
    day_index, within = divmod(t_us, _US_PER_DAY)
    minutes = within / 60_000_000
    day_of_year = _day_of_year(day_index)
    gamma = 2 * math.pi / 365 * (day_of_year - 1 + (minutes / 60 - 12) / 24)
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(gamma)
        - 0.032077 * math.sin(gamma)
        - 0.014615 * math.cos(2 * gamma)
        - 0.040849 * math.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * math.cos(gamma)
        + 0.070257 * math.sin(gamma)
        - 0.006758 * math.cos(2 * gamma)
        + 0.000907 * math.sin(2 * gamma)
        - 0.002697 * math.cos(3 * gamma)
        + 0.00148 * math.sin(3 * gamma)
    )
    true_solar_min = minutes + eqtime + 4 * lon
    hour_angle = math.radians(true_solar_min / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    return 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def _day_of_year(day_index: int) -> int:
    return dt.date.fromordinal(_DAYS_TO_1970 + day_index).timetuple().tm_yday

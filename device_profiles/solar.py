"""The solar model of linli (NOAA's general solar position formulas): when dusk and dawn fall for
a place and a date, and the sun's elevation at a moment.

Accurate to a few minutes (a fraction of a degree) between the polar circles, which is all a
photocell-driven streetlight needs. The switching elevation is -2 deg: lamps come on a little after
sunset and go off a little before sunrise. The simulators, the streetlight schedules and the alert
rules (``sun: day|night``; the detectors' vectorised dusk in `cloud.alerts.sun`) all use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from typing import Any, Final

MS_PER_DAY: Final = 86_400_000
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()
#: Sun elevation at which streetlights switch.
SWITCH_ELEVATION_DEG: Final = -2.0


def dawn_dusk(
    lat: float, lon: float, utc_day_ms: int, *, elevation_deg: float = SWITCH_ELEVATION_DEG
) -> tuple[int, int]:
    """Dawn and dusk (epoch ms, UTC) for the date whose UTC midnight is `utc_day_ms`.

    The times are those nearest that date's local solar noon, so at 121 deg E dawn falls on the
    previous UTC day. In polar night both equal noon (the lamp stays on); in polar day dawn is
    12 hours before noon and dusk 12 hours after (the lamp stays off).
    """
    day_of_year = date.fromordinal(_EPOCH_ORDINAL + utc_day_ms // MS_PER_DAY).timetuple().tm_yday
    eqtime, decl = eqtime_decl(2 * math.pi / 365 * (day_of_year - 1))
    phi = math.radians(lat)
    cos_ha = (math.sin(math.radians(elevation_deg)) - math.sin(phi) * math.sin(decl)) / (
        math.cos(phi) * math.cos(decl)
    )
    ha_deg = math.degrees(math.acos(min(1.0, max(-1.0, cos_ha))))
    noon_min = 720 - 4 * lon - eqtime
    dawn = utc_day_ms + round((noon_min - 4 * ha_deg) * 60_000)
    dusk = utc_day_ms + round((noon_min + 4 * ha_deg) * 60_000)
    return dawn, dusk


def elevation_deg(lat: float, lon: float, t_us: int) -> float:
    """Degrees of the sun's centre above the horizon at (`lat`, `lon`) at Unix time `t_us`."""
    day_index, within = divmod(t_us, MS_PER_DAY * 1000)
    minutes = within / 60_000_000
    day_of_year = date.fromordinal(_EPOCH_ORDINAL + day_index).timetuple().tm_yday
    eqtime, decl = eqtime_decl(2 * math.pi / 365 * (day_of_year - 1 + (minutes / 60 - 12) / 24))
    hour_angle = math.radians((minutes + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    return 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def eqtime_decl(
    gamma: Any, cos: Callable[[Any], Any] = math.cos, sin: Callable[[Any], Any] = math.sin
) -> tuple[Any, Any]:
    """NOAA's equation of time (minutes) and solar declination (radians) at the fractional year
    `gamma` (radians): a float, or with numpy's `cos` and `sin` an array of many days at once."""
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * cos(gamma)
        - 0.032077 * sin(gamma)
        - 0.014615 * cos(2 * gamma)
        - 0.040849 * sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * cos(gamma)
        + 0.070257 * sin(gamma)
        - 0.006758 * cos(2 * gamma)
        + 0.000907 * sin(2 * gamma)
        - 0.002697 * cos(3 * gamma)
        + 0.00148 * sin(3 * gamma)
    )
    return eqtime, decl

"""The sun's elevation at a place and time (NOAA's general solar position formulas, accurate to
a fraction of a degree): what ``sun: day|night`` of a state-duration rule asks."""

from __future__ import annotations

import datetime as dt
import math
from typing import Any, Final

import numpy as np
import numpy.typing as npt

_US_PER_DAY: Final = 86_400_000_000
_DAYS_TO_1970: Final = 719_163  # date(1970, 1, 1).toordinal()


def elevation_deg(lat: float, lon: float, t_us: int) -> float:
    """Degrees of the sun's centre above the horizon at (`lat`, `lon`) at Unix time `t_us`."""
    day_index, within = divmod(t_us, _US_PER_DAY)
    minutes = within / 60_000_000
    day_of_year = _day_of_year(day_index)
    gamma = 2 * math.pi / 365 * (day_of_year - 1 + (minutes / 60 - 12) / 24)
    eqtime, decl = _eqtime_decl(gamma)
    true_solar_min = minutes + eqtime + 4 * lon
    hour_angle = math.radians(true_solar_min / 4 - 180)
    phi = math.radians(lat)
    cos_zenith = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(hour_angle)
    return 90.0 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zenith))))


def _eqtime_decl(gamma: Any) -> tuple[Any, Any]:
    """NOAA's equation of time (minutes) and solar declination (radians) at the fractional year
    `gamma` (radians): a float, or a numpy array for many days at once."""
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * np.cos(gamma)
        - 0.032077 * np.sin(gamma)
        - 0.014615 * np.cos(2 * gamma)
        - 0.040849 * np.sin(2 * gamma)
    )
    decl = (
        0.006918
        - 0.399912 * np.cos(gamma)
        + 0.070257 * np.sin(gamma)
        - 0.006758 * np.cos(2 * gamma)
        + 0.000907 * np.sin(2 * gamma)
        - 0.002697 * np.cos(3 * gamma)
        + 0.00148 * np.sin(3 * gamma)
    )
    return eqtime, decl


def _day_of_year(day_index: int) -> int:
    return dt.date.fromordinal(_DAYS_TO_1970 + day_index).timetuple().tm_yday


def dusk_s(lat: float, lon: float, days: npt.NDArray[np.int64], deg: float) -> npt.NDArray[np.float64]:
    """Unix seconds of dusk (the sun `deg` below the horizon, setting) on each UTC day index of
    `days` (days since 1970-01-01) at (`lat`, `lon`); NaN where the sun never gets that low.
    The same formulas as `elevation_deg`, solved for the evening hour angle."""
    doy = _days_of_year(days)
    gamma = 2 * np.pi / 365 * (doy - 1 + (18 - 12) / 24)  # evening: the hour matters little
    eqtime, decl = _eqtime_decl(gamma)
    phi = math.radians(lat)
    cos_h = (np.sin(np.radians(deg)) - math.sin(phi) * np.sin(decl)) / (math.cos(phi) * np.cos(decl))
    with np.errstate(invalid="ignore"):
        hour_angle = np.degrees(np.arccos(np.where(np.abs(cos_h) <= 1, cos_h, np.nan)))
    minutes = 720 - 4 * (lon - hour_angle) - eqtime
    return np.asarray(days.astype(np.float64) * 86_400 + minutes * 60, dtype=np.float64)


def _days_of_year(days: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
    dates = days.astype("datetime64[D]")
    years = dates.astype("datetime64[Y]")
    out: npt.NDArray[np.float64] = (dates - years).astype(np.int64).astype(np.float64) + 1
    return out

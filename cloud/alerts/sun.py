"""Dusk on many days at once (numpy), for the detectors: the formulas of `device_profiles.solar`
(which also answers ``sun: day|night`` of a state-duration rule, one moment at a time)."""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from device_profiles.solar import eqtime_decl


def dusk_s(lat: float, lon: float, days: npt.NDArray[np.int64], deg: float) -> npt.NDArray[np.float64]:
    """Unix seconds of dusk (the sun `deg` below the horizon, setting) on each UTC day index of
    `days` (days since 1970-01-01) at (`lat`, `lon`); NaN where the sun never gets that low.
    The formulas of `device_profiles.solar.elevation_deg`, solved for the evening hour angle."""
    doy = _days_of_year(days)
    gamma = 2 * np.pi / 365 * (doy - 1 + (18 - 12) / 24)  # evening: the hour matters little
    eqtime, decl = eqtime_decl(gamma, np.cos, np.sin)
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

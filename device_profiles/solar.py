"""A simple solar model: when dusk and dawn fall for a place and a date (NOAA's approximation).

Accurate to a few minutes between the polar circles, which is all a photocell-driven streetlight
needs. The switching elevation is -2 deg: lamps come on a little after sunset and go off a little
before sunrise.
"""

from __future__ import annotations

import math
from datetime import date
from typing import Final

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
    gamma = 2 * math.pi / 365 * (day_of_year - 1)
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
    phi = math.radians(lat)
    cos_ha = (math.sin(math.radians(elevation_deg)) - math.sin(phi) * math.sin(decl)) / (
        math.cos(phi) * math.cos(decl)
    )
    ha_deg = math.degrees(math.acos(min(1.0, max(-1.0, cos_ha))))
    noon_min = 720 - 4 * lon - eqtime
    dawn = utc_day_ms + round((noon_min - 4 * ha_deg) * 60_000)
    dusk = utc_day_ms + round((noon_min + 4 * ha_deg) * 60_000)
    return dawn, dusk

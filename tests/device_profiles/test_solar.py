"""The one solar model: the elevation at the dawn and dusk it computes is the switching elevation."""

from __future__ import annotations

import numpy as np
import pytest

from cloud.alerts.sun import dusk_s
from device_profiles.solar import MS_PER_DAY, SWITCH_ELEVATION_DEG, dawn_dusk, elevation_deg


@pytest.mark.parametrize(("lat", "lon"), [(31.23, 121.47), (45.75, 126.65), (22.54, 114.06), (-33.9, 18.4)])
def test_dawn_and_dusk_are_where_the_sun_is_at_the_switching_elevation(lat: float, lon: float) -> None:
    for day in range(20_000, 20_365, 29):
        dawn, dusk = dawn_dusk(lat, lon, day * MS_PER_DAY)
        assert dawn < dusk
        for moment in (dawn, dusk):
            assert elevation_deg(lat, lon, moment * 1000) == pytest.approx(SWITCH_ELEVATION_DEG, abs=0.6)
        # noon is above the horizon, midnight below
        assert elevation_deg(lat, lon, (dawn + dusk) // 2 * 1000) > 20
        assert elevation_deg(lat, lon, (dusk + 6 * 3_600_000) * 1000) < -10


def test_the_vectorised_dusk_agrees_with_one_day_at_a_time() -> None:
    days = np.arange(20_000, 20_365, dtype=np.int64)
    many = dusk_s(31.23, 121.47, days, SWITCH_ELEVATION_DEG)
    # dawn_dusk answers around the local solar noon of the UTC date: at 121 deg E both fall on it
    one = [dawn_dusk(31.23, 121.47, int(d) * MS_PER_DAY)[1] / 1000 for d in days]
    assert np.max(np.abs(many - np.array(one))) < 120  # within two minutes

"""Smart manhole covers: steady with sensor noise; rain raises the water; gas is rare.

Rain falls per community (an episode on about one day in eight, one to eight hours long), so all
covers of a community see it together, each scaled by how low it lies. The water alarm goes off
above `WATER_ALARM_MM`. A gas episode (H2S and methane from the sewer) comes to one cover about
every three months. The manhole-lifted scenario opens and tilts a cover for a while.
"""

from __future__ import annotations

import math
from typing import Final

from device_profiles import Event
from simulators.behaviour.base import Behaviour, Context, Sample, SimDevice, Window
from simulators.rand import RandomStream

MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000
GAS: Final = 1
WATER_ALARM_MM: Final = 1000.0
WATER_CLEAR_MM: Final = 800.0
H2S_ALARM_PPM: Final = 10.0
CH4_ALARM_PCT_LEL: Final = 20.0
MEAN_GAS_INTERVAL_MS: Final = 90 * MS_PER_DAY
RAIN_DAY_CHANCE: Final = 0.12
#: Water drains with this time constant after the rain stops.
DRAIN_TAU_MS: Final = 3 * MS_PER_HOUR


class Rain:
    """Rain episodes of one community, generated day by day as simulated time reaches them."""

    __slots__ = ("_episodes", "_rs", "_until")

    def __init__(self, rs: RandomStream, start_ms: int) -> None:
        self._rs = rs
        self._until = start_ms - 2 * MS_PER_DAY
        self._episodes: list[tuple[int, int, float]] = []  # (start, end, peak rise in mm)

    def rise_mm(self, t_ms: int) -> float:
        """Water level rise at `t_ms` from recent rain (0 when dry)."""
        rs = self._rs
        while self._until <= t_ms:
            if rs.chance(RAIN_DAY_CHANCE):
                begin = self._until + round(rs.uniform(0, MS_PER_DAY))
                end = begin + round(rs.uniform(1, 8) * MS_PER_HOUR)
                self._episodes.append((begin, end, rs.uniform(150.0, 1400.0)))
            self._until += MS_PER_DAY
        horizon = t_ms - 2 * MS_PER_DAY
        if self._episodes and self._episodes[0][1] < horizon:
            self._episodes = [e for e in self._episodes if e[1] >= horizon]
        rise = 0.0
        for begin, end, peak in self._episodes:
            if t_ms < begin:
                continue
            if t_ms <= end:
                rise += peak * min(1.0, (t_ms - begin) / (0.3 * (end - begin)))
            else:
                rise += peak * math.exp(-(t_ms - end) / DRAIN_TAU_MS)
        return rise


class ManholeState:
    __slots__ = (
        "base_mm",
        "ch4_0",
        "gain",
        "gas",
        "h2s_0",
        "lifted",
        "rain",
        "tilt_0",
        "water_alarm",
    )

    def __init__(self, *, rain: Rain, rs: RandomStream) -> None:
        self.rain = rain
        self.base_mm = rs.uniform(40.0, 250.0)
        self.gain = rs.uniform(0.4, 1.3)
        self.tilt_0 = rs.uniform(-2.0, 2.0)
        self.h2s_0 = rs.uniform(0.0, 0.4)
        self.ch4_0 = rs.uniform(0.0, 1.5)
        #: (start, end, h2s peak, ch4 peak) of the current or last gas episode.
        self.gas: tuple[int, int, float, float] | None = None
        #: (start, end, tilt) windows in which the cover is lifted.
        self.lifted: list[tuple[int, int, float]] = []
        self.water_alarm = False


class ManholeBehaviour(Behaviour):
    device_type = "manhole_cover"

    def __init__(self, rs: RandomStream, ctx: Context) -> None:
        super().__init__(rs, ctx)
        self._rain: dict[str, Rain] = {}

    def setup(self, dev: SimDevice, start_ms: int) -> None:
        community = dev.device.community_id
        rain = self._rain.get(community)
        if rain is None:
            rain = self._rain[community] = Rain(self.rs, start_ms)
        lifted = dev.state or []
        dev.state = ManholeState(rain=rain, rs=self.rs)
        dev.state.lifted = lifted
        self.ctx.schedule(start_ms + round(self.rs.exponential(MEAN_GAS_INTERVAL_MS)), dev, GAS)

    def lift(self, dev: SimDevice, window: Window, tilt_deg: float) -> None:
        """Lift the cover (open, tilted) during `window`. Scenarios call this before `setup`."""
        if isinstance(dev.state, ManholeState):
            raise RuntimeError("lift windows must be added before the device is set up")
        dev.state = [*(dev.state or []), (window[0], window[1], tilt_deg)]

    def report(self, dev: SimDevice, t_ms: int) -> Sample:
        st: ManholeState = dev.state
        rs = self.rs
        cover_open, tilt = 0.0, st.tilt_0 + rs.normal(0.0, 0.15)
        for begin, end, lifted_tilt in st.lifted:
            if begin <= t_ms < end:
                cover_open, tilt = 1.0, lifted_tilt
        water = max(0.0, st.base_mm + st.gain * st.rain.rise_mm(t_ms) + rs.normal(0.0, 3.0))
        h2s = max(0.0, st.h2s_0 + rs.normal(0.0, 0.05))
        ch4 = max(0.0, st.ch4_0 + rs.normal(0.0, 0.1))
        gas = st.gas
        if gas is not None and gas[0] <= t_ms < gas[1]:
            h2s += gas[2] * rs.uniform(0.85, 1.0)
            ch4 += gas[3] * rs.uniform(0.85, 1.0)
        events: list[str] = []
        if water >= WATER_ALARM_MM:
            events.append(Event.WATER_ALARM)
        if h2s >= H2S_ALARM_PPM or ch4 >= CH4_ALARM_PCT_LEL:
            events.append(Event.GAS_ALARM)
        metrics = {
            "cover_open": cover_open,
            "tilt_deg": tilt,
            "water_level_mm": water,
            "h2s_ppm": h2s,
            "ch4_pct_lel": ch4,
        }
        if not st.water_alarm and water >= WATER_ALARM_MM:
            st.water_alarm = True
            record = {"condition": Event.WATER_ALARM, "device_id": dev.device_id, "level_mm": round(water)}
            self.ctx.natural_condition(t_ms, record, dev, until_ms=t_ms + 1)
        elif st.water_alarm and water < WATER_CLEAR_MM:
            st.water_alarm = False
        return metrics, tuple(events)

    def act(self, dev: SimDevice, t_ms: int, code: int) -> Sample | None:
        st: ManholeState = dev.state
        if code == GAS:
            rs = self.rs
            end = t_ms + round(rs.uniform(0.5, 3.0) * MS_PER_HOUR)
            st.gas = (t_ms, end, rs.uniform(12.0, 60.0), rs.uniform(5.0, 35.0))
            self.ctx.schedule(end + round(rs.exponential(MEAN_GAS_INTERVAL_MS)), dev, GAS)
            record = {"condition": Event.GAS_ALARM, "device_id": dev.device_id, "from": t_ms, "to": end}
            self.ctx.natural_condition(t_ms, record, dev, until_ms=end)
        return self.report(dev, t_ms)

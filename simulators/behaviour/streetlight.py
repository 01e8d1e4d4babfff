"""Streetlights: on at dusk, off at dawn for their own latitude and longitude, dimmed late at night.

Dusk and dawn come from `solar.dawn_dusk` (sun 2 deg below the horizon). From dusk to 23:00 local
time a lamp burns at full output, from 23:00 to 05:00 at half, then full again until dawn. Power
follows the lamp's rating and the dim level, current follows power and the mains voltage (power
factor 0.95), and the energy meter integrates power between reports. Each switch at dusk and dawn
sends a report at once. The lamp-failure scenario keeps a lamp on but draws no power; its
left-on-at-noon variant holds a lamp on through the day.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from device_profiles.solar import dawn_dusk
from simulators.behaviour.base import REPORT_NOW, Behaviour, Sample, SimDevice, Window, in_windows
from simulators.clock import iso

MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000
SWITCH: Final = 1
POWER_FACTOR: Final = 0.95
RATINGS_W: Final = (40.0, 60.0, 80.0, 100.0, 120.0, 150.0)


class LightState:
    __slots__ = (
        "dawn",
        "day",
        "degrade",
        "dusk",
        "energy_wh",
        "failed",
        "forced_on",
        "last_ms",
        "last_power",
        "manual",
        "rating_w",
        "schedule",
        "switch_at",
        "volt_0",
    )

    def __init__(self, *, rating_w: float, volt_0: float, energy_wh: float, start_ms: int) -> None:
        self.rating_w = rating_w
        self.volt_0 = volt_0
        self.energy_wh = energy_wh
        self.last_ms = start_ms
        self.last_power = 0.0
        self.day = -1
        self.dawn = 0
        self.dusk = 0
        self.failed: list[Window] | None = None
        self.forced_on: list[Window] | None = None
        #: (from ms, fails at ms, ratio at failure): power at full output falls linearly, then none
        self.degrade: tuple[int, int, float] | None = None
        #: a command's (on, dim %) until `manual_until` (the next switch of the schedule)
        self.manual: tuple[bool, float, int] | None = None
        #: the controller's own schedule (`set_schedule`): on at, off at (minutes of the local
        #: day), dim % at night; None: the photocell (dusk and dawn)
        self.schedule: tuple[int, int, float] | None = None
        #: when the pending switch falls (an earlier chain of switches is void)
        self.switch_at = 0


class StreetlightBehaviour(Behaviour):
    device_type = "streetlight"

    def setup(self, dev: SimDevice, start_ms: int) -> None:
        rs = self.rs
        pending: list[tuple[str, Window, float]] = dev.state or []
        st = LightState(
            rating_w=rs.choice(RATINGS_W),
            volt_0=rs.uniform(216.0, 229.0),
            energy_wh=rs.uniform(100.0, 5000.0) * 1000,
            start_ms=start_ms,
        )
        for kind, window, ratio in pending:
            if kind == "degrade":
                st.degrade = (window[0], window[1], ratio)
            elif kind == "failed":
                st.failed = [*(st.failed or []), window]
            else:
                st.forced_on = [*(st.forced_on or []), window]
        dev.state = st
        st.switch_at = self._next_switch(dev, start_ms)
        self.ctx.schedule(st.switch_at, dev, SWITCH)

    def override(self, dev: SimDevice, kind: str, window: Window) -> None:
        """``failed`` (on, no power) or ``forced_on`` (on all day) during `window`, before `setup`."""
        if isinstance(dev.state, LightState):
            raise RuntimeError("overrides must be added before the device is set up")
        dev.state = [*(dev.state or []), (kind, window, 0.0)]

    def degrade(self, dev: SimDevice, start_ms: int, fail_ms: int, to_ratio: float) -> None:
        """From `start_ms` the lamp's power falls linearly to `to_ratio` at `fail_ms`; then it
        fails (on, no power) until a ``failed`` window ends. Before `setup`."""
        if isinstance(dev.state, LightState):
            raise RuntimeError("overrides must be added before the device is set up")
        dev.state = [*(dev.state or []), ("degrade", (start_ms, fail_ms), to_ratio)]

    def _sun(self, dev: SimDevice, t_ms: int) -> LightState:
        st: LightState = dev.state
        day = (t_ms + dev.offset_ms) // MS_PER_DAY
        if day != st.day:
            loc = dev.device.location
            st.dawn, st.dusk = dawn_dusk(loc.lat, loc.lon, day * MS_PER_DAY)
            st.day = day
        return st

    def _next_switch(self, dev: SimDevice, t_ms: int) -> int:
        st = self._sun(dev, t_ms)
        if st.schedule is not None:  # the controller's own times, local
            into_day = (t_ms + dev.offset_ms) % MS_PER_DAY
            times = [t_ms - into_day + minute * 60_000 for minute in st.schedule[:2]]
            return min(at if at >= t_ms else at + MS_PER_DAY for at in times)
        if t_ms < st.dawn:
            return st.dawn
        if t_ms < st.dusk:
            return st.dusk
        loc = dev.device.location
        return dawn_dusk(loc.lat, loc.lon, (st.day + 1) * MS_PER_DAY)[0]

    def lamp(self, dev: SimDevice, t_ms: int) -> tuple[bool, float]:
        """(lamp on, dim %) by a command in force, the solar schedule (or the controller's own)
        and any forced-on window."""
        st = self._sun(dev, t_ms)
        if in_windows(st.forced_on, t_ms):
            return True, 100.0
        if st.manual is not None:
            if t_ms < st.manual[2]:
                return st.manual[0], st.manual[1]
            st.manual = None
        return self._scheduled(dev, st, t_ms)

    def _scheduled(self, dev: SimDevice, st: LightState, t_ms: int) -> tuple[bool, float]:
        hour = dev.local_hour(t_ms)
        night = hour >= 23.0 or hour < 5.0
        if st.schedule is not None:
            on_at, off_at, night_dim = st.schedule
            minute = hour * 60
            on = (on_at <= minute or minute < off_at) if on_at > off_at else on_at <= minute < off_at
            return (True, night_dim if night else 100.0) if on else (False, 0.0)
        if st.dawn <= t_ms < st.dusk:
            return False, 0.0
        return True, 50.0 if night else 100.0

    def command(
        self, dev: SimDevice, t_ms: int, name: str, params: Mapping[str, bool | int | str]
    ) -> tuple[Sample | None, str]:
        """``switch`` and ``dim`` hold until the next switch of the schedule; ``set_schedule``
        replaces the photocell. The controller reports at once."""
        st: LightState = dev.state
        on, dim = self.lamp(dev, t_ms)
        until = self._next_switch(dev, t_ms + 1)
        if name == "switch":
            on = bool(params["on"])
            dim = (dim or 100.0) if on else 0.0
            st.manual = (on, dim, until)
            effect = f"switched {'on' if on else 'off'} until {iso(until)}"
        elif name == "dim":
            dim = float(int(params["level_pct"]))
            st.manual = (on, dim, until)  # an off lamp keeps the setting, and reports it
            effect = f"dimmed to {dim:g} % ({'on' if on else 'off'}) until {iso(until)}"
        elif name == "set_schedule":
            on_at, off_at = (_minutes(str(params[k])) for k in ("on_at", "off_at"))
            st.schedule = (on_at, off_at, float(int(params["night_dim_pct"])))
            st.manual = None
            st.switch_at = self._next_switch(dev, t_ms + 1)  # the photocell's pending switch is void
            self.ctx.schedule(st.switch_at, dev, SWITCH)
            effect = f"schedule on {params['on_at']} off {params['off_at']} night {params['night_dim_pct']} %"
        else:
            return super().command(dev, t_ms, name, params)
        return self.report(dev, t_ms), effect

    def report(self, dev: SimDevice, t_ms: int) -> Sample:
        st: LightState = dev.state
        rs = self.rs
        on, dim = self.lamp(dev, t_ms)
        volts = st.volt_0 + rs.normal(0.0, 1.5)
        if on and not in_windows(st.failed, t_ms):
            power = st.rating_w * dim / 100.0 * (1.0 + rs.normal(0.0, 0.01))
            if st.degrade is not None and t_ms >= st.degrade[0]:
                begin, fail, ratio = st.degrade
                power *= 1.0 - (1.0 - ratio) * min(1.0, (t_ms - begin) / (fail - begin))
            current = power / (volts * POWER_FACTOR)
        else:
            power = current = 0.0
        st.energy_wh += st.last_power * max(0, t_ms - st.last_ms) / MS_PER_HOUR
        st.last_ms, st.last_power = t_ms, power
        metrics = {
            "lamp_on": 1.0 if on else 0.0,
            "dim_pct": dim,
            "voltage_v": volts,
            "current_a": current,
            "power_w": power,
            "energy_kwh": st.energy_wh / 1000.0,
            "lamp_fault": 0.0,
        }
        return metrics, ()

    def act(self, dev: SimDevice, t_ms: int, code: int) -> Sample | None:
        if code == SWITCH:
            st: LightState = dev.state
            if t_ms != st.switch_at:
                return None  # a switch the controller's new schedule replaced
            st.switch_at = self._next_switch(dev, t_ms + 1)
            self.ctx.schedule(st.switch_at, dev, SWITCH)
        elif code != REPORT_NOW:
            raise ValueError(f"streetlight: unknown action code {code}")
        return self.report(dev, t_ms)


def _minutes(hhmm: str) -> int:
    hours, minutes = hhmm.split(":")
    return int(hours) * 60 + int(minutes)

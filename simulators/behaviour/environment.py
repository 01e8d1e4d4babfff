"""Environmental sensors in homes: thermometers, smoke detectors and leak sensors.

Indoor climate follows the day (coolest before dawn, warmest in the late afternoon) around a level
drawn per flat; smoke, carbon monoxide and leaks stay at their quiet values: the alarms come from
scenarios and tests, not from chance, so every one is in the ground truth.
"""

from __future__ import annotations

import math
from typing import Final

from simulators.behaviour.base import Behaviour, Sample, SimDevice

#: Hour of the warmest indoor air, local time.
WARMEST_HOUR: Final = 16.0


class _Climate:
    __slots__ = ("humidity", "pm25", "swing", "temperature")

    def __init__(self, *, temperature: float, swing: float, humidity: float, pm25: float) -> None:
        self.temperature = temperature
        self.swing = swing
        self.humidity = humidity
        self.pm25 = pm25


class EnvironmentBehaviour(Behaviour):
    """Periodic reports of the flat's climate and the quiet alarm states."""

    device_type = "environment_sensor"

    def setup(self, dev: SimDevice, start_ms: int) -> None:
        rs = self.rs
        dev.state = _Climate(
            temperature=rs.uniform(18.0, 26.0),
            swing=rs.uniform(1.0, 3.0),
            humidity=rs.uniform(35.0, 65.0),
            pm25=rs.uniform(8.0, 60.0),
        )

    def report(self, dev: SimDevice, t_ms: int) -> Sample:
        st: _Climate = dev.state
        phase = 2 * math.pi * (dev.local_hour(t_ms) - WARMEST_HOUR) / 24
        temperature = st.temperature + st.swing * math.cos(phase) + self.rs.normal(0.0, 0.1)
        humidity = min(100.0, max(0.0, st.humidity - 2 * st.swing * math.cos(phase) + self.rs.normal(0, 1)))
        return {
            "temperature_c": temperature,
            "humidity_pct": humidity,
            "pm25_ugm3": max(0.0, st.pm25 + self.rs.normal(0.0, 3.0)),
            "co_ppm": 0.0,
            "smoke": 0.0,
            "water_leak": 0.0,
        }, ()


class SmokeBehaviour(EnvironmentBehaviour):
    device_type = "smoke_detector"


class LeakBehaviour(EnvironmentBehaviour):
    device_type = "water_leak_sensor"

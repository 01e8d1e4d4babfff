"""SOS buttons: a heartbeat every few hours, and very rare presses (some cancelled at once).

A press the resident does not cancel is a condition the pipeline must raise (``sos_pressed``). A
button whose dialect has a cancel event cancels about one press in seven within seconds (pressed
by mistake); its dialect's long press is used for one press in five.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

from device_profiles import Event
from simulators.behaviour.base import REPORT_NOW, Behaviour, Sample, SimDevice

PRESS: Final = 1
CANCEL: Final = 2
SCENARIO_PRESS: Final = 3
#: Mean time between two spontaneous presses of one button.
MEAN_PRESS_INTERVAL_MS: Final = 180 * 86_400_000


class SosBehaviour(Behaviour):
    device_type = "sos_button"

    def setup(self, dev: SimDevice, start_ms: int) -> None:
        dev.state = None
        self.ctx.schedule(start_ms + round(self.rs.exponential(MEAN_PRESS_INTERVAL_MS)), dev, PRESS)

    def report(self, dev: SimDevice, t_ms: int) -> Sample:
        return {}, (Event.HEARTBEAT,)

    def act(self, dev: SimDevice, t_ms: int, code: int) -> Sample | None:
        if code == REPORT_NOW:
            return self.report(dev, t_ms)
        if code == CANCEL:
            return {}, (Event.SOS_CANCELLED,)
        if code == SCENARIO_PRESS:
            return {}, (Event.SOS_PRESSED,)
        rs = self.rs
        self.ctx.schedule(t_ms + round(rs.exponential(MEAN_PRESS_INTERVAL_MS)), dev, PRESS)
        events = dev.shape.events
        long = Event.SOS_LONG_PRESSED in events and rs.chance(0.2)
        event = Event.SOS_LONG_PRESSED if long else Event.SOS_PRESSED
        cancelled_at: int | None = None
        if Event.SOS_CANCELLED in events and rs.chance(0.15):
            cancelled_at = t_ms + round(rs.uniform(5_000, 40_000))
            self.ctx.schedule(cancelled_at, dev, CANCEL)
        record = {
            "condition": Event.SOS_PRESSED,  # the condition a press raises, long or not
            "device_id": dev.device_id,
            "resident_id": dev.device.resident_id,
            "event": event,
            "cancelled_at": cancelled_at,
        }
        self.ctx.natural_condition(t_ms, record, dev, until_ms=t_ms + 1)
        return {}, (event,)

    def command(
        self, dev: SimDevice, t_ms: int, name: str, params: Mapping[str, bool | int | str]
    ) -> tuple[Sample | None, str]:
        if name == "acknowledge":
            return None, "acknowledged: green LED and two beeps, help is coming"
        return super().command(dev, t_ms, name, params)

"""Door contacts on a resident's front door, following the resident's daily routine.

Each simulated day (local time) gets a plan of door openings: outings (leaving and coming back,
two openings each), meals, visitors and deliveries, the odd opening at night. Elderly residents
living alone keep earlier hours, go out less and have fewer visitors, but open the door every
morning, midday and evening; other households (often
more than one person) leave for work or school in the morning and come back in the evening.
Each opening sends ``contact_open=1`` and, seconds later, ``contact_open=0``; periodic reports
repeat the current state. The elderly-inactive scenario adds
quiet windows in which the resident opens the door not at all.
"""

from __future__ import annotations

from array import array
from typing import Final

from simulators.behaviour.base import REPORT_NOW, Behaviour, Sample, SimDevice, Window, in_windows

MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000
STEP: Final = 1
#: Openings closer than this to the previous closing are dropped (one cannot open an open door).
MIN_GAP_MS: Final = 5_000


class DoorState:
    __slots__ = (
        "alone",
        "is_open",
        "last_ms",
        "open_count",
        "plan",
        "plan_day",
        "quiet",
        "sleep_h",
        "wake_h",
    )

    def __init__(self, *, alone: bool, wake_h: float, sleep_h: float, open_count: int) -> None:
        self.alone = alone
        self.wake_h = wake_h
        self.sleep_h = sleep_h
        self.open_count = open_count
        self.is_open = False
        #: pending steps of the current plan, ``t_ms << 1 | opens``, latest first (popped from the end).
        self.plan = array("q")
        self.plan_day = 0
        self.last_ms = 0
        self.quiet: list[Window] = []


class DoorBehaviour(Behaviour):
    device_type = "door_contact"

    def setup(self, dev: SimDevice, start_ms: int) -> None:
        rs = self.rs
        alone = bool(dev.device.living_alone)
        state = DoorState(
            alone=alone,
            wake_h=rs.normal(6.0, 0.4) if alone else rs.normal(7.0, 0.6),
            sleep_h=rs.normal(21.0, 0.5) if alone else rs.normal(23.0, 0.7),
            open_count=rs.integer(0, 3000),
        )
        state.last_ms = start_ms
        if dev.state is not None:  # scenario windows registered before setup
            state.quiet = dev.state
        dev.state = state
        state.plan_day = dev.local_day_start(start_ms)
        self._next(dev)

    def quiet(self, dev: SimDevice, window: Window) -> None:
        """No openings in `window` (the resident is inactive). Scenarios call this before `setup`."""
        if isinstance(dev.state, DoorState):
            raise RuntimeError("quiet windows must be added before the device is set up")
        dev.state = [*(dev.state or []), window]

    def report(self, dev: SimDevice, t_ms: int) -> Sample:
        st: DoorState = dev.state
        return {"contact_open": 1.0 if st.is_open else 0.0, "open_count": float(st.open_count)}, ()

    def act(self, dev: SimDevice, t_ms: int, code: int) -> Sample | None:
        if code == REPORT_NOW:
            return self.report(dev, t_ms)
        st: DoorState = dev.state
        opens = st.plan.pop() & 1
        st.last_ms = t_ms
        if opens:
            st.is_open = True
            st.open_count = (st.open_count + 1) % 65536
        else:
            st.is_open = False
        self._next(dev)
        return self.report(dev, t_ms)

    def _next(self, dev: SimDevice) -> None:
        st: DoorState = dev.state
        tries = 0
        while not st.plan and tries < 60:
            st.plan = self._plan(st, st.plan_day)
            st.plan_day += MS_PER_DAY
            tries += 1
        if st.plan:
            self.ctx.schedule(st.plan[-1] >> 1, dev, STEP)

    def _plan(self, st: DoorState, day_start: int) -> array[int]:
        """One local day's door steps, latest first."""
        rs = self.rs
        wake = st.wake_h + rs.normal(0.0, 0.3)
        sleep = st.sleep_h + rs.normal(0.0, 0.4)
        openings: list[tuple[float, float]] = []  # (local hour, seconds held open)

        def outing(leave_h: float, hours: float) -> None:
            openings.append((leave_h, rs.uniform(6.0, 30.0)))
            openings.append((leave_h + hours, rs.uniform(6.0, 40.0)))

        if st.alone:
            # Every day has a morning, a midday and an evening opening at least: someone living
            # alone who does not open the door for half a day is what `resident_inactive` is for.
            if rs.chance(0.6):  # early morning: exercise in the park, the market
                outing(wake + rs.uniform(0.3, 1.2), rs.uniform(0.7, 1.8))
            else:  # the milk, the newspaper
                openings.append((wake + rs.uniform(0.3, 2.0), rs.uniform(10.0, 40.0)))
            if rs.chance(0.3):  # lunch at the community canteen
                outing(rs.uniform(11.0, 11.8), rs.uniform(0.6, 1.2))
            else:  # a meal delivered, a neighbour at the door
                openings.append((rs.uniform(11.0, 13.5), rs.uniform(15.0, 90.0)))
            if rs.chance(0.3):  # afternoon: friends, the park
                outing(rs.uniform(14.5, 16.5), rs.uniform(0.5, 2.0))
            openings.append((rs.uniform(17.0, 19.5), rs.uniform(10.0, 60.0)))  # the rubbish, a walk
            visits, night = rs.poisson(0.3), 0.03
        else:
            if rs.chance(0.7):  # work or school
                outing(wake + rs.uniform(0.7, 1.5), rs.uniform(9.0, 11.0))
            else:
                outing(rs.uniform(9.0, 11.0), rs.uniform(1.0, 3.0))
                if rs.chance(0.5):  # lunch out
                    outing(rs.uniform(11.5, 12.5), rs.uniform(0.5, 1.0))
            if rs.chance(0.6):  # another member of the household: school, work, shopping
                outing(rs.uniform(7.5, 10.0), rs.uniform(3.0, 9.0))
            if rs.chance(0.4):  # evening walk, dinner out
                outing(rs.uniform(19.0, 20.5), rs.uniform(0.5, 1.5))
            visits, night = rs.poisson(1.5), 0.05
        for _ in range(visits):  # deliveries, visitors, taking out the rubbish
            openings.append((rs.uniform(wake + 1.0, max(wake + 1.5, sleep - 1.0)), rs.uniform(10.0, 90.0)))
        if rs.chance(night):
            openings.append((rs.uniform(0.5, 5.0), rs.uniform(10.0, 60.0)))
        openings.sort()
        steps: list[int] = []
        last_close = st.last_ms
        for hour, held_s in openings:
            t = day_start + round(hour * MS_PER_HOUR)
            if t < last_close + MIN_GAP_MS or in_windows(st.quiet, t):
                continue
            close = t + round(held_s * 1000)
            steps.append(t << 1 | 1)
            steps.append(close << 1)
            last_close = close
        steps.reverse()
        return array("q", steps)

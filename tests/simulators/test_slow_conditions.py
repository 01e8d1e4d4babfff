"""The slow conditions the detectors anticipate: lamps degrading, batteries draining, radios fading,
each as the messages show it and as the ground truth records it."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest

from device_profiles import ProfileSet
from simulators.clock import to_ms
from simulators.detection import cases
from simulators.message import Emission
from simulators.rand import RandomStream
from simulators.scenarios import Scenario
from simulators.simulation import Simulation
from simulators.truth import ConditionRecord

DAY = 86_400_000


def run(events: list[dict[str, object]], days: float) -> tuple[list[Emission], list[ConditionRecord], str]:
    profiles = ProfileSet.shipped()
    rs = RandomStream(np.random.default_rng(4))
    inventory = cases.fleet(rs=rs, profiles=profiles, communities=1, residents=3, lamps=1, covers=1)
    kinds = {d.device_type: d.device_id for d in inventory}
    for e in events:
        e["device"] = kinds[str(e.pop("kind"))]
    scenario = Scenario.model_validate({"name": "slow", "events": events})
    sim = Simulation(inventory=inventory, start=cases.START, seed=4, profiles=profiles, scenarios=[scenario])
    emitted: list[Emission] = []
    conditions: list[ConditionRecord] = []
    for item in sim.run(until_ms=to_ms(cases.START + timedelta(days=days))):
        if isinstance(item, Emission):
            emitted.append(item)
        elif isinstance(item.record, ConditionRecord) and item.record.source == "scenario:slow":
            conditions.append(item.record)
    return emitted, conditions, str(events[0]["device"])


def test_a_lamp_degrades_linearly_then_fails() -> None:
    at = (cases.START + timedelta(days=1)).isoformat()
    emitted, conditions, lamp = run(
        [{"type": "lamp_degrading", "kind": "streetlight", "at": at, "days": 4, "to_ratio": 0.4}], days=7
    )
    full = [
        (e.t_ms, e.reading.metrics["power_w"])
        for e in emitted
        if e.reading.device_id == lamp and e.reading.metrics.get("dim_pct") == 100.0
    ]
    start = to_ms(cases.START) + DAY
    before = [p for t, p in full if t < start]
    mid = [p for t, p in full if start + 2 * DAY - DAY // 4 <= t < start + 2 * DAY + DAY // 4]
    after = [p for t, p in full if t >= start + 4 * DAY]
    rating = float(np.median(before))
    assert float(np.median(mid)) == pytest.approx(0.7 * rating, rel=0.05)  # halfway down
    assert after
    assert max(after) == 0.0  # failed: on, no power
    (c,) = conditions
    assert (c.condition, c.device_id, c.to_ratio) == ("lamp_degrading", lamp, 0.4)


def test_a_battery_drains_by_a_straight_line() -> None:
    emitted, conditions, door = run(
        [{"type": "battery_draining", "kind": "door_contact", "from_pct": 40, "days": 10}], days=8
    )
    levels = [(e.t_ms, e.reading.metrics["battery_pct"]) for e in emitted if e.reading.device_id == door]
    start = to_ms(cases.START)
    for t, level in levels:
        assert abs(level - (40 - 4 * (t - start) / DAY)) <= 0.6  # reported to a whole or half per cent
    assert levels[-1][1] < 10
    (c,) = conditions
    assert (c.condition, c.from_pct, c.days) == ("battery_draining", 40.0, 10.0)


def test_a_fading_radio_loses_more_and_more_then_goes_silent() -> None:
    at = (cases.START + timedelta(days=1)).isoformat()
    emitted, conditions, door = run(
        [{"type": "radio_fading", "kind": "door_contact", "at": at, "ramp": "4d", "silent_for": "1d"}], days=7
    )
    start = to_ms(cases.START) + DAY
    per_day = [
        sum(
            1
            for e in emitted
            if e.reading.device_id == door and start + k * DAY <= e.t_ms < start + (k + 1) * DAY
        )
        for k in range(-1, 6)
    ]
    before, ramp, silent, back = per_day[0], per_day[1:5], per_day[5], per_day[6]
    assert ramp[0] > ramp[3]
    assert sum(ramp) < 0.75 * 4 * before  # half of the ramp's messages lost, give or take
    assert silent <= 1  # the report at the end of the silence
    assert back > 0.8 * before
    assert sorted(c.condition for c in conditions) == ["device_silent", "radio_fading"]

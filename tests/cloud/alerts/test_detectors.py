"""The detectors on small constructed histories with known answers (docs/detection.md)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from cloud.alerts.detect import battery, drift, lamps, routine, water
from cloud.alerts.detect.finding import Place
from cloud.alerts.detect.history import ACTIVITY, FULL_POWER, MESSAGES, History, Series
from cloud.alerts.detect.kinds import (
    BatteryLifeRule,
    LampDriftRule,
    LampTimingRule,
    ReportDriftRule,
    RoutineRule,
    WaterTrendRule,
)
from cloud.alerts.detect.runner import DetectionState, detector_rules, run_detectors
from cloud.alerts.model import DeviceInfo, Directory
from cloud.alerts.rules import RuleBook
from cloud.alerts.sun import dusk_s

H = 3600
DAY = 86_400
PLACE = Place(timezone="Asia/Shanghai", lat=31.23, lon=121.47)
#: local midnight (Asia/Shanghai) starting Thursday 1 October 2026
DAY0 = int(datetime(2026, 10, 1, tzinfo=UTC).timestamp()) - 8 * H
TEXT = {"title": {"zh": "z {device_id}", "en": "e {device_id}"}, "detail": {"zh": "{why}", "en": "{why}"}}


def rule(cls: Any, **keys: Any) -> Any:
    return cls(kind=cls.model_fields["kind"].annotation.__args__[0], id="r", severity="minor", **TEXT, **keys)


def device(i: int, device_type: str, *, alone: bool = False) -> DeviceInfo:
    return DeviceInfo(
        device_id=f"d{i}",
        device_type=device_type,
        profile="p",
        community_id="c1",
        gateway_id="g1",
        report_interval_s=3600.0,
        lat=31.23,
        lon=121.47,
        resident_id=f"r{i}" if alone else None,
        living_alone=alone,
        building="3",
        unit="502",
    )


def doors(days: int, *, morning: float = 7.0, seed: int = 1, n: int = 1) -> History:
    """`n` residents opening the door about `morning`, 12:00 and 18:00 (local) for `days` days."""
    rng = np.random.default_rng(seed)
    dev, t = [], []
    for i in range(n):
        for d in range(days):
            base = DAY0 + d * DAY
            for hour, sd in ((morning, 0.3), (12.0, 0.5), (18.0, 0.3)):
                dev.append(i)
                t.append(base + int((hour + rng.normal(0, sd)) * H))
    devices = [device(i, "door_contact", alone=True) for i in range(n)]
    return History(devices=devices, series={ACTIVITY: Series.of(dev, t, n_devices=n)})


def at(day: int, hour: float) -> int:
    return DAY0 + day * DAY + int(hour * H)


def test_routine_fires_when_the_morning_opening_is_overdue_and_explains_why() -> None:
    r = rule(RoutineRule, margin=2.5 * H)
    h = doors(30)  # the last activity: about 18:00 on day 29
    assert routine.detect(r, h, at(30, 6.0), PLACE) == []  # asleep: the usual night
    assert routine.detect(r, h, at(30, 7.6), PLACE) == []  # a little late: within the resident's spread
    found = routine.detect(r, h, at(30, 11.0), PLACE)
    assert [f.device_id for f in found] == ["d0"]
    f = found[0]
    m = routine.model(r, h, at(30, 11.0), PLACE)
    last = int(m.last[0])
    assert 7.0 * H < last + m.usual[0] - at(29, 0) - DAY < 8.0 * H  # usually out again by about 07:xx
    assert f.started_s == last + int(m.usual[0] + r.margin)  # when the quiet time became improbable
    assert f.started_s < at(30, 11.0)
    assert f.value == 0.0  # none of the past days was this quiet at this time
    assert "no door activity since 18:" in f.why_en
    assert "yesterday" in f.why_en
    assert "usually opens the door again by 07:" in f.why_en
    assert "昨天 18:" in f.why_zh


def test_routine_is_silent_in_the_cold_start() -> None:
    r = rule(RoutineRule, margin=2.5 * H)  # min_history 21 days
    h = doors(15)
    assert routine.detect(r, h, at(16, 12.0), PLACE) == []  # 18 hours quiet: the fixed rule's business
    assert routine.detect(r, doors(25), at(25, 12.0), PLACE)  # enough history: flagged


def test_routine_adapts_to_a_changed_routine_within_two_weeks() -> None:
    r = rule(RoutineRule, margin=2.5 * H)
    before = doors(30, morning=7.0, seed=2)
    after = doors(30, morning=11.0, seed=3)  # from day 30 the resident goes out at 11:00 for good
    a, b = before.get(ACTIVITY), after.get(ACTIVITY)
    t = np.concatenate([a.t, b.t + 30 * DAY])
    h = History(devices=before.devices, series={ACTIVITY: Series.of(np.zeros(len(t), int), t, n_devices=1)})
    alarmed_days = set()
    for day in range(30, 60):
        for hour in np.arange(0, 24, 0.5):
            now = at(day, float(hour))
            if routine.detect(r, h, now, PLACE):
                alarmed_days.add(day)
    assert alarmed_days, "the first late mornings are unusual"
    assert max(alarmed_days) < 30 + 14, f"still alarming on days {sorted(alarmed_days)}"
    assert len(alarmed_days) <= 4


def test_routine_vectorised_over_residents_matches_one_by_one() -> None:
    r = rule(RoutineRule, margin=2.5 * H)
    h = doors(40, n=30, seed=5)
    now = at(40, 11.5)
    m = routine.model(r, h, now, PLACE)
    for i in range(30):
        one = History(
            devices=[h.devices[i]],
            series={ACTIVITY: Series.of(np.zeros(int((h.get(ACTIVITY).dev == i).sum()), int),
                                        h.get(ACTIVITY).t[h.get(ACTIVITY).dev == i], n_devices=1)},
        )  # fmt: skip
        single = routine.model(r, one, now, PLACE)
        assert single.usual[0] == pytest.approx(m.usual[i])
        assert single.prob[0] == pytest.approx(m.prob[i])
        assert bool(single.fire[0]) == bool(m.fire[i])
    assert m.fire.all()  # every resident is 17 hours quiet at 11:30, when they are always out by 08:30


def lamp_history(recent_w: float) -> History:
    dev, t, v = [], [], []
    for d in range(30):
        for k in range(10):  # ten readings at full output a night
            dev.append(0)
            t.append(at(d, 19 + k * 0.2))
            v.append(recent_w if d >= 28 else 100.0 + (k % 3))
    return History(devices=[device(0, "streetlight")], series={FULL_POWER: Series.of(dev, t, v, n_devices=1)})


def test_lamp_drift_against_its_own_baseline() -> None:
    r = rule(LampDriftRule)  # 12 % drop over the last 2 days
    now = at(29, 22.0)
    assert lamps.drift(r, lamp_history(95.0), now, PLACE) == []
    found = lamps.drift(r, lamp_history(80.0), now, PLACE)
    assert [f.device_id for f in found] == ["d0"]
    assert found[0].value == pytest.approx(80 / 101, abs=0.01)
    assert "under its own usual 101 W" in found[0].why_en


def test_full_output_matches_power_and_dim_by_time() -> None:
    power = Series.of([0, 0, 0], [10, 20, 30], [100.0, 50.0, 90.0], n_devices=1)
    dim = Series.of([0, 0, 0], [10, 20, 30], [100.0, 50.0, 90.0], n_devices=1)
    full = lamps.full_output(power, dim, full_dim_pct=90.0)
    assert list(full.t) == [10, 30]
    assert list(full.v) == [100.0, 100.0]


def timing_history(offset_s: float) -> History:
    days = np.arange(20, 26)
    day_index = (np.asarray([at(int(d), 12.0) for d in days]) // DAY).astype(np.int64)
    dusk = dusk_s(PLACE.lat, PLACE.lon, day_index, -2.0)
    dev, t, v = [], [], []
    for ds in dusk:
        on = int(ds + offset_s)
        dev += [0, 0, 0]
        t += [on - 900, on, on + 900]
        v += [0.0, 1.0, 1.0]
    return History(devices=[device(0, "streetlight")], series={"lamp_on": Series.of(dev, t, v, n_devices=1)})


def test_lamp_timing_against_dusk() -> None:
    r = rule(LampTimingRule)  # 20 min over 3 evenings
    now = at(26, 2.0)
    assert lamps.timing(r, timing_history(5 * 60), now, PLACE) == []
    found = lamps.timing(r, timing_history(45 * 60), now, PLACE)
    assert [f.value for f in found] == [45.0]
    assert "45 min after dusk" in found[0].why_en
    early = lamps.timing(r, timing_history(-50 * 60), now, PLACE)
    assert [f.value for f in early] == [-50.0]


def test_water_trend_projects_the_overflow() -> None:
    r = rule(WaterTrendRule, min_rate=3.0, horizon=7200.0)  # 3 mm/min, 1000 mm, 2 h, floor 200
    now = at(5, 14.0)
    t = [now - 60 * m for m in (80, 50, 20, 0)]
    rising = History(
        devices=[device(0, "manhole_cover"), device(1, "manhole_cover")],
        series={"water_level_mm": Series.of([0] * 4 + [1] * 4, t + t, [
            600 - 80 * 5, 600 - 50 * 5, 600 - 20 * 5, 600,  # 5 mm/min, 600 mm now: 80 min left
            150, 152, 149, 151,  # flat
        ], n_devices=2)},
    )  # fmt: skip
    found = water.detect(r, rising, now, PLACE)
    assert [f.device_id for f in found] == ["d0"]
    assert found[0].value == pytest.approx(80.0, abs=0.5)
    assert "5.0 mm/min" in found[0].why_en
    assert "in about 1 h 20 min" in found[0].why_en
    slow = History(devices=rising.devices[:1], series={"water_level_mm": Series.of(
        [0] * 4, t, [500, 505, 510, 515], n_devices=1)})  # fmt: skip
    assert water.detect(r, slow, now, PLACE) == []  # under 3 mm/min: rain that drains


def test_battery_days_left_and_the_maintenance_list() -> None:
    r = rule(BatteryLifeRule)  # 21-day window, empty at 5 %, incident within 10 days, list within 30
    now = at(40, 0.0)
    dev, t, v = [], [], []
    for d in range(20):
        for i, (start, per_day) in enumerate(((20.0, 0.5), (60.0, 1.5), (90.0, 0.05))):
            dev.append(i)
            t.append(now - (19 - d) * DAY)
            v.append(start - per_day * d)
    devices = [device(i, "door_contact") for i in range(3)]
    h = History(devices=devices, series={"battery_pct": Series.of(dev, t, v, n_devices=3)})
    rows = battery.outlook(r, h, now)
    # d0: 10.5 % now at 0.5/day: 11 days; d1: 31.5 % at 1.5/day: 17.7 days; d2: 89 years
    assert [(o.device_id, o.days_left) for o in rows] == [("d0", 11.0), ("d1", 17.7)]
    assert battery.detect(r, h, now, PLACE) == []  # neither within 10 days yet
    found = battery.detect(r, h, now + 2 * DAY, PLACE)  # same readings, two days on: d0 has 9 left
    assert [(f.device_id, f.value) for f in found] == [("d0", 9.0)]


def test_report_drift_against_the_devices_own_rate() -> None:
    r = rule(ReportDriftRule)  # 12 h window, 14-day baseline, 60 %
    now = at(20, 12.25)
    end = now // H * H
    dev, t, v = [], [], []
    for hour in range(16 * 24):
        ts = end - (hour + 1) * H
        # d0 and d1 report hourly; d1 is heard in only 3 of the last 12 hours. d2 (an SOS button,
        # every 4 hours) sends half its usual count in the last 12 hours. d3 (hourly) sends a
        # quarter of its usual count, but every hour: a resident staying in, not a radio.
        rows = [(0, 2.0)]
        if hour >= 12 or hour % 4 == 0:
            rows.append((1, 2.0))
        if hour % 2 == 0:
            rows.append((2, 0.5 if hour < 12 else 1.0))
        rows.append((3, 4.0 if hour >= 12 else 1.0))
        for i, count in rows:
            dev.append(i)
            t.append(ts)
            v.append(count)
    sos = device(2, "sos_button")
    h = History(
        devices=[device(0, "door_contact"), device(1, "door_contact"), sos, device(3, "door_contact")],
        series={MESSAGES: Series.of(dev, t, v, n_devices=4)},
        intervals=[3600.0, 3600.0, 14400.0, 3600.0],
    )
    r = rule(ReportDriftRule, min_expected=3.0)
    found = drift.detect(r, h, now, PLACE)
    assert [(f.device_id, f.value) for f in found] == [("d1", 0.25), ("d2", pytest.approx(0.5, abs=0.01))]
    assert "Not a single message in 9 of the last 12 hours, where it is usually heard" in found[0].why_en
    assert "Sent 3 messages in the last 12 h where it usually sends 6" in found[1].why_en


def test_detection_state_fires_once_and_clears_and_survives_a_restart() -> None:
    book = RuleBook.load()
    rules = [r for r in detector_rules(book.rules) if r.id == "routine_deviation"]
    h = doors(30)
    directory = Directory(devices={d.device_id: d for d in h.devices}, communities={}, profile_intervals={})
    state = DetectionState(directory=directory)
    first = state.apply("c1", rules, run_detectors(rules, h, at(30, 12.5), PLACE), at(30, 12.5))
    assert [(a.kind, a.subject, a.subject_kind) for a in first] == [("fire", "r0", "resident")]
    assert "no door activity since" in first[0].detail_en
    assert first[0].detail_en.endswith("Call or visit.")
    assert "请电话联系或上门查看" in first[0].detail_zh
    saved = state.take_dirty()
    again = DetectionState(directory=directory)
    again.restore(saved.items())  # type: ignore[arg-type]
    assert again.apply("c1", rules, run_detectors(rules, h, at(30, 12.7), PLACE), at(30, 12.7)) == []
    assert again.due("c1", rules, at(30, 12.75)) == []  # every 10 min
    acts = h.get(ACTIVITY)
    moved = Series.of(np.zeros(len(acts) + 1, int), [*acts.t, at(30, 12.8)], n_devices=1)
    h2 = History(devices=h.devices, series={ACTIVITY: moved})
    cleared = again.apply("c1", rules, run_detectors(rules, h2, at(30, 12.9), PLACE), at(30, 12.9))
    assert [(a.kind, a.subject) for a in cleared] == [("clear", "r0")]


def test_every_detector_kind_has_its_detector() -> None:
    """One list of kinds: the union, the runner's table and the rule files' names agree."""
    from typing import get_args

    from cloud.alerts.detect.kinds import DETECTOR_KINDS, DetectorRule
    from cloud.alerts.detect.runner import DETECTORS

    kinds = get_args(DetectorRule)
    assert set(DETECTORS) == set(kinds)
    assert sorted(DETECTOR_KINDS) == sorted(get_args(k.model_fields["kind"].annotation)[0] for k in kinds)

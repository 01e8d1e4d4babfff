"""Behaviour models look like life: routines, dusk and dawn, batteries, heartbeats."""

from __future__ import annotations

import itertools
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from device_profiles.solar import dawn_dusk
from simulators.behaviour.battery import LOW_BATTERY_PCT
from simulators.clock import from_ms, iso, to_ms
from simulators.message import Emission

from .conftest import Run, simulate

SHANGHAI = timedelta(hours=8)


@pytest.fixture(scope="module")
def week() -> Run:
    return simulate(
        devices=400,
        hours=24 * 7,
        seed=3,
        mix={"door_contact": 3, "sos_button": 1, "streetlight": 1, "manhole_cover": 1},
    )


@pytest.mark.parametrize(
    ("day", "lat", "lon", "dawn_local", "dusk_local", "offset_h"),
    [
        ("2025-06-21", 31.23, 121.47, "04:44", "19:07", 8),  # Shanghai, midsummer
        ("2025-12-21", 31.23, 121.47, "06:42", "17:01", 8),  # Shanghai, midwinter
        ("2025-03-20", 39.90, 116.40, "06:02", "18:32", 8),  # Beijing, equinox
    ],
)
def test_solar_model(
    day: str, lat: float, lon: float, dawn_local: str, dusk_local: str, offset_h: int
) -> None:
    midnight = to_ms(datetime.fromisoformat(day).replace(tzinfo=UTC))
    dawn, dusk = dawn_dusk(lat, lon, midnight)
    for ms, expected in ((dawn, dawn_local), (dusk, dusk_local)):
        local = from_ms(ms) + timedelta(hours=offset_h)
        want = datetime.fromisoformat(f"{day}T{expected}:00+00:00")
        assert abs((local - want).total_seconds()) < 15 * 60, (local, want)


def test_streetlights_follow_dusk_dawn_and_dimming(week: Run) -> None:
    lights = [e for e in week.emissions if e.reading.device_type == "streetlight"]
    assert lights
    for em in lights:
        m = em.reading.metrics
        local = from_ms(em.t_ms) + SHANGHAI
        hour = local.hour + local.minute / 60
        if 5.5 <= hour < 18.5:
            assert m["lamp_on"] == 0
            assert m["power_w"] == 0
        elif hour >= 20 and hour < 22.9:
            assert m["lamp_on"] == 1
            assert m["dim_pct"] == 100
        elif hour >= 23.1 or hour < 4.4:
            assert m["lamp_on"] == 1
            assert m["dim_pct"] == 50
    energy: dict[str, list[float]] = defaultdict(list)
    for em in lights:
        energy[em.reading.device_id].append(em.reading.metrics["energy_kwh"])
    for series in energy.values():
        assert series == sorted(series), "the energy meter only counts up"
        assert series[-1] - series[0] > 0.5  # a week of nights at 40..150 W


def test_residents_living_alone_move_less_and_earlier(week: Run) -> None:
    openings: dict[str, list[datetime]] = defaultdict(list)
    for em in week.emissions:
        if em.reading.device_type == "door_contact" and em.reading.metrics["contact_open"] == 1:
            openings[em.reading.device_id].append(from_ms(em.t_ms) + SHANGHAI)
    alone = {d.device_id for d in week.inventory if d.device_type == "door_contact" and d.living_alone}
    others = {d.device_id for d in week.inventory if d.device_type == "door_contact" and not d.living_alone}

    def per_day(ids: set[str]) -> float:
        return sum(len(openings[i]) for i in ids) / len(ids) / 7

    def first_hour(ids: set[str]) -> float:
        days: dict[tuple[str, object], float] = {}
        for i in ids:
            for t in openings[i]:
                key = (i, t.date())
                h = t.hour + t.minute / 60
                if h >= 5:  # ignore the odd night opening
                    days[key] = min(days.get(key, 24.0), h)
        return sum(days.values()) / len(days)

    assert 1.5 < per_day(alone) < 0.85 * per_day(others)
    assert per_day(others) < 12
    assert first_hour(alone) < first_hour(others) - 0.5
    night = sum(1 for ts in openings.values() for t in ts if 1 <= t.hour < 5)
    total = sum(len(ts) for ts in openings.values())
    assert night < 0.02 * total


def _active_hours_between(a: datetime, b: datetime) -> float:
    """Hours of 07:00-22:00 (local) between two local times."""
    total, day = 0.0, a.replace(hour=0, minute=0, second=0, microsecond=0)
    while day < b:
        start, end = max(a, day + timedelta(hours=7)), min(b, day + timedelta(hours=22))
        total += max(0.0, (end - start).total_seconds() / 3600)
        day += timedelta(days=1)
    return total


def test_residents_living_alone_never_go_half_an_active_day_without_opening(week: Run) -> None:
    """The shipped `resident_inactive` rule fires after 12 active hours (07:00-22:00) without
    door activity: ordinary life stays well under that, so a week raises no false alarm."""
    alone = {d.device_id for d in week.inventory if d.device_type == "door_contact" and d.living_alone}
    openings: dict[str, list[datetime]] = defaultdict(list)
    for em in week.emissions:
        if em.reading.device_id in alone and em.reading.metrics["contact_open"] == 1:
            openings[em.reading.device_id].append(from_ms(em.t_ms) + SHANGHAI)
    assert len(openings) == len(alone) > 20
    start = from_ms(week.sim.start_ms) + SHANGHAI
    end = start + timedelta(days=7)
    worst = max(
        _active_hours_between(a, b)
        for times in openings.values()
        for a, b in itertools.pairwise([start, *sorted(times), end])
    )
    assert 3.0 < worst < 10.0


def test_batteries_drain_and_mains_have_none(week: Run) -> None:
    levels: dict[str, list[float]] = defaultdict(list)
    for em in week.emissions:
        if "battery_pct" in em.reading.metrics:
            levels[em.reading.device_id].append(em.reading.metrics["battery_pct"])
        if em.reading.device_type == "streetlight":
            assert "battery_pct" not in em.reading.metrics
    assert levels
    for series in levels.values():
        assert series == sorted(series, reverse=True)
        assert all(1 <= v <= 100 for v in series)


def test_every_battery_under_15_pct_has_a_battery_low_condition(week: Run) -> None:
    """Also a battery that starts nearly flat: its first report carries the condition."""
    first_low: dict[str, Emission] = {}
    for em in week.emissions:
        level = em.reading.metrics.get("battery_pct")
        if level is not None and level < LOW_BATTERY_PCT:
            first_low.setdefault(em.reading.device_id, em)
    conditions = {c["device_id"]: c for c in week.conditions("battery_low")}
    assert first_low
    assert conditions.keys() == first_low.keys()
    for device_id, em in first_low.items():
        assert conditions[device_id]["id"] in em.conditions
        assert conditions[device_id]["at"] == iso(em.t_ms)


def test_sos_heartbeats_every_few_hours(week: Run) -> None:
    beats: dict[str, list[int]] = defaultdict(list)
    for em in week.emissions:
        if "heartbeat" in em.reading.events:
            beats[em.reading.device_id].append(em.t_ms)
    assert beats
    for times in beats.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert len(gaps) > 30  # a week of them
        assert all(3 * 3_600_000 < g < 5 * 3_600_000 for g in gaps)


def test_each_device_reports_at_its_own_interval_with_jitter(week: Run) -> None:
    covers: dict[str, list[int]] = defaultdict(list)
    for em in week.emissions:
        if em.reading.device_type == "manhole_cover":
            covers[em.reading.device_id].append(em.t_ms)
    gaps = [b - a for times in covers.values() for a, b in itertools.pairwise(times)]
    interval = 1_800_000
    # Every report is due at most 1.1 intervals after the last; shorter gaps only where a
    # change (a gas event, a lift) made the device report early.
    assert max(gaps) <= 1.1 * interval
    regular = [g for g in gaps if g >= 0.9 * interval]
    assert len(regular) >= 0.99 * len(gaps)
    # The jitter spans its band (+/- 10 %), differently each time.
    assert min(regular) < 0.91 * interval
    assert max(regular) > 1.09 * interval
    assert len(set(gaps)) > len(gaps) // 2
    assert sum(gaps) / len(gaps) == pytest.approx(1_800_000, rel=0.1)

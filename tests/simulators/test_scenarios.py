"""Each shipped scenario records its condition and emits the payloads that carry it."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from device_profiles import ProfileSet, Reading
from simulators.errors import ScenarioError
from simulators.message import Emission
from simulators.scenarios import load_scenario, shipped_scenarios

from .conftest import HOUR_MS, Run, simulate

SHANGHAI = timedelta(hours=8)


@pytest.fixture(scope="module")
def decoder() -> ProfileSet:
    return ProfileSet.shipped()


def _run(name: str, hours: float = 40) -> Run:
    return simulate(devices=240, hours=hours, seed=21, scenarios=[load_scenario(name)])


def _decode(run: Run, em: Emission) -> Reading:
    result = (
        ProfileSet.shipped()
        .with_device_map(run.inventory.device_profile_map())
        .decode(em.topic, em.payload, em.reading.received_at)
    )
    assert isinstance(result, Reading), result
    return result


def _ms(text: str) -> int:
    from datetime import datetime

    return round(datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() * 1000)


def test_shipped_scenarios_are_the_six_of_the_issue_and_the_detectors_demo() -> None:
    assert shipped_scenarios() == [
        "elderly-inactive",
        "flaky-devices",
        "gateway-storm",
        "lamp-failure",
        "manhole-lifted",
        "radio-fading",
        "sos-press",
    ]
    for name in shipped_scenarios():
        assert load_scenario(name).name == name


def test_elderly_inactive() -> None:
    run = _run("elderly-inactive", hours=36)
    (cond,) = run.conditions("resident_inactive")
    device = run.inventory[cond["device_id"]]
    assert device.living_alone
    assert cond["resident_id"] == device.resident_id
    assert cond["hours"] == 30
    start, end = _ms(cond["from"]), _ms(cond["to"])
    assert end - start == 30 * HOUR_MS
    window = [e for e in run.emissions if e.reading.device_id == device.device_id and start <= e.t_ms < end]
    assert len(window) >= 25, "the door contact keeps reporting"
    assert all(e.conditions == (cond["id"],) for e in window)
    for em in window:
        assert _decode(run, em).metrics["contact_open"] == 0.0
    before = [e for e in run.emissions if e.reading.device_id == device.device_id and e.t_ms < start]
    after_open = [e for e in before if e.reading.metrics["contact_open"] == 1.0]
    assert after_open or before, "the device reported before the window"


def test_manhole_lifted_at_0213_local() -> None:
    run = _run("manhole-lifted", hours=24)
    (cond,) = run.conditions("manhole_open")
    at = _ms(cond["at"])
    device = run.inventory[cond["device_id"]]
    assert device.device_type == "manhole_cover"
    from simulators.clock import from_ms

    local = from_ms(at) + SHANGHAI
    assert (local.hour, local.minute) == (2, 13)
    carrying = run.carrying(cond["id"])
    assert carrying
    assert carrying[0].t_ms == at, "the cover reports at once"
    for em in carrying:
        reading = _decode(run, em)
        assert reading.metrics["cover_open"] == 1.0
        assert reading.metrics["tilt_deg"] == 45.0


def test_lamp_failure_and_lamp_on_at_noon() -> None:
    run = _run("lamp-failure", hours=30)
    (failure,) = run.conditions("lamp_failure")
    (noon,) = run.conditions("lamp_on_daytime")
    assert failure["device_id"] != noon["device_id"]
    carrying = run.carrying(failure["id"])
    assert len(carrying) >= 10
    for em in carrying:
        metrics = _decode(run, em).metrics
        assert metrics["lamp_on"] == 1.0
        assert metrics["power_w"] == 0.0
        assert metrics["current_a"] == 0.0
    # Healthy lamps on at night draw power consistent with V * I * 0.95.
    lit = [
        e
        for e in run.emissions
        if e.reading.device_type == "streetlight" and e.reading.metrics["lamp_on"] == 1 and not e.conditions
    ]
    assert lit
    for em in lit[:200]:
        m = em.reading.metrics
        assert m["power_w"] > 0
        assert m["power_w"] == pytest.approx(m["voltage_v"] * m["current_a"] * 0.95, rel=0.02)
    carrying = run.carrying(noon["id"])
    assert len(carrying) >= 8
    from simulators.clock import from_ms

    for em in carrying:
        metrics = _decode(run, em).metrics
        assert metrics["lamp_on"] == 1.0
        assert metrics["dim_pct"] == 100.0
        assert metrics["power_w"] > 0
        assert 12 <= (from_ms(em.t_ms) + SHANGHAI).hour < 15


def test_sos_press_without_cancel() -> None:
    run = _run("sos-press", hours=2)
    (cond,) = [c for c in run.conditions("sos_pressed") if c["source"] == "scenario:sos-press"]
    assert cond["cancelled_at"] is None
    assert cond["resident_id"]
    (em,) = run.carrying(cond["id"])
    assert em.t_ms == _ms(cond["at"])
    assert "sos_pressed" in _decode(run, em).events
    later = [e for e in run.emissions if e.reading.device_id == cond["device_id"] and e.t_ms > em.t_ms]
    assert not any("sos_cancelled" in e.reading.events for e in later)


def test_gateway_storm_is_a_tenfold_burst() -> None:
    run = _run("gateway-storm", hours=3)
    (cond,) = run.conditions("gateway_storm")
    start, end = _ms(cond["from"]), _ms(cond["to"])
    gateway = cond["gateway_id"]

    def count(a: int, b: int) -> int:
        return sum(1 for e in run.emissions if e.gateway_id == gateway and a <= e.t_ms < b)

    before = count(start - (end - start), start)
    during = count(start, end)
    assert during >= 7 * before, (before, during)
    carrying = run.carrying(cond["id"])
    assert len(carrying) == during
    for em in carrying[:300]:
        _decode(run, em)


def test_flaky_devices_go_silent_and_come_back() -> None:
    run = _run("flaky-devices", hours=23)
    conditions = run.conditions("device_silent")
    assert len(conditions) == 3
    assert len({run.inventory[c["device_id"]].device_type for c in conditions}) == 3
    for cond in conditions:
        start, end = _ms(cond["from"]), _ms(cond["to"])
        assert end - start == 20 * HOUR_MS
        mine = [e for e in run.emissions if e.reading.device_id == cond["device_id"]]
        assert not [e for e in mine if start <= e.t_ms < end]
        (back,) = run.carrying(cond["id"])
        assert back.t_ms == end
        _decode(run, back)


def test_scenario_file_errors(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nevents:\n  - type: manhole_lifted\n    at: '25:00'\n")
    with pytest.raises(
        ScenarioError, match=r"mine\.yaml: events\.0\.manhole_lifted\.at: .*not a time of day"
    ):
        load_scenario(str(path))
    path.write_text("name: mine\nevents:\n  - type: meteor_strike\n")
    with pytest.raises(ScenarioError, match=r"events\.0"):
        load_scenario(str(path))
    with pytest.raises(ScenarioError, match=r"no scenario file or shipped scenario 'nope'"):
        load_scenario("nope")


def test_scenario_naming_unknown_device_fails(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nevents:\n  - type: sos_press\n    device: '0xdeadbeef'\n")
    with pytest.raises(ScenarioError, match="'0xdeadbeef' is not in the inventory"):
        simulate(devices=20, hours=1, scenarios=[load_scenario(str(path))])


def test_custom_scenario_with_explicit_device_and_time(tmp_path: Path) -> None:
    probe = simulate(devices=40, hours=0.01)
    button = next(d for d in probe.inventory if d.device_type == "sos_button")
    path = tmp_path / "press.yaml"
    path.write_text(
        f"name: press\nevents:\n  - type: sos_press\n    device: '{button.device_id}'\n"
        "    at: '2025-06-01T03:00:00+00:00'\n"
    )
    run = simulate(devices=40, hours=4, scenarios=[load_scenario(str(path))])
    (cond,) = [c for c in run.conditions("sos_pressed") if c["source"] == "scenario:press"]
    assert cond["device_id"] == button.device_id
    assert cond["at"] == "2025-06-01T03:00:00.000Z"

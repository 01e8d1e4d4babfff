"""Rule files: the shipped defaults load, overrides merge by id and per community, and every
problem is reported with its file, rule and key (``linli alerts check``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cloud.alerts.rulebase import parse_duration
from cloud.alerts.rules import (
    SHIPPED_DIR,
    CompositeRule,
    EventRule,
    RuleBook,
    ThresholdRule,
    describe,
)
from cloud.errors import AlertRuleError
from simulators.verify_alerts import DETECTION

TEXT = '    title: {zh: "z {device_id}", en: "e {device_id}"}\n    detail: {zh: "z", en: "e"}\n'


def linli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_profiles.console", *args], capture_output=True, text=True, check=False
    )


def test_shipped_defaults_cover_every_condition_the_simulators_produce() -> None:
    book = RuleBook.load()
    ids = {r.id for r in book.rules}
    for condition, detection in DETECTION.items():
        if detection is not None:
            assert ids & set(detection.rules), f"no shipped rule detects {condition}"
    assert {"gas_alarm", "water_alarm", "gateway_offline"} <= ids  # the devices' own alarms, gateways
    assert {r.kind for r in book.rules} == {
        "threshold",
        "event",
        "command",
        "state_duration",
        "absence",
        "inactivity",
        "composite",
        "routine",
        "lamp_drift",
        "lamp_timing",
        "water_trend",
        "battery_life",
        "report_drift",
    }
    sos = next(r for r in book.rules if r.id == "sos_pressed")
    assert isinstance(sos, EventRule)
    assert sos.latched
    assert sos.severity == "critical"
    assert sorted(p.name for p in SHIPPED_DIR.glob("*.yaml")) == [
        "detectors.yaml",
        "devices.yaml",
        "environment.yaml",
        "manholes.yaml",
        "residents.yaml",
        "streetlights.yaml",
    ]
    for r in book.rules:
        assert describe(r)


def test_overrides_by_id_per_community_and_switched_off(tmp_path: Path) -> None:
    (tmp_path / "all.yaml").write_text("rules:\n  - {id: battery_low, value: 10, clear: 12}\n")
    (tmp_path / "c7.yaml").write_text(
        "community: c7\nrules:\n  - {id: lamp_on_daytime, enabled: false}\n"
        "  - id: lamp_failure\n    for: 30m\n"
        "  - id: pump_hot\n    kind: threshold\n    severity: info\n    metric: temp_c\n    op: '>'\n"
        "    value: 80\n" + TEXT
    )
    book = RuleBook.load(paths=[tmp_path])
    battery = next(r for r in book.rules if r.id == "battery_low")
    assert isinstance(battery, ThresholdRule)
    assert (battery.value, battery.clear, battery.severity) == (10, 12, "minor")
    assert "pump_hot" not in {r.id for r in book.rules}
    c7 = {r.id: r for r in book.for_community("c7")}
    assert "lamp_on_daytime" not in c7
    assert "pump_hot" in c7
    lamp = c7["lamp_failure"]
    assert isinstance(lamp, CompositeRule)
    assert lamp.for_ == 1800
    assert c7["battery_low"] == battery  # the global override applies there too
    assert book.for_community("c8") == book.rules
    assert book.communities == ("c7",)
    only = book.only("battery_low")
    assert [r.id for r in only.rules] == ["battery_low"]


def test_every_problem_is_reported_with_file_rule_and_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "rules:\n"
        "  - id: t1\n    kind: threshold\n    severity: urgent\n    metric: x\n    op: '>'\n    value: 1\n"
        "    for: soon\n" + TEXT + "  - id: e1\n    kind: event\n    severity: info\n    events: []\n"
        '    title: {zh: "z {nope}", en: "e"}\n    detail: {zh: "z", en: "e"}\n'
        "  - {id: battery_low, kind: event}\n"
        "  - {id: brand_new, severity: info}\n"
        "  - {id: sos_pressed, note_events: [sos_pressed]}\n"
    )
    with pytest.raises(AlertRuleError) as info:
        RuleBook.load(paths=[bad, tmp_path / "missing.yaml"])
    found = {(p.rule, p.key) for p in info.value.problems}
    assert {("t1", "severity"), ("t1", "for"), ("e1", "events"), ("e1", "title.zh")} <= found
    assert ("battery_low", "kind") in found  # an override cannot change the kind
    assert ("brand_new", "kind") in found  # a new rule needs one
    noted = [p for p in info.value.problems if p.rule == "sos_pressed"]
    assert "sos_pressed: an event fires, clears or is noted, not two of these" in noted[0].detail
    assert any(p.file.endswith("missing.yaml") for p in info.value.problems)
    assert all(p.file for p in info.value.problems)
    done = linli("alerts", "check", "--rules", str(bad))
    assert done.returncode == 2
    assert f"{bad}: rule t1: severity:" in done.stderr
    assert "unknown placeholder" in done.stderr
    ok = linli("alerts", "check")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("26 rules ok")


def test_not_yaml_and_not_rules(tmp_path: Path) -> None:
    (tmp_path / "a.yaml").write_text("rules: [\n")
    (tmp_path / "b.yaml").write_text("- 1\n")
    (tmp_path / "c.yaml").write_text(
        "rules:\n  - id: x\n    kind: absence\n    scope: moon\n    severity: info\n" + TEXT
    )
    with pytest.raises(AlertRuleError) as info:
        RuleBook.load(shipped=False, paths=[tmp_path])
    details = [str(p) for p in info.value.problems]
    assert any("a.yaml" in d and "not YAML" in d for d in details)
    assert any("b.yaml" in d and "rules" in d for d in details)
    assert any("c.yaml: rule x: scope" in d for d in details)


@pytest.mark.parametrize(
    ("text", "seconds"), [("90s", 90), ("5m", 300), ("2h", 7200), ("1d", 86400), (30, 30), ("250ms", 0.25)]
)
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "-5m", "5 weeks", True])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)

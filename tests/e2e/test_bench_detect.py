"""``linli bench detect --quick --json`` runs end to end and prints every figure (a smoke run of
the benchmark's machinery on a small fleet; the full run's figures are in docs/detection.md)."""

from __future__ import annotations

import pytest

from tests.bench import bench_figures

pytestmark = pytest.mark.slow


def test_bench_detect_quick_scores_every_detector() -> None:
    figures = bench_figures("detect", "--quick")
    assert figures["days"] == 30
    assert figures["residents"] == 100
    routine = figures["routine_deviation"]
    assert routine["cases"] == 10
    assert routine["recall"] >= 0.8  # ten cases: one may be missed by chance
    assert routine["median_lead_h"] > 0
    for name, cases in (("lamp_degrading", 4), ("report_interval_drift", 5)):
        assert figures[name]["cases"] == cases, name
        assert figures[name]["recall"] > 0, name
    assert {"cases", "episodes", "precision"} <= set(figures["water_rising"])  # rain: none in some runs
    battery = figures["battery_end_of_life"]["draining"]
    assert battery["devices"] >= 1
    assert battery["share_within_3_days"] is not None
    assert figures["cpu_ms_fleet_run"] > 0
    assert set(figures["cpu_ms_per_community_run"]) == {"c001", "c002"}
    assert set(figures["targets"]) == {
        "routine_recall_0_9",
        "routine_precision_0_9",
        "routine_median_lead_2h",
        "battery_within_3_days",
        "cpu_under_1s",
    }

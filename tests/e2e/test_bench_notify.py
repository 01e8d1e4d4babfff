"""``linli bench notify --quick --json`` runs end to end and prints every figure (a smoke run of
the benchmark's machinery, not a timing test: the targets live in docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from tests.bench import bench_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_notify_quick_prints_the_figures() -> None:
    figures = bench_figures("notify", "--quick")
    for key in (
        "sos_to_push_p50_ms",
        "sos_to_push_p99_ms",
        "sos_to_push_p99_ms_during_drain",
        "notifications_per_s",
    ):
        assert figures[key] > 0, key
    assert figures["presses"] == 8
    assert figures["presses_during_drain"] == 3
    assert len(figures["drain_s"]) == 1
    assert figures["sos_to_push_p50_ms"] <= figures["sos_to_push_p99_ms"] <= figures["sos_to_push_max_ms"]
    stages = figures["slowest_during_drain_ms"]
    # the steps of the slowest press in order, the push its total ("owed" is the escalator's step
    # time, read before it looked for due incidents: it may precede the incident's commit a little)
    assert 0 < stages["ingest"] <= stages["incident"] <= stages["push"], stages
    assert 0 < stages["owed"] <= stages["sent"], stages
    assert abs(stages["push"] - figures["sos_to_push_max_ms_during_drain"]) <= 0.2, stages

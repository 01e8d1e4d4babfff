"""``linli bench alerts --quick --json`` runs end to end and prints every figure (a smoke run of
the benchmark's machinery, not a timing test: the targets live in docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from tests.bench import bench_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_alerts_quick_prints_the_figures() -> None:
    figures = bench_figures("alerts", "--quick")
    for key in (
        "rows_evaluated_per_s",
        "ingest_rows_per_s_same_run",
        "sos_to_incident_p50_ms",
        "sos_to_incident_p99_ms",
    ):
        assert figures[key] > 0, key
    assert figures["throughput_readings"] == figures["throughput_readings_published"]
    assert figures["sos_presses"] == 8
    assert len(figures["sos_after_outage_ms"]) == 1
    assert (
        figures["sos_to_incident_p50_ms"]
        <= figures["sos_to_incident_p99_ms"]
        <= figures["sos_to_incident_max_ms"]
    )

"""``linli bench console`` runs end to end on a small community and reports what it drew."""

from __future__ import annotations

import pytest

from tests.bench import bench_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_console_benchmark_reports_its_figures() -> None:
    figures = bench_figures("console", "--devices", "300", "--incidents", "40", "--runs", "1")
    assert figures["board_ms"]["shown"] == 40
    assert figures["map_ms"]["shown"] == 300
    for name in ("board_ms", "map_ms"):
        assert 0 < figures[name]["median"] <= figures[name]["max"]

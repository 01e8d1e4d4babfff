"""`linli bench fieldlink` runs, and counts every message exactly once (the figures themselves are
in docs/benchmarks.md, not asserted here)."""

from __future__ import annotations

import pytest

from edge.bench_fieldlink import BenchError, _require, run_bench

pytestmark = pytest.mark.integration


def test_the_bench_drains_every_message_through_the_lean_link() -> None:
    said: list[str] = []
    figures = run_bench(impls=["lean"], messages=3000, rounds=2, log=said.append)
    assert figures["messages"] == 3000
    assert set(figures["lean"]) == {"readings_per_s", "cpu_us_per_reading"}
    assert figures["lean"]["readings_per_s"] > 0
    assert len(said) == 2  # one line per round


def test_a_missing_alternative_is_a_clear_error() -> None:
    with pytest.raises(
        BenchError, match="no_such_mqtt_client is not installed: pip install no_such_mqtt_client"
    ):
        _require("no_such_mqtt_client")

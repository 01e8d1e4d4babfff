"""``linli bench commands --quick --json`` runs the whole chain with the API, the command sender and
a simulated streetlight that obeys, and prints every figure: each command dimmed the lamp and came
back confirmed (a smoke run of the benchmark's machinery, not a timing test: the targets live in
docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from tests.bench import bench_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_commands_quick_confirms_every_command_through_the_chain() -> None:
    figures = bench_figures("commands", "--quick")
    assert figures["commands"] == 10
    for key in ("api_to_confirmed_p50_ms", "api_post_p50_ms", "to_gateway_p50_ms", "to_device_p50_ms"):
        assert figures[key] > 0, key
    assert (  # each command's stages in order, so their medians too
        figures["to_gateway_p50_ms"]
        <= figures["to_device_p50_ms"]
        <= figures["confirmed_at_gateway_p50_ms"]
        <= figures["api_to_confirmed_p50_ms"]
    )
    assert (
        figures["api_to_confirmed_p50_ms"]
        <= figures["api_to_confirmed_p99_ms"]
        <= figures["api_to_confirmed_max_ms"]
    )
    assert figures["background_stored_readings_per_s"] > 0  # the load went through (a rate: not asserted)

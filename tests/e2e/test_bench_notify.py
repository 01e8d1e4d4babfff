"""``linli bench notify --quick --json`` runs end to end and prints every figure (a smoke run of
the benchmark's machinery, not a timing test: the targets live in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_notify_quick_prints_the_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "bench", "notify", "--quick", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
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

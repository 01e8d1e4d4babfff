"""``linli bench console`` runs end to end on a small community and reports what it drew."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_the_console_benchmark_reports_its_figures() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "bench", "console", "--json",
         "--devices", "300", "--incidents", "40", "--runs", "1"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    figures = json.loads(done.stdout)
    assert figures["board_ms"]["shown"] == 40
    assert figures["map_ms"]["shown"] == 300
    for name in ("board_ms", "map_ms"):
        assert 0 < figures[name]["median"] <= figures[name]["max"]

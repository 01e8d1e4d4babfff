"""Smoke runs of ``linli bench NAME``: the benchmark as a user runs it, its figures checked for
shape and sense (never for speed: the targets live in docs/benchmarks.md)."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def bench_figures(name: str, *args: str, timeout: float = 300) -> dict[str, Any]:
    """The figures `linli bench NAME ARGS --json` prints last; its error output when it fails."""
    done = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "bench", name, *args, "--json"],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figures

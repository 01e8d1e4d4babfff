"""`linli chaos` for 3 minutes: two gateways, two ingest workers and the alert service while each
edge agent and each ingest worker is killed three times, the cloud broker restarts, the database
stops for 30 s and one gateway's link is cut for a minute; then an exact comparison.

docs/reliability.md records the 30-minute run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_three_minutes_of_chaos_lose_nothing_and_store_nothing_twice(tmp_path: Path) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "chaos",
            "--minutes",
            "3",
            "--workdir",
            str(tmp_path / "chaos"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    assert done.stdout, done.stderr[-3000:]
    summary = json.loads(done.stdout)
    for name in ("timeline", "examples"):
        print(name, json.dumps(summary[name], indent=1)[:3000])
    assert (summary["kills"]["edge"], summary["kills"]["ingest"]) == (6, 6)
    assert summary["broker_restarts"] == 1
    assert summary["database_down_s"] >= 29
    assert summary["link_cut_s"] >= 59
    assert summary["unplanned_restarts"] == {}
    assert summary["expected"] > 30_000
    assert summary["stored"] == summary["expected"]
    assert summary["stored_rows"] == summary["expected_rows"]
    assert summary["missing_rows"] == summary["duplicated_rows"] == summary["wrong"] == 0
    assert summary["unexpected_rows"] == 0
    assert summary["missing_events"] == summary["duplicated_events"] == 0
    alerts = summary["alerts"]
    assert alerts["conditions"] > 0
    assert alerts["missed"] == alerts["doubled"] == 0
    assert summary["exact"] is True
    assert done.returncode == 0

"""`linli bench edge` starts the agent as deploy/linli-edge.service does: same command, same
environment, so its memory figures are the service's."""

from __future__ import annotations

import shlex
import shutil
import subprocess
from pathlib import Path

import pytest

from edge.bench import SERVICE_COMMAND, SERVICE_ENVIRONMENT

UNIT = Path(__file__).resolve().parents[2] / "deploy" / "linli-edge.service"


def _settings(key: str) -> list[str]:
    return [
        line.split("=", 1)[1]
        for line in UNIT.read_text().splitlines()
        if line.startswith(f"{key}=") and not line.startswith("#")
    ]


def test_the_bench_runs_the_units_command_line() -> None:
    (exec_start,) = _settings("ExecStart")
    program, *args = shlex.split(exec_start)
    assert Path(program).name == "linli"
    assert tuple(args[: len(SERVICE_COMMAND)]) == SERVICE_COMMAND
    assert len(args) == len(SERVICE_COMMAND) + 1  # the configuration file, nothing else


def test_the_bench_uses_the_units_environment() -> None:
    environment = dict(item.split("=", 1) for line in _settings("Environment") for item in shlex.split(line))
    assert environment == SERVICE_ENVIRONMENT


def test_the_unit_is_hardened_as_systemd_measures_it(tmp_path: Path) -> None:
    """`systemd-analyze security` on the unit file: exposure at most 2.0 ("OK"; it measured 1.4)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text())
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--threshold=20", "--no-pager", str(unit)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    overall = [line for line in done.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == 0, overall[0]  # --threshold=20: exposure 2.0 at most
    for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "Restart=always", "WatchdogSec=30"):
        assert setting in UNIT.read_text().splitlines()
    assert _settings("User") == ["linli-edge"]
    assert _settings("MemoryMax")

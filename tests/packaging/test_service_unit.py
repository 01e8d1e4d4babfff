"""`linli bench edge` starts the agent as deploy/linli-edge.service does: same command, same
environment, so its memory figures are the service's."""

from __future__ import annotations

import shlex
from pathlib import Path

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

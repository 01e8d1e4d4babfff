"""A supervisor that dies without stopping its children (SIGKILL, a crash, a broken pipe: Ctrl-C
on ``make demo | tee demo.log`` kills the pipe's reader first) leaves nothing running: a broker,
a database and a supervised child all end with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SUPERVISOR = """
import sys, time
from pathlib import Path
from simulators.demo.children import Child
from simulators.services import MosquittoBroker, PostgresCluster

root = Path(sys.argv[1])
MosquittoBroker(workdir=root / "mqtt").start()
PostgresCluster(datadir=root / "pg", durable=False).start()
Child.python(name="child", module="http.server", args=["0", "--bind", "127.0.0.1", "--directory", str(root)],
             log=root / "child.log").start()
print("ready", flush=True)
time.sleep(600)
"""


def _left(root: Path) -> list[str]:
    found = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True, check=False)
    return [line for line in found.stdout.splitlines() if "pgrep" not in line]


def test_children_of_a_killed_supervisor_end_with_it() -> None:
    # outside pytest's temporary folder: the cluster's OS user must reach it (as in the demo test)
    root = Path(tempfile.mkdtemp(prefix="linli-test-orphans-"))
    os.chmod(root, 0o755)  # noqa: S103 - the cluster's OS user must enter it
    proc = subprocess.Popen(
        [sys.executable, "-c", SUPERVISOR, str(root)],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "ready", proc.wait(timeout=60)
        running = _left(root)
        assert len(running) >= 3, running  # mosquitto, postgres, the child (and the reaper)
        proc.kill()
        proc.wait(timeout=10)
        deadline = time.monotonic() + 30
        while _left(root) and time.monotonic() < deadline:
            time.sleep(0.2)  # the children are ending: nothing to wait on but the process table
        assert _left(root) == [], "left running after their supervisor died"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()
        for line in _left(root):
            os.kill(int(line.split()[0]), signal.SIGKILL)
        subprocess.run(["rm", "-rf", str(root)], check=False)

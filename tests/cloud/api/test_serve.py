"""``linli cloud api`` as deployed: ``[api] workers`` processes share the port, and SIGTERM ends
them all with status 0."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from simulators.services import free_port

pytestmark = [pytest.mark.integration]

PEOPLE = """\
version: 1
staff:
  - {id: q-sun, name: 孙洁, roles: [district], communities: ["*"]}
"""


def _children(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False).stdout
    return [int(p) for p in out.split()]


def test_two_workers_answer_and_stop_together(tmp_path: Path, migrated_url: str) -> None:
    port = free_port("127.0.0.1")
    (tmp_path / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'database_url = "{migrated_url}"\n[incidents]\npeople = "people.yaml"\n'
        f'[api]\ntoken_key_file = "key"\nworkers = 2\n[api.http]\naddress = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "device_profiles.console", "cloud", "api", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        pause = threading.Event()
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
            while True:
                try:
                    if c.get("/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
                assert time.monotonic() < deadline, "the API did not start"
                pause.wait(0.05)  # a process starting: nothing to wait on but its port
            workers = _children(proc.pid)
            assert len(workers) == 1  # the first process and one forked worker
            assert all(c.get("/healthz").status_code == 200 for _ in range(20))
            assert c.get("/api/v1/devices").status_code == 401
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        for pid in workers:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()

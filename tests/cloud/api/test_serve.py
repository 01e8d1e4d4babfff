"""``linli cloud api`` as deployed: ``[api] workers`` processes share the port (a socket each, so
connections are spread over them), and SIGTERM ends them all with status 0."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import psutil
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


def _listening(pid: int, port: int) -> set[str]:
    """The listening sockets (``socket:[inode]``) `pid` holds on `port`."""
    return {
        os.readlink(f"/proc/{pid}/fd/{c.fd}")
        for c in psutil.Process(pid).net_connections("tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr[1] == port
    }


def _spread(port: int, pids: list[int], clients: int = 32) -> dict[int, int]:
    """Open `clients` keep-alive connections at once, each answered once; how many each of
    `pids` holds."""
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    try:
        for s in conns:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        for s in conns:
            assert s.recv(65536).startswith(b"HTTP/1.1 200"), "every connection is answered"
        return {
            pid: sum(
                1
                for c in psutil.Process(pid).net_connections("tcp")
                if c.laddr and c.laddr[1] == port and c.status == psutil.CONN_ESTABLISHED
            )
            for pid in pids
        }
    finally:
        for s in conns:
            s.close()


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
            listening = [_listening(pid, port) for pid in (proc.pid, *workers)]
            assert all(listening), listening
            assert not set.intersection(*listening), listening  # a socket each
            spread = _spread(port, [proc.pid, *workers])
            # each process has its own socket: connections opened at once land on both (with
            # one shared socket the first to wake accepted all of them)
            assert min(spread.values()) >= 4, spread
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

"""``linli cloud api`` as deployed: ``[api] workers`` processes share the port (a socket each, so
connections are spread over them, and evened out by the processes), and SIGTERM ends them all with
status 0."""

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


def _held(port: int, pids: list[int]) -> dict[int, int]:
    """How many established connections on `port` each of `pids` holds."""
    return {
        pid: sum(
            1
            for c in psutil.Process(pid).net_connections("tcp")
            if c.laddr and c.laddr[1] == port and c.status == psutil.CONN_ESTABLISHED
        )
        for pid in pids
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
        return _held(port, pids)
    finally:
        for s in conns:
            s.close()


def _answer(s: socket.socket) -> bytes:
    """One whole answer read from `s`; its head."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, "the connection closed before its answer"
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.lower().split(b"\r\n")
    length = next(int(line.split(b":", 1)[1]) for line in lines if line.startswith(b"content-length:"))
    while len(body) < length:
        body += s.recv(65536)
    return head + b"\r\n"


def _rebalanced(port: int, pids: list[int], clients: int = 32, deadline_s: float = 30.0) -> dict[int, int]:
    """`clients` keep-alive connections sending requests round after round, each opened anew when
    an answer says ``Connection: close`` (as HTTP/1.1 clients do), until the processes hold equal
    shares or the deadline passes; how many each of `pids` holds then."""
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(clients)]
    reopened = 0
    deadline = time.monotonic() + deadline_s

    try:
        while time.monotonic() < deadline:
            for i, s in enumerate(conns):
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
                head = _answer(s)
                assert head.startswith(b"HTTP/1.1 200"), head
                if b"\r\nconnection: close\r\n" in head.lower():
                    s.close()
                    conns[i] = socket.create_connection(("127.0.0.1", port))
                    reopened += 1
            counts = _held(port, pids)
            if max(counts.values()) - min(counts.values()) <= 1 and sum(counts.values()) == clients:
                break
        assert reopened > 0 or max(counts.values()) - min(counts.values()) <= 1
        return counts
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
            balanced = _rebalanced(port, [proc.pid, *workers])
            assert sorted(balanced.values()) == [16, 16], balanced
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

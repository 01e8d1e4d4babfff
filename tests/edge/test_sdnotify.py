"""systemd's notifications: READY=1, WATCHDOG=1 while healthy, STOPPING=1, on a real datagram
socket, from the notifier alone and from `linli edge run` as the unit starts it."""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edge.sdnotify import Notifier
from simulators.services import MosquittoBroker
from tests.edge.conftest import AgentProcess, Fleet, write_config


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(10)
    yield path, sock
    sock.close()


def _receive(sock: socket.socket, until: str) -> list[str]:
    """Datagrams received up to and including `until`."""
    got: list[str] = []
    while until not in got:
        got.append(sock.recv(256).decode())
    return got


def test_pings_only_while_healthy(listener: tuple[str, socket.socket]) -> None:
    path, sock = listener
    notifier = Notifier(environ={"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "20000"})
    assert notifier.interval_s == 0.01
    checks: list[bool] = []

    async def run() -> None:
        asked = asyncio.Event()

        def healthy() -> bool:
            checks.append(len(checks) < 3)  # healthy three times, then wedged
            if len(checks) == 6:
                asked.set()
            return checks[-1]

        task = asyncio.create_task(notifier.watchdog(healthy))
        await asked.wait()
        task.cancel()

    asyncio.run(run())
    notifier.notify("STOPPING=1")
    assert _receive(sock, "STOPPING=1") == ["WATCHDOG=1"] * 3 + ["STOPPING=1"]


def test_abstract_socket_and_a_watchdog_meant_for_another_process() -> None:
    name = f"linli-test-{uuid.uuid4().hex[:8]}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(10)
        Notifier(environ={"NOTIFY_SOCKET": "@" + name}).notify("READY=1")
        assert sock.recv(64) == b"READY=1"
    other = Notifier(environ={"NOTIFY_SOCKET": "@x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"})
    assert other.interval_s is None
    quiet = Notifier(environ={})
    assert not quiet.enabled
    quiet.notify("READY=1")  # outside systemd: nothing, no error


@pytest.mark.integration
def test_the_agent_says_ready_feeds_the_watchdog_and_says_stopping(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    listener: tuple[str, socket.socket],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    path, sock = listener
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.setenv("WATCHDOG_USEC", "400000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    field, cloud = make_broker(), make_broker()
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=Fleet({"generic_lorawan/door_contact": 2}).inventory(tmp_path / "inv.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buf.db",
    )
    agent = agent_factory(cfg)
    agent.start()
    assert _receive(sock, "READY=1")[-1] == "READY=1"
    assert _receive(sock, "WATCHDOG=1")[-1] == "WATCHDOG=1"
    assert _receive(sock, "WATCHDOG=1")[-1] == "WATCHDOG=1"
    assert agent.proc is not None
    assert os.environ["NOTIFY_SOCKET"] == path
    assert agent.terminate() == 0
    assert "STOPPING=1" in _receive(sock, "STOPPING=1")

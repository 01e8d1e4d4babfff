"""A full disk under the running agent, between real brokers: the real reason reaches the log and
``/healthz``, nothing the agent could not commit is acknowledged, and it recovers when space returns.

The agent runs in-process on its own event-loop thread, so the test can cap the buffer's
database with SQLite's ``max_page_count`` (on the buffer's worker thread): past the cap SQLite
fails every write with "database or disk is full", exactly as on a full disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from edge.agent import Agent
from edge.config import load_config
from edge.errors import EdgeError
from simulators.services import MosquittoBroker
from tests.edge.conftest import Collector, Fleet, Publisher, write_config

pytestmark = pytest.mark.integration

SOS = "generic_lorawan/sos_button"
T = TypeVar("T")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self._guard = threading.Lock()
        self.records: list[tuple[str, str, dict[str, Any]]] = []

    def emit(self, record: logging.LogRecord) -> None:
        with self._guard:
            self.records.append((record.name, record.getMessage(), dict(getattr(record, "fields", {}))))

    def find(self, event: str, logger: str | None = None) -> list[dict[str, Any]]:
        with self._guard:
            return [f for name, e, f in self.records if e == event and logger in (None, name)]


class AgentThread:
    """`Agent.run()` on its own event loop in a thread; `call` runs a coroutine on that loop."""

    def __init__(self, config: Path) -> None:
        self.agent = Agent(config=load_config(config), install_signals=False)
        self.loop = asyncio.new_event_loop()
        self.error: EdgeError | None = None
        self.logs = _Records()
        edge_logger = logging.getLogger("edge")
        self._level = edge_logger.level
        edge_logger.addHandler(self.logs)
        edge_logger.setLevel(logging.INFO)
        self.thread = threading.Thread(target=self._main, name="agent")
        self.thread.start()

    def _main(self) -> None:
        try:
            self.loop.run_until_complete(self.agent.run())
        except EdgeError as exc:  # handed to the test thread, which fails on it
            self.error = exc

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def wait(self, what: str, predicate: Callable[[], bool], timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            assert self.thread.is_alive(), f"the agent stopped: {self.error!r}"
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for {what}; log: {self.logs.records[-20:]}")

    def wait_log(self, event: str, logger: str | None = None, *, count: int = 1) -> dict[str, Any]:
        self.wait(event, lambda: len(self.logs.find(event, logger)) >= count)
        return self.logs.find(event, logger)[count - 1]

    def stop(self) -> None:
        if self.thread.is_alive():
            self.loop.call_soon_threadsafe(self.agent.stop)
            self.thread.join(30)
        self.loop.run_until_complete(self.loop.shutdown_default_executor())
        self.loop.close()
        edge_logger = logging.getLogger("edge")
        edge_logger.removeHandler(self.logs)
        edge_logger.setLevel(self._level)


@pytest.fixture
def agent_threads() -> Iterator[list[AgentThread]]:
    made: list[AgentThread] = []
    yield made
    for agent in made:
        agent.stop()
        assert agent.error is None, repr(agent.error)


def _healthz(port: int) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_a_full_disk_shows_its_reason_keeps_messages_unacknowledged_and_recovers(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_threads: list[AgentThread],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({SOS: 4})
    field, cloud = make_broker(), make_broker()
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=fleet.inventory(tmp_path / "inventory.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        sections={"http": {"address": "127.0.0.1:0"}, "status": {"interval_s": 0.2}},
    )
    col = Collector(cloud)
    collectors.append(col)
    run = AgentThread(cfg)
    agent_threads.append(run)
    agent = run.agent
    run.wait_log("subscribed", "edge.mqtt.field")
    run.wait(
        "a healthy /healthz", lambda: agent.endpoint is not None and _healthz(agent.endpoint.port)[0] == 200
    )
    assert agent.endpoint is not None
    port = agent.endpoint.port

    # The cloud goes away, so nothing leaves the buffer; then the disk "fills".
    run.wait_log("connected", "edge.mqtt.cloud")  # a link that never came up is not lost
    cloud.stop()
    run.wait_log("connection_lost", "edge.mqtt.cloud")
    run.call(agent.buffer.set_max_pages(1))  # never below the current size: no page more
    pub = Publisher(field)
    publishers.append(pub)
    sent: list[str] = []
    for i in range(400):
        topic, payload, r = fleet.payload(fleet.devices[i % 4], events=("sos_pressed",))
        pub.publish(topic, payload)
        sent.append(r.reading_id)

    failed = run.wait_log("buffer_failed", "edge.agent")
    assert "database or disk is full" in failed["error"]
    assert "no transaction is active" not in failed["error"]
    acks = agent.field.acks_sent
    run.wait(
        "/healthz to show the reason",
        lambda: "database or disk is full" in _healthz(port)[1],
    )
    status, body = _healthz(port)
    assert status == 503
    doc = json.loads(body)
    assert doc["buffer"] == "failed"
    assert "database or disk is full" in doc["buffer_error"]
    # Refreshing /healthz took retries of the failed commit: none of them acknowledged anything.
    assert agent.field.acks_sent == acks
    stats = run.call(agent.buffer.stats())
    assert stats.alarm_readings < len(sent)
    assert run.thread.is_alive()

    # Space returns: the same commit goes through, intake resumes, everything arrives once.
    run.call(agent.buffer.set_max_pages(None))
    run.wait_log("buffer_accepting", "edge.agent")
    cloud.start()
    assert col.wait_for(lambda c: c.reading_ids() >= set(sent), timeout=60), len(col.reading_ids())
    readings = [r.reading_id for r in col.readings() if r.reading_id in set(sent)]
    assert sorted(readings) == sorted(sent)
    run.wait("a healthy /healthz again", lambda: _healthz(port)[0] == 200)
    assert len(run.logs.find("buffer_failed")) == 1  # logged once, not once per retry

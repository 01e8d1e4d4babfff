"""`Shares` and `Rebalance`: a process above its share of the connections asks one client at a
time to reconnect; one at or below its share never does."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from cloud.api.balance import Rebalance, Shares


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


async def _app(scope: Any, receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"ok"})


def _answer(rebalance: Rebalance) -> list[tuple[bytes, bytes]]:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    async def receive() -> Any:
        return {"type": "http.request"}

    asyncio.run(rebalance({"type": "http"}, receive, send))
    headers: list[tuple[bytes, bytes]] = sent[0]["headers"]
    assert sent[1]["body"] == b"ok"
    return headers


def test_the_fair_share_is_the_total_over_the_processes_rounded_up() -> None:
    shares = Shares(processes=3)
    shares.set(1, 10)
    shares.set(2, 10)
    assert shares.over(0, 12)  # 32 / 3 -> 11
    assert shares.counts() == [12, 10, 10]
    assert not shares.over(0, 11)  # 31 / 3 -> 11
    assert not shares.over(0, 0)


def test_the_counts_are_shared_with_a_forked_process() -> None:
    shares = Shares(processes=2)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child's exit status is its answer
        shares.set(1, 7)
        os._exit(0)
    assert os.waitpid(pid, 0)[1] == 0
    assert shares.counts() == [0, 7]


def test_a_process_over_its_share_closes_one_connection_per_pause() -> None:
    shares = Shares(processes=2)
    shares.set(1, 12)
    clock = Clock()
    connections: set[object] = {object() for _ in range(20)}
    rebalance = Rebalance(_app, shares=shares, process=0, pause_s=0.05, clock=clock)
    rebalance.watch(connections)
    assert (b"connection", b"close") in _answer(rebalance)
    assert (b"connection", b"close") not in _answer(rebalance)  # within the pause
    clock.now += 0.06
    assert (b"connection", b"close") in _answer(rebalance)
    assert rebalance.closed == 2
    connections.clear()
    connections.update(object() for _ in range(16))
    shares.set(1, 15)  # 16 of 31: its share, rounded up
    clock.now += 1
    assert _answer(rebalance) == [(b"content-type", b"text/plain")]
    assert rebalance.closed == 2


def test_other_scopes_pass_through() -> None:
    shares = Shares(processes=2)
    rebalance = Rebalance(_app, shares=shares, process=0)
    rebalance.watch({object() for _ in range(5)})
    seen: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append(scope["type"])

    rebalance.app = app
    asyncio.run(rebalance({"type": "lifespan"}, lambda: None, lambda m: None))
    assert seen == ["lifespan"]
    assert shares.counts() == [0, 0]

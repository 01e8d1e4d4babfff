"""`ConnectionGate`: requests queue on the event loop for the pool's connections, take a free one
without a thread, wait in a thread only when the pool has none ready, and give up after the pool
timeout (503)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool, PoolTimeout

from cloud.api.gate import ConnectionGate
from simulators.services import free_port


@pytest.fixture
def pool(database_url: str) -> Iterator[ConnectionPool[psycopg.Connection[Any]]]:
    p: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        database_url, min_size=2, max_size=2, kwargs={"autocommit": True}, open=False
    )
    p.open(wait=True)
    try:
        yield p
    finally:
        p.close()


def _waiting(pool: ConnectionPool[psycopg.Connection[Any]]) -> int:
    return pool.get_stats().get("requests_waiting", 0)


def test_free_connections_are_taken_on_the_event_loop_in_arrival_order(
    pool: ConnectionPool[psycopg.Connection[Any]],
) -> None:
    async def run() -> tuple[list[int], ConnectionGate]:
        gate = ConnectionGate(pool=pool, permits=2, timeout_s=5.0)
        entered: list[int] = []
        both_in, release = asyncio.Event(), asyncio.Event()

        async def request(i: int) -> None:
            async with gate.connection() as conn:
                entered.append(i)
                assert conn.execute("SELECT %s::int", (i,)).fetchone() == (i,)
                if len(entered) == 2:
                    both_in.set()
                if i < 2:
                    await release.wait()  # the first two hold both connections

        tasks = [asyncio.create_task(request(i)) for i in range(6)]
        await both_in.wait()
        assert entered == [0, 1]
        release.set()
        await asyncio.gather(*tasks)
        return entered, gate

    entered, gate = asyncio.run(run())
    assert entered == [0, 1, 2, 3, 4, 5]
    assert (gate.ready, gate.waited) == (6, 0)
    assert pool.get_stats()["pool_available"] == 2


def test_a_connection_lent_outside_the_gate_is_waited_for_in_a_thread(
    pool: ConnectionPool[psycopg.Connection[Any]],
) -> None:
    a, b = pool.getconn(), pool.getconn()  # lent elsewhere (the live feed, a credential check)

    def give_back() -> None:
        # the gate's request gave up on the event loop (the pool keeps that expired place in its
        # queue until a connection comes back) and waits in the queue from a thread
        while _waiting(pool) < 2:
            time.sleep(0.001)
        pool.putconn(a)

    async def run() -> ConnectionGate:
        gate = ConnectionGate(pool=pool, permits=2, timeout_s=5.0)
        threading.Thread(target=give_back, daemon=True).start()
        async with gate.connection() as conn:
            assert conn is a
        return gate

    gate = asyncio.run(run())
    pool.putconn(b)
    assert (gate.ready, gate.waited) == (0, 1)


def test_no_connection_within_the_timeout_is_a_pool_timeout(
    pool: ConnectionPool[psycopg.Connection[Any]],
) -> None:
    async def run() -> float:
        gate = ConnectionGate(pool=pool, permits=1, timeout_s=0.2)
        async with gate.connection():
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout, match=r"couldn.t get a connection after 0\.20 sec"):
                async with gate.connection():
                    pass
            return time.monotonic() - t0

    waited = asyncio.run(run())
    assert 0.2 <= waited < 1.0


def test_a_database_down_is_a_pool_timeout_within_the_timeout() -> None:
    down: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        f"postgresql://linli@127.0.0.1:{free_port('127.0.0.1')}/linli?connect_timeout=1",
        min_size=1,
        max_size=1,
        open=False,
    )
    down.open(wait=False)
    try:

        async def run() -> float:
            gate = ConnectionGate(pool=down, permits=1, timeout_s=0.3)
            t0 = time.monotonic()
            with pytest.raises(PoolTimeout):
                async with gate.connection():
                    pass
            return time.monotonic() - t0

        waited = asyncio.run(run())
    finally:
        down.close()
    assert 0.3 <= waited < 1.5

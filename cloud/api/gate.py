"""The requests' way to the connection pool, without a thread when a connection is free.

A request's connection used to be taken in a worker thread (the pool's ``getconn`` blocks while
none is free), then the endpoint ran in another: two hand-offs between threads per request, each
a GIL hand-over. `ConnectionGate` queues the requests on the event loop instead, on a semaphore
with as many permits as the pool has connections: a request that holds a permit almost always
finds a connection ready and takes it on the loop at once. When it does not (the pool still
opening or replacing connections, the database down, connections lent outside the gate), it waits
in a worker thread as before. Either way the whole wait is bounded by ``[api] pool_timeout_s``
and ends in `PoolTimeout` (answered 503 by the application).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, Final

import psycopg
from fastapi.concurrency import run_in_threadpool
from psycopg_pool import ConnectionPool, PoolTimeout

#: how long the event loop may wait for a connection it expects to be ready
READY_S: Final = 0.001


class ConnectionGate:
    """`connection()`: a pooled connection for one request, given back on leaving."""

    def __init__(
        self, *, pool: ConnectionPool[psycopg.Connection[Any]], permits: int, timeout_s: float
    ) -> None:
        self._pool = pool
        self._permits = asyncio.Semaphore(permits)
        self._timeout_s = timeout_s
        #: connections taken on the event loop, and in a worker thread (the slow way)
        self.ready = 0
        self.waited = 0

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.Connection[Any]]:
        deadline = time.monotonic() + self._timeout_s
        try:
            async with asyncio.timeout(self._timeout_s):
                await self._permits.acquire()
        except TimeoutError:
            raise PoolTimeout(f"couldn't get a connection after {self._timeout_s:.2f} sec") from None
        try:
            try:
                conn = self._pool.getconn(READY_S)
                self.ready += 1
            except PoolTimeout:
                conn = await run_in_threadpool(self._pool.getconn, max(deadline - time.monotonic(), READY_S))
                self.waited += 1
            try:
                yield conn
            finally:
                # no wait: a connection left idle goes straight back (an autocommit request's
                # always is; one in a failed transaction is rolled back by the pool)
                self._pool.putconn(conn)
        finally:
            self._permits.release()

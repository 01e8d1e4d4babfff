"""Keeping the API processes' connections even.

Each API process has its own listening socket on the port (``SO_REUSEPORT``) and the kernel
places a new connection by a hash of its addresses: 32 keep-alive clients land 12 on one process
and 20 on the other as often as 16 and 16. A process serves its own connections only, so the
one with more clients answers each of them more slowly (measured: 28 ms against 48 ms on the
same two cores).

`Rebalance` evens it out. The processes write their open connection counts into a few bytes of
memory they share (`Shares`, mapped before the fork); a process with more than its fair share
(the total divided by the processes, rounded up) answers one request with ``Connection: close``,
at most one every `pause_s`. The client, as HTTP/1.1 clients and proxies do, opens a new
connection, which the kernel places anew; it lands on a less busy process half the time or more,
and a process with its fair share closes nothing, so the counts settle within one of each other.
"""

from __future__ import annotations

import math
import mmap
import struct
import time
from collections.abc import Callable, Collection, MutableMapping
from typing import Any, Final

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
App = Callable[[Scope, Receive, Send], Any]

_SLOT: Final = struct.Struct("<i")


class Shares:
    """Each process's open connections, in anonymous memory shared with the processes forked
    after it was made."""

    def __init__(self, *, processes: int) -> None:
        self.processes = processes
        self._memory = mmap.mmap(-1, _SLOT.size * processes)

    def set(self, process: int, connections: int) -> None:
        _SLOT.pack_into(self._memory, _SLOT.size * process, connections)

    def counts(self) -> list[int]:
        return [c for (c,) in _SLOT.iter_unpack(self._memory)]

    def over(self, process: int, connections: int) -> bool:
        """Record `process`'s count; whether it is above its fair share."""
        self.set(process, connections)
        fair = math.ceil(sum(self.counts()) / self.processes)
        return connections > fair


class Rebalance:
    """ASGI middleware: a process above its share of the connections asks one client to reconnect."""

    def __init__(
        self,
        app: App,
        *,
        shares: Shares,
        process: int,
        pause_s: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.app = app
        self._shares = shares
        self._process = process
        self._connections: Collection[object] = ()
        self._pause_s = pause_s
        self._clock = clock
        self._last = -math.inf
        #: connections asked to reconnect
        self.closed = 0

    def watch(self, connections: Collection[object]) -> None:
        """Count `connections` (the server's open connections, known once it is made)."""
        self._connections = connections

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._shares.over(self._process, len(self._connections)):
            await self.app(scope, receive, send)
            return
        now = self._clock()
        if now - self._last < self._pause_s:
            await self.app(scope, receive, send)
            return
        self._last = now
        self.closed += 1

        async def closing(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        await self.app(scope, receive, closing)

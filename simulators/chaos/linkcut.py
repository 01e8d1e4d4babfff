"""A TCP relay between a gateway and the cloud broker that can lose the link like a pulled cable.

While the link is cut nothing passes either way and nobody is told: open connections stay open
(each side finds out only by its own keepalive, as over a dead mobile link), and new connections
are accepted but lead nowhere. When the link comes back, the connections that lived through the
cut are closed (as a carrier's NAT would have forgotten them) and new ones pass again. The relay
carries TLS untouched: mutual TLS is between the gateway and the broker.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Final

_CHUNK: Final = 65536


class _Link:
    """One relayed connection: the gateway's side and, once open, the broker's."""

    def __init__(self, writers: list[asyncio.StreamWriter]) -> None:
        self.writers = writers

    def close(self) -> None:
        for w in self.writers:
            w.close()


class LinkCut:
    """Relays ``host:port`` (a free loopback port) to ``target_host:target_port`` until `close`.

    `cut` and `restore` may be called from any thread.
    """

    def __init__(self, *, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.cuts = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="linli-linkcut", daemon=True)
        #: Set while bytes pass (an asyncio Event binds to the loop that first waits on it).
        self._open = asyncio.Event()
        self._open.set()
        self._links: set[_Link] = set()
        self._server: asyncio.Server | None = None

    @property
    def url_authority(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def is_cut(self) -> bool:
        return not self._open.is_set()

    def start(self) -> None:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)

    def cut(self) -> None:
        """Stop passing bytes, both ways, without telling either side."""
        asyncio.run_coroutine_threadsafe(self._cut(), self._loop).result(timeout=10)

    def restore(self) -> None:
        """Close the connections that lived through the cut and pass new ones again."""
        asyncio.run_coroutine_threadsafe(self._restore(), self._loop).result(timeout=10)

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    # -- the relay's own loop ----------------------------------------------------------------------

    async def _serve(self) -> None:
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _cut(self) -> None:
        if self._open.is_set():
            self.cuts += 1
            self._open.clear()

    async def _restore(self) -> None:
        for link in self._links:  # every one of them lived through the cut
            link.close()
        self._links.clear()
        self._open.set()

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in list(self._links):
            link.close()
        self._links.clear()
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = _Link([writer])
        self._links.add(link)
        try:
            await self._open.wait()  # accepted during a cut: leads nowhere until it is closed
            if link not in self._links:
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                return
            link.writers.append(up_writer)
            await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        finally:
            link.close()
            self._links.discard(link)

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(_CHUNK):
                await self._open.wait()  # cut: the bytes go nowhere until the link is closed
                if writer.is_closing():
                    return
                writer.write(data)
                await writer.drain()
        with contextlib.suppress(ConnectionError, OSError, RuntimeError):
            if writer.can_write_eof():
                writer.write_eof()

"""The local HTTP endpoint: ``/metrics`` (Prometheus text format) and ``/healthz`` (JSON).

A deliberately tiny HTTP/1.0 server on `asyncio.start_server`: GET only, one request per
connection. The metrics are written at scrape time from a snapshot function (in the text format of
`device_profiles.metrics_text`), so the hot path pays nothing for them.
``/healthz`` answers 200 or 503 with ``{"healthy": bool, ...the parts' states..., "detail": str}``,
the shape the cloud's endpoint uses too.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from device_profiles.metrics_text import CONTENT_TYPE, exposition


@dataclass(slots=True)
class Snapshot:
    """What the endpoint reports; the agent refreshes it."""

    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    healthy: bool = False
    #: the parts' states for ``/healthz`` (``{"field": "up", ...}``).
    health: dict[str, Any] = field(default_factory=dict)
    #: one line for a person.
    detail: str = "starting"

    def health_json(self) -> bytes:
        return msgspec.json.encode({"healthy": self.healthy, **self.health, "detail": self.detail})


class Endpoint:
    """Serve `/metrics` and `/healthz` for a snapshot source until `close()`."""

    def __init__(self, *, host: str, port: int, snapshot: Callable[[], Snapshot]) -> None:
        self.host = host
        self.port = port
        self._snapshot = snapshot
        self._server: asyncio.Server | None = None

    def _metrics(self) -> bytes:
        snap = self._snapshot()
        return exposition(
            prefix="linli_edge_", help_prefix="linli edge agent: ", counters=snap.counters, gauges=snap.gauges
        )

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        sock = self._server.sockets[0]
        self.port = int(sock.getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(5):
                line = await reader.readline()
                while (await reader.readline()).strip():
                    pass
            parts = line.decode("latin-1").split()
            path = parts[1] if len(parts) >= 2 else ""
            if len(parts) < 2 or parts[0] != "GET":
                status, ctype, body = "405 Method Not Allowed", "text/plain", b"GET only\n"
            elif path == "/metrics":
                status, ctype, body = "200 OK", CONTENT_TYPE, self._metrics()
            elif path == "/healthz":
                snap = self._snapshot()
                status = "200 OK" if snap.healthy else "503 Service Unavailable"
                ctype, body = "application/json", snap.health_json()
            else:
                status, ctype, body = "404 Not Found", "text/plain", b"not found\n"
            writer.write(
                f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n".encode()
                + body
            )
            await writer.drain()
        except (TimeoutError, OSError, UnicodeError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

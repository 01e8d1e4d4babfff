"""``/metrics`` (Prometheus text format) and ``/healthz`` (JSON) for the ingest.

``/healthz`` answers 200 or 503 with ``{"healthy": bool, ...the parts' states..., "detail": str}``,
the shape the edge agent's endpoint uses too.

A small `ThreadingHTTPServer` on a thread owned by `Endpoint`; values are read from a snapshot
function at scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from device_profiles.metrics_text import CONTENT_TYPE, exposition


@dataclass(slots=True)
class Snapshot:
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)
    #: The parts that must be ``up`` for the service to be healthy.
    parts: tuple[str, ...] = ("database", "broker")

    @property
    def healthy(self) -> bool:
        return all(self.health.get(part) == "up" for part in self.parts)

    @property
    def detail(self) -> str:
        """One line for a person (the edge's ``/healthz`` has one too)."""
        return " ".join(f"{part}={self.health.get(part, 'unknown')}" for part in self.parts)


class Endpoint:
    """Serve `/metrics` and `/healthz` until `close()`."""

    def __init__(
        self, *, host: str, port: int, snapshot: Callable[[], Snapshot], service: str = "ingest"
    ) -> None:

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    snap = snapshot()
                    body = exposition(
                        prefix="linli_cloud_",
                        help_prefix=f"linli cloud {service}: ",
                        counters=snap.counters,
                        gauges=snap.gauges,
                    )
                    self._send(200, CONTENT_TYPE, body)
                elif self.path == "/healthz":
                    snap = snapshot()
                    body = json.dumps(
                        {"healthy": snap.healthy, **snap.health, "detail": snap.detail}
                    ).encode()
                    self._send(200 if snap.healthy else 503, "application/json", body)
                else:
                    self._send(404, "text/plain", b"not found\n")

            def _send(self, status: int, ctype: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="linli-cloud-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

"""``/metrics`` (Prometheus text format, own registry) and ``/healthz`` (JSON) for the ingest.

``/healthz`` answers 200 or 503 with ``{"healthy": bool, ...the parts' states..., "detail": str}``,
the shape the edge agent's endpoint uses too.

A small `ThreadingHTTPServer` on a thread owned by `Endpoint`; values are read from a snapshot
function at scrape time, so the hot path pays nothing for them.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector


@dataclass(slots=True)
class Snapshot:
    counters: dict[str, int] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)
    health: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return bool(self.health.get("database") == "up" and self.health.get("broker") == "up")

    @property
    def detail(self) -> str:
        """One line for a person (the edge's ``/healthz`` has one too)."""
        return " ".join(f"{part}={self.health.get(part, 'unknown')}" for part in ("database", "broker"))


class _Collector(Collector):
    def __init__(self, get: Callable[[], Snapshot]) -> None:
        self._get = get

    def collect(self) -> Iterator[Metric]:
        snap = self._get()
        for name, value in sorted(snap.counters.items()):
            c = CounterMetricFamily(f"linli_cloud_{name}", f"linli cloud ingest: {name.replace('_', ' ')}")
            c.add_metric([], value)
            yield c
        for name, gvalue in sorted(snap.gauges.items()):
            g = GaugeMetricFamily(f"linli_cloud_{name}", f"linli cloud ingest: {name.replace('_', ' ')}")
            g.add_metric([], gvalue)
            yield g


class Endpoint:
    """Serve `/metrics` and `/healthz` until `close()`."""

    def __init__(self, *, host: str, port: int, snapshot: Callable[[], Snapshot]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(snapshot))
        registry = self.registry

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/metrics":
                    self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
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

"""Gateway status: a retained JSON message on ``linli/v1/<community>/<gateway>/status``.

Published every ``status.interval_s`` (and once at start and at shutdown). The Last Will, set on
the cloud connection, is the same topic with ``"state": "offline"``, retained, so the cloud sees a
gateway that vanished without a goodbye. docs/edge.md lists the fields.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import msgspec

from edge.buffer import BufferStats

_json = msgspec.json.Encoder()


def agent_version() -> str:
    try:
        return version("linli")
    except PackageNotFoundError:
        return "0+unknown"


def offline_payload(*, gateway_id: str, community_id: str) -> bytes:
    return _json.encode({"v": 1, "gateway_id": gateway_id, "community_id": community_id, "state": "offline"})


class ProcessUsage:
    """This process's CPU use and resident memory, read from the kernel (``os.times``,
    ``/proc/self/statm``) rather than through psutil, a compiled dependency the gateway does
    without."""

    _PAGE = os.sysconf("SC_PAGE_SIZE")

    def __init__(self) -> None:
        self._last = (time.monotonic(), self._cpu_s())

    @staticmethod
    def _cpu_s() -> float:
        t = os.times()
        return t.user + t.system

    def cpu_percent(self) -> float:
        """CPU time over wall time since the previous call (or construction), in percent of one
        core (above 100 when several threads are busy), as ``psutil.Process.cpu_percent``."""
        now, cpu = time.monotonic(), self._cpu_s()
        (then, before), self._last = self._last, (now, cpu)
        return round(100 * (cpu - before) / (now - then), 1) if now > then else 0.0

    def rss_bytes(self) -> int:
        """Resident set size; -1 where ``/proc`` is not there."""
        try:
            with open("/proc/self/statm", encoding="ascii") as statm:
                return int(statm.read().split()[1]) * self._PAGE
        except OSError:
            return -1


@dataclass(slots=True)
class Rates:
    """Per-second rates from counter deltas between two status reports."""

    _last: dict[str, tuple[float, int]] = field(default_factory=dict)

    def rate(self, name: str, value: int, now: float) -> float:
        prev = self._last.get(name)
        self._last[name] = (now, value)
        if prev is None or now <= prev[0]:
            return 0.0
        return round((value - prev[1]) / (now - prev[0]), 2)


class StatusReporter:
    """Builds status documents; keeps the process handle for CPU and RSS."""

    def __init__(
        self,
        *,
        gateway_id: str,
        community_id: str,
        buffer_path: Path,
        wall: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.gateway_id = gateway_id
        self.community_id = community_id
        self.buffer_path = buffer_path
        self.wall = wall
        self.monotonic = monotonic
        self.started = monotonic()
        self.rates = Rates()
        self._proc = ProcessUsage()
        self.version = agent_version()

    def document(
        self,
        *,
        stats: BufferStats,
        received: int,
        quarantined: int,
        links: dict[str, bool],
        state: str = "online",
    ) -> dict[str, Any]:
        now = self.wall()
        mono = self.monotonic()
        try:
            free = shutil.disk_usage(self.buffer_path.parent).free
        except OSError:
            free = -1
        sent = stats.counters.get("readings_sent", 0)
        return {
            "v": 1,
            "gateway_id": self.gateway_id,
            "community_id": self.community_id,
            "state": state,
            "ts_us": int(now * 1_000_000),
            "version": self.version,
            "uptime_s": round(mono - self.started, 1),
            "buffer": {
                "depth": stats.depth,
                "alarm": stats.alarm_readings,
                "telemetry": stats.telemetry_readings,
                "in_batches": stats.batched_readings,
                "batches": stats.batches,
                "oldest_age_s": None if stats.oldest_at is None else max(0, round(now - stats.oldest_at)),
                "disk_bytes": stats.disk_bytes,
                "cap_bytes": stats.cap_bytes,
            },
            "counters": stats.counters,
            "quarantine_count": quarantined,
            "pending_devices": stats.pending_devices,
            "rates": {
                "received_per_s": self.rates.rate("received", received, mono),
                "sent_per_s": self.rates.rate("sent", sent, mono),
            },
            "cpu_pct": self._proc.cpu_percent(),
            "rss_bytes": self._proc.rss_bytes(),
            "disk_free_bytes": free,
            "links": links,
        }

    @staticmethod
    def encode(doc: dict[str, Any]) -> bytes:
        return _json.encode(doc)

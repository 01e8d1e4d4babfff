"""The loop every database-driven cloud service runs: sessions of two autocommit connections
(one to work, one to ``LISTEN`` and hold the service's advisory lock), a new session after a
capped, jittered backoff when the database goes away, and a hot standby when another process
holds the lock.

    def serve(conn, listener, stop): ...       # runs until stop, or raises StoreUnavailable
    Sessions(name="notify", dsn=..., lock_key=NOTIFY_LOCK, ...).run(stop, serve)
"""

from __future__ import annotations

import logging
import random
import threading
from collections.abc import Callable
from typing import Any

import psycopg

from cloud.endpoint import Endpoint, Snapshot
from cloud.errors import StoreUnavailable
from cloud.ingest.worker import backoff_delay
from device_profiles.config_sources import HttpConfig

Serve = Callable[[psycopg.Connection[Any], psycopg.Connection[Any], threading.Event], None]


class Sessions:
    """Runs `serve` in sessions until stopped; `database` and `role` say where it stands."""

    def __init__(
        self,
        *,
        name: str,
        dsn: str,
        lock_key: int | None,
        backoff_base_s: float,
        backoff_cap_s: float,
        standby_poll_s: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        self._dsn = dsn
        self._lock_key = lock_key
        self._base = backoff_base_s
        self._cap = backoff_cap_s
        self._standby_poll_s = standby_poll_s
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._log = logging.getLogger(f"linli.cloud.{name}")
        self.database = "down"
        self.role = "starting"
        self.sessions = 0

    def run(self, stop: threading.Event, serve: Serve) -> None:
        attempt = 0
        while not stop.is_set():
            try:
                self._session(stop, serve)
                attempt = 0
            except StoreUnavailable as exc:
                self.database = "down"
                delay = backoff_delay(attempt, base=self._base, cap=self._cap, rng=self._rng)
                attempt += 1
                self._log.warning("%s: %s; new session in %.1f s", self.name, exc, delay)
                stop.wait(delay)

    def _session(self, stop: threading.Event, serve: Serve) -> None:
        try:
            with (
                psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn,
                psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as listener,
            ):
                self.database = "up"
                self.sessions += 1
                if self._lock_key is not None and not self._acquire(listener, stop):
                    return
                self.role = "active"
                serve(conn, listener, stop)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    def _acquire(self, listener: psycopg.Connection[Any], stop: threading.Event) -> bool:
        self.role = "standby"
        told = False
        while not stop.is_set():
            row = listener.execute("SELECT pg_try_advisory_lock(%s)", (self._lock_key,)).fetchone()
            if row is not None and row[0]:
                return True
            if not told:
                self._log.info("%s: another process is active: standing by", self.name)
                told = True
            stop.wait(self._standby_poll_s)
        return False


def wait_notified(listener: psycopg.Connection[Any], timeout: float) -> list[str]:
    """The payloads of the notifications that arrive within `timeout` (returns at the first, with
    whatever else arrived meanwhile)."""
    payloads: list[str] = []
    if timeout > 0:
        payloads.extend(n.payload for n in listener.notifies(timeout=timeout, stop_after=1))
    payloads.extend(n.payload for n in listener.notifies(timeout=0.0))
    return payloads


def run_until_stopped(
    *,
    name: str,
    target: Callable[[threading.Event], None],
    stop: threading.Event,
    http: HttpConfig,
    snapshot: Callable[[], Snapshot],
) -> int:
    """Run `target(stop)` on a thread with the ``/metrics`` and ``/healthz`` endpoint of `http`
    until `stop`; 0 when stopped, 1 when the thread ended unbidden (a bug: its traceback is logged),
    so the supervisor restarts the service from its committed state."""
    log = logging.getLogger(f"linli.cloud.{name}")
    endpoint = None
    if http.address:
        host, port = http.host_port
        endpoint = Endpoint(host=host, port=port, snapshot=snapshot, service=name)
        endpoint.start()
        log.info("metrics on http://%s:%d/metrics, health on /healthz", endpoint.host, endpoint.port)
    thread = threading.Thread(target=target, args=(stop,), name=f"linli-{name}")
    thread.start()
    told = False
    try:
        while thread.is_alive() and not stop.wait(0.5):
            pass
        told = stop.is_set()
    finally:
        log.info("stopping: finish the transaction in progress, disconnect")
        stop.set()
        thread.join()
        if endpoint is not None:
            endpoint.close()
    if not told:
        log.error("the %s service stopped unexpectedly", name)
        return 1
    return 0

"""The scheduled jobs: rollup and retention, run by one worker at a time.

`Maintenance.run_once` takes a transaction-level advisory lock with ``pg_try_advisory_xact_lock``:
when another worker holds it, this run is skipped. `start` runs it every
``retention.interval_s`` on a thread of its own until `stop`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg

from cloud.config import CloudSettings
from cloud.store.mode import StoreMode, detect_mode
from cloud.store.retention import enforce_retention
from cloud.store.rollup import refresh_rollup

log = logging.getLogger("linli.cloud.maintenance")

#: ``pg_try_advisory_xact_lock`` key of the maintenance jobs ("linlm").
MAINTENANCE_LOCK_KEY: Final = 0x6C696E6C6D
#: Transactions still open when the rollup ran are caught by the next run within this margin.
ROLLUP_MARGIN: Final = timedelta(minutes=10)


class Maintenance:
    def __init__(
        self,
        *,
        settings: CloudSettings,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.settings = settings
        self._wall = wall
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="linli-maintenance", daemon=True)
        self.runs = 0
        self.failing = False

    def run_once(self, *, now: datetime | None = None) -> dict[str, int] | None:
        """One run; returns what it did, or None when another worker holds the lock."""
        now = now or self._wall()
        with psycopg.connect(self.settings.database_url, connect_timeout=5) as conn, conn.transaction():
            locked = conn.execute("SELECT pg_try_advisory_xact_lock(%s)", (MAINTENANCE_LOCK_KEY,)).fetchone()
            if not (locked and locked[0]):
                return None
            mode = detect_mode(conn).mode
            done: dict[str, Any] = {}
            if mode is not StoreMode.COMMUNITY:
                done["rollup_hours"] = refresh_rollup(conn, now=now, margin=ROLLUP_MARGIN)
            done.update(enforce_retention(conn, mode=mode, retention=self.settings.retention, now=now))
        self.runs += 1
        return done

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _loop(self) -> None:
        interval = self.settings.retention.interval_s
        while not self._stop.wait(interval):
            try:
                done = self.run_once()
            except psycopg.Error as exc:
                if not self.failing:
                    log.error("maintenance failed (will retry every %.0f s): %s", interval, exc)
                self.failing = True
                continue
            if self.failing:
                log.info("maintenance running again")
            self.failing = False
            if done:
                log.debug("maintenance: %s", done)

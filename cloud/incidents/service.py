"""``linli cloud incidents``: run the escalation ladder and auto-close.

It listens for new incidents (`cloud.alerts.ledger.INCIDENT_CHANNEL`, sent when the alert
service commits) and for workflow changes, and takes every due step at once
(`cloud.incidents.escalation`) and tells every note not told yet (`cloud.incidents.notes`: a
resident's SOS cancel), then sleeps until the next deadline, a notification, or
``poll_interval_s``. Each step is its own transaction with its audit entry and the notifications
it owes, and rows are taken ``FOR UPDATE SKIP LOCKED``: several processes may run (each step
happens once), and a kill -9 loses nothing: a step either committed or will be taken again.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import psycopg

from cloud.alerts.ledger import INCIDENT_CHANNEL
from cloud.endpoint import Snapshot
from cloud.errors import StoreUnavailable
from cloud.incidents.config import IncidentsConfig
from cloud.incidents.escalation import auto_close_due, next_due, step_due
from cloud.incidents.notes import tell_notes
from cloud.incidents.record import CHANGE_CHANNEL, Context
from cloud.session import Sessions, wait_notified

log = logging.getLogger("linli.cloud.incidents")

#: Auto-close is looked at this often (seconds): quiet times are minutes to hours.
AUTO_CLOSE_EVERY_S = 30.0


class IncidentService:
    """`run` on a thread until the event is set."""

    def __init__(
        self,
        *,
        database_url: str,
        config: IncidentsConfig,
        context: Context,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.context = context
        self.clock = clock
        self.monotonic = monotonic
        self._sessions = Sessions(
            name="incidents",
            dsn=database_url,
            lock_key=None,  # SKIP LOCKED: any number of escalators may run
            backoff_base_s=config.backoff_base_s,
            backoff_cap_s=config.backoff_cap_s,
        )
        self.counters: dict[str, int] = {
            "incidents_escalations_total": 0,
            "incidents_reminders_total": 0,
            "incidents_notifications_owed_total": 0,
            "incidents_auto_closed_total": 0,
            "incidents_notes_told_total": 0,
        }

    def snapshot(self) -> Snapshot:
        return Snapshot(
            counters=dict(self.counters),
            gauges={},
            health={"database": self._sessions.database, "role": self._sessions.role},
            parts=("database",),
        )

    def run(self, stop: threading.Event) -> None:
        self._sessions.run(stop, self._serve)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def _serve(
        self, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], stop: threading.Event
    ) -> None:
        listener.execute(f"LISTEN {INCIDENT_CHANNEL}")
        listener.execute(f"LISTEN {CHANGE_CHANNEL}")
        next_close = self.monotonic()
        try:
            while not stop.is_set():
                self._steps(conn)
                told = tell_notes(conn, self.context, now=self.now(), contact_rules=self.config.contact_rules)
                self.counters["incidents_notes_told_total"] += told
                if self.monotonic() >= next_close:
                    closed = auto_close_due(conn, self.context, now=self.now())
                    self.counters["incidents_auto_closed_total"] += len(closed)
                    next_close = self.monotonic() + AUTO_CLOSE_EVERY_S
                due = next_due(conn)
                wait = self.config.poll_interval_s
                if due is not None:
                    wait = min(wait, max(0.0, (due - self.now()).total_seconds()))
                wait_notified(listener, wait)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    def _steps(self, conn: psycopg.Connection[Any]) -> None:
        steps = step_due(conn, self.context, now=self.now(), contact_rules=self.config.contact_rules)
        for s in steps:
            kind = "incidents_escalations_total" if s.action == "escalate" else "incidents_reminders_total"
            self.counters[kind] += 1
            self.counters["incidents_notifications_owed_total"] += s.notifications
            log.info(
                "incident %d: %s to level %d, %d notification(s)",
                s.incident_id,
                s.action,
                s.level,
                s.notifications,
            )

"""``linli cloud commands``: the outbox to the gateways, and the gateways' progress back.

Two loops, each on its own thread with its own database session, one MQTT connection between them:

- the **sender** wakes when a command is queued (`outbox.CHANNEL`, notified in the queuing
  transaction) and at least every ``poll_interval_s``; it expires what outlived its time to live,
  takes the due commands (`progress.due`), publishes each on its gateway's ``.../down`` topic
  (QoS 1), waits for the broker's PUBACKs and marks them sent in the same transaction. A command
  the gateway does not report stored is sent again after ``resend_s``; the gateway keeps one copy
  per command id, so a resend (or a kill -9 between PUBACK and commit) never runs a command twice.
- the **progress** loop takes the gateways' reports (``linli/v1/+/+/commands``, a persistent
  session with manual acknowledgement), applies them (`progress.apply`) in one transaction per
  batch and acknowledges them to the broker only after the commit: a report is applied or
  redelivered, and a redelivered one is stale and changes nothing.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from paho.mqtt.client import MQTTMessageInfo

from cloud.commands import outbox, progress
from cloud.commands.schedules import due_commands, load_schedules
from cloud.config import CloudSettings, CommandsConfig, MqttConfig
from cloud.endpoint import Snapshot
from cloud.errors import StoreUnavailable
from cloud.ingest.consumer import Consumer, Inbound
from cloud.ingest.envelope import topic_ids
from cloud.session import Sessions, run_until_stopped, wait_notified
from device_profiles import ProfileSet
from device_profiles.command_wire import PROGRESS_FILTER, WireError, decode_progress, down_topic, encode

log = logging.getLogger("linli.cloud.commands")

#: Progress reports applied in one transaction, at most.
MAX_REPORTS_PER_TXN: Final = 500


class CommandService:
    """`run` until the event is set."""

    def __init__(
        self,
        *,
        database_url: str,
        mqtt: MqttConfig,
        config: CommandsConfig,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.clock = clock
        self._inbox: queue.Queue[Inbound] = queue.Queue(maxsize=mqtt.receive_maximum * 2)
        self._held: list[Inbound] = []
        self.consumer = Consumer(
            config=mqtt.model_copy(update={"client_id": config.client_id, "tls": config.tls or mqtt.tls}),
            on_message=self._inbox.put,
            filters=[PROGRESS_FILTER],
        )

        def sessions(name: str) -> Sessions:
            return Sessions(
                name=name,
                dsn=database_url,
                lock_key=None,  # SKIP LOCKED and forward-only states: any number may run
                backoff_base_s=config.backoff_base_s,
                backoff_cap_s=config.backoff_cap_s,
            )

        self.schedules = load_schedules(config.schedules) if config.schedules is not None else None
        self.profiles = ProfileSet.shipped_and(*config.profiles).profiles
        self._next_schedule = 0.0
        self._refused: set[str] = set()
        self._sender = sessions("commands")
        self._progress = sessions("command-progress")
        self.counters: dict[str, int] = {
            "commands_published_total": 0,
            "commands_expired_total": 0,
            "commands_scheduled_total": 0,
            "commands_refused_by_broker_total": 0,
            "command_reports_total": 0,
            "command_reports_applied_total": 0,
            "command_reports_stale_total": 0,
            "command_reports_refused_total": 0,
        }

    def snapshot(self) -> Snapshot:
        db = "up" if self._sender.database == self._progress.database == "up" else "down"
        return Snapshot(
            counters=dict(self.counters),
            gauges={"command_reports_waiting": float(self._inbox.qsize() + len(self._held))},
            health={"database": db, "broker": "up" if self.consumer.connected else "down"},
        )

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    def run(self, stop: threading.Event) -> None:
        self.consumer.start()
        progress_thread = threading.Thread(
            target=self._progress.run, args=(stop, self._serve_progress), name="linli-command-progress"
        )
        progress_thread.start()
        try:
            self._sender.run(stop, self._serve_sender)
        finally:
            stop.set()
            progress_thread.join()
            self.consumer.stop()

    # -- the sender -----------------------------------------------------------------------------

    def _serve_sender(
        self, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], stop: threading.Event
    ) -> None:
        listener.execute(f"LISTEN {outbox.CHANNEL}")
        try:
            while not stop.is_set():
                full = self.send_round(conn)
                wait_notified(listener, 0.0 if full else self.config.poll_interval_s)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    def schedule_round(self, conn: psycopg.Connection[Any]) -> int:
        """Queue the commands of every community's current schedule transition (those not queued
        yet); returns how many were queued."""
        if self.schedules is None:
            return 0
        now = self.now()
        lamps: dict[str, list[tuple[str, float | None, float | None]]] = {}
        rows = conn.execute(
            "SELECT community_id, device_id, lat, lon FROM devices WHERE device_type = 'streetlight'"
            " AND community_id IS NOT NULL ORDER BY device_id"
        ).fetchall()
        for community_id, device_id, lat, lon in rows:
            lamps.setdefault(community_id, []).append((device_id, lat, lon))
        queued = 0
        for community_id, members in sorted(lamps.items()):
            due = due_commands(self.schedules, community_id, members, now)
            if not due:
                continue
            with conn.transaction():
                n, refused = outbox.request_many(
                    conn,
                    [outbox.Wanted(d.command_id, d.device_id, d.name, d.params, d.ttl_s) for d in due],
                    actor="schedule",
                    profiles=self.profiles,
                    now=now,
                )
            queued += n
            for device_id, why in refused.items():
                if device_id not in self._refused:  # said once per device
                    self._refused.add(device_id)
                    log.warning("schedule: no command to %s: %s", device_id, why)
        self.counters["commands_scheduled_total"] += queued
        if queued:
            log.info("schedule: queued %d command(s)", queued)
        return queued

    def send_round(self, conn: psycopg.Connection[Any]) -> bool:
        """Expire, then publish what is due; True when the round was full (more may wait)."""
        cfg = self.config
        if time.monotonic() >= self._next_schedule:
            self.schedule_round(conn)
            self._next_schedule = time.monotonic() + cfg.schedule_check_s
        now = self.now()
        with conn.transaction():
            expired = outbox.expire_due(conn, now=now, grace_s=max(600.0, 2 * cfg.resend_s))
        self.counters["commands_expired_total"] += expired
        if not self.consumer.connected:
            return False
        with conn.transaction():
            batch = progress.due(
                conn, now=now, resend_s=cfg.resend_s, resend_max_s=cfg.resend_max_s, limit=cfg.max_per_round
            )
            if not batch:
                return False
            infos: list[tuple[str, MQTTMessageInfo]] = []
            for community, gateway, command in batch:
                infos.append(
                    (
                        command.command_id,
                        self.consumer.publish(down_topic(community, gateway), encode(command)),
                    )
                )
            deadline = time.monotonic() + cfg.publish_timeout_s
            sent: list[str] = []
            refusals: list[str] = []
            for command_id, info in infos:
                try:
                    info.wait_for_publish(max(0.0, deadline - time.monotonic()))
                except (RuntimeError, ValueError) as exc:  # not queued: the connection was lost
                    log.warning("command %s not published: %s (sent again later)", command_id, exc)
                    continue
                if not info.is_published():
                    continue
                refused = self.consumer.refusal(info.mid)
                if refused is None:
                    sent.append(command_id)
                    continue
                refusals.append(refused)
            progress.mark_sent(conn, sent, now=now)
        if refusals:
            self.counters["commands_refused_by_broker_total"] += len(refusals)
            log.error(
                "the broker refused %d command(s): %s (is [commands] tls a certificate of the commands"
                " role, allowed to write linli/v1/+/+/down?); sent again in %g s",
                len(refusals),
                refusals[0],
                cfg.resend_s,
            )
        self.counters["commands_published_total"] += len(sent)
        if sent:
            log.info("published %d command(s)", len(sent))
        return len(batch) == cfg.max_per_round and len(sent) == len(batch)

    # -- the progress reports -------------------------------------------------------------------

    def _serve_progress(
        self, conn: psycopg.Connection[Any], _listener: psycopg.Connection[Any], stop: threading.Event
    ) -> None:
        try:
            while not stop.is_set():
                if not self._held:
                    try:
                        self._held.append(self._inbox.get(timeout=0.5))
                    except queue.Empty:
                        continue
                while len(self._held) < MAX_REPORTS_PER_TXN:
                    try:
                        self._held.append(self._inbox.get_nowait())
                    except queue.Empty:
                        break
                with conn.transaction():
                    outcomes = [self._apply(conn, item) for item in self._held]
                self.consumer.ack(self._held)
                self._held = []
                for outcome in outcomes:
                    self.counters["command_reports_total"] += 1
                    key = {progress.APPLIED: "applied", progress.STALE: "stale"}.get(outcome, "refused")
                    self.counters[f"command_reports_{key}_total"] += 1
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    def _apply(self, conn: psycopg.Connection[Any], item: Inbound) -> str:
        ids = topic_ids(item.topic)
        try:
            report = decode_progress(item.payload)
        except WireError as exc:
            return self._dead(conn, item, str(exc))
        if ids is None or ids[1] != report.gateway_id:
            return self._dead(conn, item, f"the report names gateway {report.gateway_id}, not the topic's")
        outcome = progress.apply(conn, report, gateway_id=report.gateway_id)
        if outcome in (progress.UNKNOWN, progress.FOREIGN):
            why = "no such command" if outcome == progress.UNKNOWN else "the command is another gateway's"
            return self._dead(conn, item, f"command {report.command_id}: {why}")
        return outcome

    def _dead(self, conn: psycopg.Connection[Any], item: Inbound, reason: str) -> str:
        """A report refused: kept in ``dead_letters`` with the reason (and logged)."""
        log.warning("refused a progress report on %s: %s", item.topic, reason)
        conn.execute(
            "INSERT INTO dead_letters (received_at, topic, payload, reason) VALUES (%s, %s, %s, %s)",
            (item.received_at, item.topic, item.payload, f"command progress: {reason}"),
        )
        return "refused"


def run_commands(settings: CloudSettings, stop: threading.Event) -> int:
    """Migrate (as the ingest does), then send commands and follow their progress until `stop`."""
    from cloud.alerts.main import wait_for_schema

    service = CommandService(database_url=settings.database_url, mqtt=settings.mqtt, config=settings.commands)
    if not wait_for_schema(settings, stop, random.Random()):  # noqa: S311 - backoff jitter
        return 0
    log.info("command sender running")
    return run_until_stopped(
        name="commands", target=service.run, stop=stop, http=settings.commands.http, snapshot=service.snapshot
    )

"""``linli cloud notify``: deliver the outbox, each notification once, within each robot's limits.

One active sender (a session advisory lock; a second process stands by). Per configured channel
a worker thread with its own connection takes the channel's due notifications, critical first,
and for each: marks it ``sending`` (and counts the attempt), sends it, and records the outcome on
the row (``sent``, ``retrying`` with its next time, ``refused`` with the API's code and message,
``given_up`` after ``give_up_after_s``). A slow or blocked vendor holds only its own worker.

Exactly once, as far as a remote API allows: a notification is sent again only when the sender
died between sending it and recording the answer: at most one per channel per crash. Such rows
are found ``sending`` when the next sender takes over; they are sent again at once (an SOS push
must not be lost), and counted (``notify_in_doubt_total``). The webhook carries the
notification's id as ``X-Linli-Idempotency-Key`` so a receiver can drop the repeat; robot
messages show it as the incident number.

Limits (`cloud.notify.window`): each robot's documented rate is mirrored as a sliding window,
seeded from the sends of the last minute at start. Minor notifications may use the window only
above ``reserve_critical``: when more are due than it allows, they are merged into one digest
(a new outbox row, in the transaction that marks them ``digested``), so a burst of 200 minor
incidents reaches a 20-a-minute robot as a few digests and an SOS still goes out at once.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.endpoint import Snapshot
from cloud.errors import StoreUnavailable
from cloud.incidents.record import OUTBOX_CHANNEL
from cloud.ingest.worker import backoff_delay
from cloud.notify.channels import Channel, Outcome
from cloud.notify.config import NotifyConfig
from cloud.notify.message import SEVERITY_ZH, Message, place
from cloud.notify.window import RateWindow
from cloud.session import Sessions, wait_notified

log = logging.getLogger("linli.cloud.notify")

#: The active sender's session advisory lock ("linlin" and a tag).
SENDER_LOCK_KEY: Final = (0x6C696E6C696E << 16) | (zlib.crc32(b"notify") & 0xFFFF)
#: Notifications taken per round of a channel's worker.
ROUND_ROWS: Final = 500
_SEVERITY_RANK: Final = {"critical": 0, "major": 1, "minor": 2, "info": 3}


@dataclass(slots=True)
class OutboxRow:
    notification_id: int
    incident_id: int | None
    created_at: datetime
    reason: str
    severity: str
    recipients: list[dict[str, str]]
    message: dict[str, Any]
    attempts: int


_DUE = """
SELECT notification_id, incident_id, created_at, reason, severity, recipients, message, attempts
FROM notify_outbox
WHERE channel = %s AND state IN ('pending', 'retrying') AND next_attempt_at <= %s
ORDER BY severity = 'critical' DESC, notification_id LIMIT %s
"""


class Sender:
    """`run` on a thread until the event is set."""

    def __init__(
        self,
        *,
        database_url: str,
        config: NotifyConfig,
        channels: Mapping[str, Channel],
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.dsn = database_url
        self.config = config
        self._channels = dict(channels)
        self.clock = clock
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter
        self._sessions = Sessions(
            name="notify",
            dsn=database_url,
            lock_key=SENDER_LOCK_KEY,
            backoff_base_s=config.backoff_base_s,
            backoff_cap_s=config.backoff_cap_s,
            rng=self._rng,
        )
        self._lock = threading.Lock()
        self.counters: dict[str, int] = {
            f"notify_{k}_total": 0
            for k in ("sent", "refused", "retries", "too_fast", "given_up", "digests", "digested", "in_doubt")
        }
        self.windows = {name: _window(ch) for name, ch in self._channels.items()}

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def snapshot(self) -> Snapshot:
        with self._lock:
            counters = dict(self.counters)
        return Snapshot(
            counters=counters,
            gauges={},
            health={"database": self._sessions.database, "role": self._sessions.role},
            parts=("database",),
        )

    def run(self, stop: threading.Event) -> None:
        self._sessions.run(stop, self._serve)

    def close(self) -> None:
        """Close the channels' connections (the sender owns its channels)."""
        for channel in self._channels.values():
            channel.close()

    # -- one session ------------------------------------------------------------------------

    def _serve(
        self, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], stop: threading.Event
    ) -> None:
        listener.execute(f"LISTEN {OUTBOX_CHANNEL}")
        self._recover(conn)
        ended = threading.Event()
        workers = {
            name: _Worker(sender=self, name=name, channel=ch, session_ended=ended)
            for name, ch in self._channels.items()
        }
        for w in workers.values():
            w.start()
        try:
            while not stop.is_set():
                failed = [w for w in workers.values() if w.error is not None]
                if failed:
                    raise StoreUnavailable(f"channel {failed[0].name}: {failed[0].error}")
                self._refuse_unknown(conn)
                for payload in wait_notified(listener, self.config.poll_interval_s):
                    names = [n for n in payload.split(",") if n in workers] or list(workers)
                    for n in names:
                        workers[n].wake.set()
        finally:
            ended.set()
            for w in workers.values():
                w.wake.set()
            for w in workers.values():
                w.join()

    def _recover(self, conn: psycopg.Connection[Any]) -> None:
        """Rows a dead sender left ``sending``: sent or not, nobody knows; send them again now."""
        rows = conn.execute(
            "UPDATE notify_outbox SET state = 'retrying', next_attempt_at = %s,"
            " last_message = 'in doubt: the sender stopped while sending it' WHERE state = 'sending'"
            " RETURNING notification_id",
            (self.now(),),
        ).fetchall()
        if rows:
            self.count("notify_in_doubt_total", len(rows))
            log.warning(
                "%d notification(s) in doubt after a stop while sending: sending them again", len(rows)
            )

    def _refuse_unknown(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "UPDATE notify_outbox SET state = 'refused', last_code = 'no such channel',"
            " last_message = 'the channel is not configured in [notify.channels]'"
            " WHERE state IN ('pending', 'retrying') AND NOT (channel = ANY(%s))"
            " RETURNING notification_id, channel",
            (list(self._channels),),
        ).fetchall()
        for nid, channel in rows:
            self.count("notify_refused_total")
            log.error("notification %d: channel %r is not configured: refused", nid, channel)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.clock(), tz=UTC)

    # -- what a worker does with its rows ---------------------------------------------------

    def deliver(self, conn: psycopg.Connection[Any], name: str, row: OutboxRow) -> Outcome:
        channel = self._channels[name]
        window = self.windows[name]
        conn.execute(
            "UPDATE notify_outbox SET state = 'sending', attempts = attempts + 1 WHERE notification_id = %s",
            (row.notification_id,),
        )
        message = msgspec.convert(row.message, Message)
        outcome = channel.send(message, row.recipients, key=row.notification_id)
        now = self.clock()
        if outcome.status in ("sent", "refused"):
            window.record(now)
        self._record(conn, name, row, outcome, now)
        return outcome

    def _record(
        self, conn: psycopg.Connection[Any], name: str, row: OutboxRow, outcome: Outcome, now: float
    ) -> None:
        at = datetime.fromtimestamp(now, tz=UTC)
        nid = row.notification_id
        if outcome.status == "sent":
            state, next_at = "sent", at
            self.count("notify_sent_total")
        elif outcome.status == "refused":
            state, next_at = "refused", at
            self.count("notify_refused_total")
            log.error("notification %d via %s refused: %s %s", nid, name, outcome.code, outcome.message)
        else:
            wait = outcome.retry_after_s
            if outcome.status == "too_fast":
                self.count("notify_too_fast_total")
                self.windows[name].block(now, wait or 60.0)
            if wait is None:
                wait = backoff_delay(
                    row.attempts, base=self.config.retry_base_s, cap=self.config.retry_cap_s, rng=self._rng
                )
            if at - row.created_at > timedelta(seconds=self.config.give_up_after_s):
                state, next_at = "given_up", at
                self.count("notify_given_up_total")
                log.error(
                    "notification %d via %s given up after %d attempts: %s %s",
                    nid,
                    name,
                    row.attempts + 1,
                    outcome.code,
                    outcome.message,
                )
            else:
                state, next_at = "retrying", at + timedelta(seconds=wait)
                self.count("notify_retries_total")
                log.warning(
                    "notification %d via %s: %s %s; again in %.1f s",
                    nid,
                    name,
                    outcome.code,
                    outcome.message,
                    wait,
                )
        conn.execute(
            "UPDATE notify_outbox SET state = %s, next_attempt_at = %s, sent_at = %s, last_code = %s,"
            " last_message = %s WHERE notification_id = %s",
            (state, next_at, at if state == "sent" else None, outcome.code, outcome.message[:500], nid),
        )

    def digest(self, conn: psycopg.Connection[Any], name: str, rows: Sequence[OutboxRow]) -> OutboxRow:
        """Merge `rows` into one new notification, in one transaction; the new row."""
        now = self.now()
        messages = [msgspec.convert(r.message, Message) for r in rows]
        lines: list[str] = []
        for m in messages:
            lines.extend(m.lines if m.reason == "digest" else [_digest_line(m)])
        worst = min((m.severity for m in messages), key=lambda s: _SEVERITY_RANK.get(s, 9))
        first = messages[0]
        same_place = all(m.community_id == first.community_id for m in messages)
        digest = Message(
            reason="digest",
            severity=worst,
            title_zh=f"{len(lines)} 条新事件"
            + (f"（{first.community_name}）" if same_place and first.community_name else ""),
            title_en=f"{len(lines)} new incidents",
            community_id=first.community_id if same_place else "",
            community_name=first.community_name if same_place else "",
            lines=tuple(lines),
        )
        recipients = list(
            {(r.get("staff_id"), r.get("name")): r for row in rows for r in row.recipients}.values()
        )
        with conn.transaction():
            new = conn.execute(
                "INSERT INTO notify_outbox (incident_id, created_at, reason, channel, severity, recipients,"
                " message, next_attempt_at) VALUES (NULL, %s, 'digest', %s, %s, %s, %s, %s)"
                " RETURNING notification_id",
                (now, name, worst, Jsonb(recipients), Jsonb(msgspec.to_builtins(digest)), now),
            ).fetchone()
            assert new is not None  # noqa: S101 - INSERT ... RETURNING
            conn.execute(
                "UPDATE notify_outbox SET state = 'digested', digest_id = %s, last_message = %s"
                " WHERE notification_id = ANY(%s)",
                (new[0], f"carried by digest {new[0]}", [r.notification_id for r in rows]),
            )
        self.count("notify_digests_total")
        self.count("notify_digested_total", len(rows))
        return OutboxRow(
            notification_id=int(new[0]),
            incident_id=None,
            created_at=now,
            reason="digest",
            severity=worst,
            recipients=recipients,
            message=msgspec.to_builtins(digest),
            attempts=0,
        )

    def deliver_due(
        self, conn: psycopg.Connection[Any], name: str, ended: threading.Event | None = None
    ) -> float:
        """One round of channel `name`: deliver what is due and the window allows (critical
        first, minor ones merged into a digest when the window cannot take them all), defer the
        rest; seconds until it is worth looking again (0: at once)."""
        ended = ended or threading.Event()
        window = self.windows[name]
        with conn.cursor(row_factory=class_row(OutboxRow)) as cur:
            rows = cur.execute(_DUE, (name, self.now(), ROUND_ROWS)).fetchall()
        if not rows:
            return self._next_due(conn, name)
        deferred: list[tuple[OutboxRow, float]] = []
        minor = [r for r in rows if r.severity != "critical"]
        for row in (r for r in rows if r.severity == "critical"):
            if ended.is_set():
                return 0.0
            wait = window.wait_s(self.clock(), critical=True)
            if wait > 0:
                deferred.append((row, wait))
            else:
                self.deliver(conn, name, row)
        if minor and not ended.is_set():
            spare = window.spare(self.clock(), critical=False)
            if spare >= len(minor):
                for row in minor:
                    if ended.is_set():
                        return 0.0
                    self.deliver(conn, name, row)
            elif spare >= 1:
                self.deliver(conn, name, self.digest(conn, name, minor))
            else:
                wait = window.wait_s(self.clock(), critical=False)
                deferred.extend((row, wait) for row in minor)
        if deferred:
            now = self.now()
            conn.execute(
                "UPDATE notify_outbox SET next_attempt_at = %s WHERE notification_id = ANY(%s)"
                " AND state IN ('pending', 'retrying')",
                (
                    now + timedelta(seconds=max(w for _, w in deferred)),
                    [r.notification_id for r, _ in deferred],
                ),
            )
        return 0.0 if len(rows) >= ROUND_ROWS or not deferred else min(w for _, w in deferred)

    def _next_due(self, conn: psycopg.Connection[Any], name: str) -> float:
        row = conn.execute(
            "SELECT min(next_attempt_at) FROM notify_outbox"
            " WHERE channel = %s AND state IN ('pending', 'retrying')",
            (name,),
        ).fetchone()
        if row is None or row[0] is None:
            return self.config.poll_interval_s
        due: datetime = row[0]
        return max(0.01, (due - self.now()).total_seconds())


def _digest_line(m: Message) -> str:
    sev = SEVERITY_ZH.get(m.severity, m.severity)
    number = f" #{m.incident_id}" if m.incident_id is not None else ""
    return f"【{sev}】{m.title_zh} · {place(m, 'masked')}{number}"


def _window(channel: Channel) -> RateWindow:
    cfg = channel.config
    return RateWindow(per_minute=cfg.minute_limit, per_second=cfg.second_limit, reserve=cfg.reserve_critical)


class _Worker(threading.Thread):
    """One channel's deliveries, in its own thread with its own connection."""

    def __init__(
        self, *, sender: Sender, name: str, channel: Channel, session_ended: threading.Event
    ) -> None:
        super().__init__(name=f"linli-notify-{name}", daemon=True)
        self.sender = sender
        self.channel_name = name
        self.channel = channel
        self.ended = session_ended
        self.wake = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        s = self.sender
        try:
            with psycopg.connect(s.dsn, autocommit=True, connect_timeout=5) as conn:
                self._seed(conn)
                while not self.ended.is_set():
                    self.wake.clear()
                    wait = s.deliver_due(conn, self.channel_name, self.ended)
                    if wait > 0:
                        self.wake.wait(min(wait, s.config.poll_interval_s))
        except psycopg.Error as exc:  # the session ends and starts again
            self.error = str(exc) or type(exc).__name__

    def _seed(self, conn: psycopg.Connection[Any]) -> None:
        rows = conn.execute(
            "SELECT extract(epoch FROM sent_at) FROM notify_outbox WHERE channel = %s AND sent_at > %s",
            (self.channel_name, self.sender.now() - timedelta(seconds=60)),
        ).fetchall()
        self.sender.windows[self.channel_name].seed(float(r[0]) for r in rows)

"""``linli cloud alerts``: follow the alert feed and turn what was committed into incidents.

One `AlertService` runs one partition (``K/N``) in a loop of sessions. A session:

1. connects twice (autocommit): a working connection, and a listening one that ``LISTEN`` s on the
   feed channel (`cloud.alerts.feed.FEED_CHANNEL`: the ingest notifies it in the transaction
   that appends to the feed, so it arrives only after the commit) and holds the partition's
   session advisory lock: a second process for the same partition waits as a hot standby;
2. loads the partition's checkpoint and engine state (`cloud.alerts.ledger.load`) and builds a
   fresh engine restored from it;
3. reads the feed after the checkpoint, up to ``max_feed_rows_per_txn`` rows and
   ``max_readings_per_txn`` readings at a time (a critical incident ends the transaction early,
   so it commits at once), steps the
   engine through them, runs its time-based checks every ``tick_interval_s``, and commits the
   actions, the changed state and the new checkpoint in one transaction
   (`cloud.alerts.ledger.commit`). When it has read all its rows, the checkpoint moves on to
   the feed's horizon (rows of other partitions), so an idle partition does not hold back pruning;
4. waits for a notification, at most ``poll_interval_s`` (the fallback when a notification is
   lost) or until the next tick.

Any database error ends the session: the engine, which may have advanced past what was
committed, is thrown away, and the next session (after a capped, jittered backoff) starts again
from the committed state. So a feed row is evaluated exactly once into the committed state,
whatever fails when. A feed row that does not decode is skipped, counted and logged, never
retried forever; rows below it are evaluated first.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import zlib
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any, Final, Protocol

import psycopg

from cloud.alerts import ledger
from cloud.alerts.detect.runner import STATE_PREFIX as DETECT_PREFIX
from cloud.alerts.feed import FEED_CHANNEL, FeedRow, Partition, feed_horizon, prune_feed, read_feed
from cloud.alerts.model import Action
from cloud.alerts.rules import Rule
from cloud.config import AlertsConfig
from cloud.endpoint import Snapshot
from cloud.errors import FeedError, StoreUnavailable
from cloud.ingest.worker import backoff_delay

log = logging.getLogger("linli.cloud.alerts")

#: Feed rows every partition has passed are pruned this often (seconds).
PRUNE_EVERY_S: Final = 300.0

_ACTION_COUNTER: Final = {
    "fire": "alerts_incidents_fired_total",
    "repeat": "alerts_incidents_repeated_total",
    "clear": "alerts_incidents_cleared_total",
    "note": "alerts_incidents_noted_total",
}


class EngineLike(Protocol):
    """What the service needs of the rule engine (`cloud.alerts.engine.Engine`)."""

    def restore(self, states: Iterable[tuple[str, bytes]]) -> None: ...
    def step(self, row: FeedRow, *, wall_us: int) -> list[Action]: ...
    def tick(self, *, wall_us: int) -> list[Action]: ...
    def take_dirty(self) -> dict[str, bytes | None]: ...
    def snapshot(self) -> dict[str, int]: ...
    def clocks(self, *, wall_us: int) -> dict[str, int]: ...
    def rules_of(self, community_id: str) -> tuple[Rule, ...]: ...


class DetectionLike(Protocol):
    """The detection rounds (`cloud.alerts.detect.round.DetectionRound`), as the service sees them."""

    def restore(self, states: Iterable[tuple[str, bytes]]) -> None: ...
    def observe(self, row: FeedRow) -> None: ...
    def run(
        self, conn: psycopg.Connection[Any], clocks: dict[str, int], engine: EngineLike
    ) -> list[Action]: ...
    def take_dirty(self) -> dict[str, bytes | None]: ...


def partition_lock_key(partition: Partition) -> int:
    """The session advisory lock a partition's active process holds ("linlip" and a hash)."""
    return (0x6C696E6C6970 << 16) | (zlib.crc32(str(partition).encode()) & 0xFFFF)


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class AlertService:
    """One partition of the alert service; `run` it on a thread, `stop` it with the event."""

    def __init__(
        self,
        *,
        database_url: str,
        config: AlertsConfig,
        make_engine: Callable[[], EngineLike],
        make_detection: Callable[[], DetectionLike] | None = None,
        clock_us: Callable[[], int] = wall_clock_us,
        monotonic: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self._dsn = database_url
        self._config = config
        self._partition = Partition.parse(config.partition)
        self._make_engine = make_engine
        self._make_detection = make_detection
        self._detection: DetectionLike | None = None
        self._clock_us = clock_us
        self._monotonic = monotonic
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter, not cryptography
        self._engine: EngineLike | None = None
        self.counters: dict[str, int] = {
            "alerts_feed_rows_total": 0,
            "alerts_readings_evaluated_total": 0,
            "alerts_feed_rows_skipped_total": 0,
            "alerts_transactions_total": 0,
            "alerts_incidents_fired_total": 0,
            "alerts_incidents_repeated_total": 0,
            "alerts_incidents_noted_total": 0,
            "alerts_incidents_cleared_total": 0,
            "alerts_sessions_total": 0,
            "alerts_detector_actions_total": 0,
        }
        self._renew = threading.Event()
        self.checkpoint = 0
        self.database = "down"
        self.role = "starting"
        self._last_commit_lag_s = 0.0

    @property
    def partition(self) -> Partition:
        return self._partition

    def snapshot(self) -> Snapshot:
        engine = self._engine
        gauges: dict[str, float] = {
            "alerts_checkpoint_feed_seq": float(self.checkpoint),
            "alerts_feed_lag_seconds": self._last_commit_lag_s,
        }
        if engine is not None:
            gauges.update({f"alerts_engine_{k}": float(v) for k, v in engine.snapshot().items()})
        return Snapshot(
            counters=dict(self.counters),
            gauges=gauges,
            health={"database": self.database, "role": self.role, "partition": str(self._partition)},
            parts=("database",),
        )

    def renew(self) -> None:
        """End the session after the transaction in progress and start a new one: its engine and
        detection are made again (with a reloaded directory), their state restored from the ledger."""
        self._renew.set()

    def run(self, stop: threading.Event) -> None:
        """Sessions until `stop` is set; database trouble means backoff and a new session."""
        attempt = 0
        while not stop.is_set():
            try:
                self._session(stop)
                attempt = 0
            except StoreUnavailable as exc:
                self.database = "down"
                delay = backoff_delay(
                    attempt, base=self._config.backoff_base_s, cap=self._config.backoff_cap_s, rng=self._rng
                )
                attempt += 1
                log.warning("alert service: %s; new session in %.1f s", exc, delay)
                stop.wait(delay)
            finally:
                self._engine = None
                self._detection = None

    def _session(self, stop: threading.Event) -> None:
        try:
            with (
                psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as conn,
                psycopg.connect(self._dsn, autocommit=True, connect_timeout=5) as listener,
            ):
                self.database = "up"
                self._serve(conn, listener, stop)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"database unavailable: {exc}") from exc

    def _serve(
        self, conn: psycopg.Connection[Any], listener: psycopg.Connection[Any], stop: threading.Event
    ) -> None:
        self.counters["alerts_sessions_total"] += 1
        listener.execute(f"LISTEN {FEED_CHANNEL}")
        key = partition_lock_key(self._partition)
        self.role = "standby"
        while not stop.is_set():
            row = listener.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
            if row is not None and row[0]:
                break
            log.info("partition %s is held by another process: standing by", self._partition)
            stop.wait(self._config.poll_interval_s * 5)
        if stop.is_set():
            return
        self.role = "active"
        saved = ledger.load(conn, self._partition)
        engine = self._make_engine()
        engine.restore((k, v) for k, v in saved.states if not k.startswith(DETECT_PREFIX))
        self._engine = engine
        self._detection = self._make_detection() if self._make_detection is not None else None
        if self._detection is not None:
            self._detection.restore(saved.states)
        self.checkpoint = saved.feed_seq
        log.info("partition %s active from feed_seq %d", self._partition, self.checkpoint)
        tick_every = self._config.tick_interval_s
        next_tick = self._monotonic()
        next_prune = self._monotonic() + PRUNE_EVERY_S
        while not stop.is_set():
            if self._renew.is_set():
                self._renew.clear()
                log.info("partition %s: a new session, with the reloaded inventory", self._partition)
                return
            more = self._evaluate(conn, engine, tick=self._monotonic() >= next_tick)
            now = self._monotonic()
            if now >= next_tick:
                next_tick = now + tick_every
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_S
                self._prune(conn)
            if not more:
                self._wait(listener, min(self._config.poll_interval_s, max(0.0, next_tick - now)))

    def _evaluate(self, conn: psycopg.Connection[Any], engine: EngineLike, *, tick: bool) -> bool:
        """One transaction's worth: feed rows (and a tick); True if more rows may be waiting."""
        limit = self._config.max_feed_rows_per_txn
        max_readings = self._config.max_readings_per_txn
        skipped: int | None = None
        horizon = feed_horizon(conn)  # read first: every row up to it is committed and visible below
        part = self._partition
        try:
            rows = read_feed(
                conn, after=self.checkpoint, partition=part, limit_rows=limit, limit_readings=max_readings
            )
        except FeedError as exc:
            log.error("alert feed row %d does not decode, skipped: %s", exc.feed_seq, exc)
            skipped = exc.feed_seq
            rows = read_feed(
                conn,
                after=self.checkpoint,
                partition=part,
                limit_rows=limit,
                limit_readings=max_readings,
                before=exc.feed_seq,
            )
        wall_us = self._clock_us()
        actions: list[tuple[int, Action]] = []
        readings = 0
        full = len(rows) >= limit
        evaluated = 0
        detection = self._detection
        for row in rows:
            fired = engine.step(row, wall_us=wall_us)
            if detection is not None:
                detection.observe(row)
            actions.extend((row.feed_seq, action) for action in fired)
            readings += sum(len(env.readings) for env in row.envelopes)
            evaluated += 1
            if evaluated < len(rows) and any(a.kind == "fire" and a.severity == "critical" for a in fired):
                full = True  # commit a critical incident now; the rows after it come next
                break
        rows = rows[:evaluated]
        full = full or readings >= max_readings
        checkpoint = rows[-1].feed_seq if rows else self.checkpoint
        if skipped is not None and not full:
            checkpoint = skipped
        elif skipped is None and not full:
            checkpoint = max(checkpoint, horizon)  # the other partitions' rows: none of ours there
        if tick:
            actions.extend((checkpoint, a) for a in engine.tick(wall_us=wall_us))
        states = engine.take_dirty()
        if tick and detection is not None and not full:
            found = detection.run(conn, engine.clocks(wall_us=wall_us), engine)
            actions.extend((checkpoint, a) for a in found)
            states.update(detection.take_dirty())
            self.counters["alerts_detector_actions_total"] += len(found)
        if checkpoint == self.checkpoint and not actions and not states:
            return False
        ledger.commit(conn, partition=self._partition, feed_seq=checkpoint, actions=actions, states=states)
        self.checkpoint = checkpoint
        c = self.counters
        c["alerts_transactions_total"] += 1
        c["alerts_feed_rows_total"] += len(rows)
        c["alerts_readings_evaluated_total"] += readings
        if skipped is not None and checkpoint == skipped:
            c["alerts_feed_rows_skipped_total"] += 1
        for _, a in actions:
            c[_ACTION_COUNTER[a.kind]] += 1
        if rows:
            self._last_commit_lag_s = max(0.0, wall_us / 1e6 - rows[-1].committed_at.timestamp())
        return full or (skipped is not None and checkpoint == skipped)

    def _wait(self, listener: psycopg.Connection[Any], timeout: float) -> None:
        if timeout <= 0:
            return
        for _ in listener.notifies(timeout=timeout, stop_after=1):
            pass
        # drain what else arrived meanwhile: one read of the feed covers them all
        for _ in listener.notifies(timeout=0.0):
            pass

    def _prune(self, conn: psycopg.Connection[Any]) -> None:
        hours = self._config.feed_retention_hours
        n = prune_feed(conn, keep_after=self.checkpoint, older_than=timedelta(hours=hours))
        if n:
            log.info("pruned %d alert feed rows", n)

"""Northbound: form batches from the buffer and publish them to the cloud broker, alarms first.

A batch is formed (fixed: envelope bytes and ``batch_seq`` written to the buffer, its readings
removed, in one transaction) only when the link is up and the window has room, and deleted only
after its PUBACK. After a reconnect or a restart the fixed batches are published again byte for
byte, so the cloud can de-duplicate on ``(gateway_id, batch_seq)``.

Priority: alarm readings form a batch as soon as they are committed, and the alarm lane has its
own window (``alarm_batches_in_flight``), so an alarm never waits behind the telemetry backlog: at most the
telemetry batches already handed to the socket are ahead of it. Telemetry forms a batch when
``batch_max_readings`` are waiting or the oldest has waited ``batch_max_latency_ms``.

A buffer that cannot write (a full disk) stops the forming of batches, not the rest: the batches
in flight are still acknowledged, and forming is retried every ``buffer_retry_s``.

While the link is down, alarms waiting (committed readings, or alarm batches not yet acknowledged)
hurry it (`MqttLink.hurry`): it attempts to reconnect at once and then every ``cloud.alarm_retry_s``
or so instead of waiting out its backoff; a telemetry backlog alone keeps the backoff.

A PUBACK that says no subscription matched (the cloud broker restarted and the ingest has not
subscribed again yet: Mosquitto 2.0 does not restore shared subscriptions) means nobody has the
batch: it stays fixed and goes again after `NO_SUBSCRIBER_RETRY_S` (0.2 s for alarms).

Pacing: with ``telemetry_max_readings_per_s`` set (for metered or narrow links), telemetry batches
are spaced so that the telemetry rate stays under it; alarm batches are never paced.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

from edge.buffer import ALARM, TELEMETRY, Batch, Buffer
from edge.envelope import BatchClass, encode_envelope
from edge.errors import BufferError_, MqttError, NoSubscribers, UplinkUnavailable
from edge.logs import get_logger
from edge.mqtt import MqttLink

_log = get_logger("edge.uplink")

#: Counters the envelope carries (cumulative, as of the batch's formation).
ENVELOPE_COUNTERS = ("evicted", "expired", "quarantined", "quarantine_dropped", "duplicates_dropped")
#: Seconds before a batch the cloud broker delivered to nobody goes again, by batch class.
NO_SUBSCRIBER_RETRY_S: Final = {ALARM: 0.2, TELEMETRY: 2.0}
#: A batch the cloud broker refused (a negative PUBACK: not authorized, quota exceeded, ...) goes
#: again after this many seconds, doubling with each refusal in a row up to the cap, jittered: a
#: refusal is a configuration a person fixes (the certificate, the broker's ACL), and the batch
#: must still be there, and go, when they have.
REFUSED_RETRY_BASE_S: Final = 1.0
REFUSED_RETRY_CAP_S: Final = 60.0


@dataclass(slots=True)
class _InFlight:
    batch: Batch
    future: asyncio.Future[None]


class Uplink:
    """Owns the batches between the buffer and the cloud link. Run it with `run()`."""

    def __init__(
        self,
        *,
        link: MqttLink,
        buffer: Buffer,
        topic: str,
        gateway_id: str,
        alarm_topic: str | None = None,
        community_id: str,
        batch_max_readings: int = 500,
        batch_max_latency_s: float = 1.0,
        telemetry_batches_in_flight: int = 4,
        alarm_batches_in_flight: int = 16,
        telemetry_max_readings_per_s: float = 0.0,
        buffer_retry_s: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.link = link
        self.buffer = buffer
        self.topic = topic
        #: alarm batches go here (their own topic: the ingest reads them on their own connection)
        self.alarm_topic = alarm_topic or topic
        self.gateway_id = gateway_id
        self.community_id = community_id
        self.batch_max = batch_max_readings
        self.latency = batch_max_latency_s
        self.telemetry_batches_in_flight = telemetry_batches_in_flight
        self.alarm_batches_in_flight = alarm_batches_in_flight
        self.telemetry_rate = telemetry_max_readings_per_s
        self._telemetry_next_at = 0.0  # pacing: no telemetry batch before this monotonic time
        self.monotonic = monotonic
        self.wall = wall
        self._wake = asyncio.Event()
        self._inflight: dict[int, _InFlight] = {}
        #: batches the cloud broker delivered to nobody (`NoSubscribers`): seq -> (due, batch)
        self._retry: dict[int, tuple[float, Batch]] = {}
        self.pending = [0, 0]  # readings waiting in the buffer, per class
        self._telemetry_since: float | None = None
        self.readings_sent = 0
        self.batches_sent = 0
        self._drained = asyncio.Event()
        self.buffer_retry_s = buffer_retry_s
        self.buffer_error: str | None = None  # the last write error, None once a write succeeds
        #: why the cloud broker refuses our batches (its reason code), None once one is accepted
        self.refused: str | None = None
        self.batches_refused = 0
        #: answers "no matching subscribers" (a batch the cloud broker delivered to nobody)
        self.batches_unheard = 0
        self._refused_in_row = 0

    # -- input ----------------------------------------------------------------------------

    def notify(self, *, alarm: int, telemetry: int) -> None:
        """New readings were committed to the buffer."""
        self.pending[ALARM] += alarm
        self.pending[TELEMETRY] += telemetry
        first = False
        if telemetry and self._telemetry_since is None:
            self._telemetry_since = self.monotonic()
            first = True  # the loop must start the latency timer
        if alarm or first or self.pending[TELEMETRY] >= self.batch_max:
            self._wake.set()
        if alarm:
            self.link.hurry()  # nothing happens while the link is up

    def evicted(self, count: int) -> None:
        """Telemetry readings were evicted or expired from the buffer."""
        self.pending[TELEMETRY] = max(0, self.pending[TELEMETRY] - count)
        if not self.pending[TELEMETRY]:
            # Nothing waits any more: the next reading must start the latency timer afresh.
            self._telemetry_since = None

    @property
    def in_flight(self) -> int:
        return len(self._inflight)

    @property
    def unheard(self) -> int:
        """Batches the cloud broker delivered to nobody, waiting to go again."""
        return len(self._retry)

    @property
    def idle(self) -> bool:
        """Nothing waiting and nothing in flight."""
        return not self._inflight and not self._retry and not any(self.pending)

    # -- the loop -------------------------------------------------------------------------

    def _build(self, seq: int, batch_class: BatchClass, readings: bytes, counters: dict[str, int]) -> bytes:
        return encode_envelope(
            gateway_id=self.gateway_id,
            community_id=self.community_id,
            batch_seq=seq,
            batch_class=batch_class,
            created_at_us=int(self.wall() * 1_000_000),
            counters={k: counters.get(k, 0) for k in ENVELOPE_COUNTERS},
            readings=readings,
        )

    async def run(self) -> None:
        stats = await self.buffer.stats()
        self.pending = [stats.alarm_readings, stats.telemetry_readings]
        if stats.telemetry_readings:
            self._telemetry_since = self.monotonic()
        if stats.alarm_readings or any(b.batch_class == ALARM for b in await self.buffer.batches()):
            self.link.hurry()
        while True:
            await self.link.wait_connected()
            try:
                await self._session()
            except UplinkUnavailable as exc:
                _log.info("uplink_interrupted", error=str(exc))
            alarm_unacked = self._count(ALARM) > 0  # fixed: published again after reconnecting
            self._inflight.clear()
            if self.link.connected:
                await self.link.wait_disconnected()
            if alarm_unacked or self.pending[ALARM]:
                self.link.hurry()

    async def _session(self) -> None:
        """One connection: resend fixed batches (alarm first), then form and send new ones."""
        epoch = self.link.epoch
        self._retry.clear()  # they are fixed batches: resent just below
        fixed = await self.buffer.batches()
        for batch in (b for b in fixed if b.batch_class == ALARM):
            self._send(batch)
        await self._form_all(ALARM)
        for batch in (b for b in fixed if b.batch_class == TELEMETRY):
            self._send(batch)
        if fixed:
            _log.info("batches_resent", count=len(fixed))
        while self.link.connected and self.link.epoch == epoch:
            self._wake.clear()
            await self._reap()
            self._resend_due()
            await self._form_all(ALARM)
            await self._form_telemetry()
            timeout = None
            if self.pending[TELEMETRY] and self._telemetry_since is not None:
                timeout = max(
                    0.0,
                    self._telemetry_since + self.latency - self.monotonic(),
                    self._telemetry_next_at - self.monotonic(),
                )
            if self._retry:
                due = max(0.0, min(d for d, _ in self._retry.values()) - self.monotonic())
                timeout = due if timeout is None else min(timeout, due)
            if self._inflight or timeout is not None or not self._wake.is_set():
                await self._wait(timeout)

    async def _wait(self, within_s: float | None) -> None:
        waiters: list[asyncio.Future[Any]] = [
            asyncio.ensure_future(self._wake.wait()),
            asyncio.ensure_future(self.link.wait_disconnected()),
        ]
        try:
            await asyncio.wait(
                [*waiters, *(f.future for f in self._inflight.values())],
                timeout=within_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            for w in waiters:
                w.cancel()
            # Not `suppress(CancelledError): await w`: that also swallowed a cancel of this task
            # landing meanwhile, and the agent's shutdown then waited for the uplink forever.
            for outcome in await asyncio.gather(*waiters, return_exceptions=True):
                if isinstance(outcome, Exception):  # not their cancellation: a fault of theirs
                    raise outcome

    def _resend_due(self) -> None:
        now = self.monotonic()
        for seq, (due, batch) in sorted(self._retry.items(), key=lambda kv: kv[1][1].batch_class != ALARM):
            if due <= now and self.link.connected:
                del self._retry[seq]
                self._send(batch)

    def _send(self, batch: Batch) -> None:
        topic = self.alarm_topic if batch.batch_class == ALARM else self.topic
        future = self.link.publish(topic, batch.payload, qos=1)
        self._inflight[batch.seq] = _InFlight(batch, future)

    def _count(self, batch_class: int) -> int:
        """Places taken in `batch_class`'s window: batches in flight, and batches waiting to go
        again (delivered to nobody, or refused). A waiting batch keeps its place: otherwise each
        place it freed formed another batch, and a backlog behind a broker that delivers to nobody
        became batches held in memory (a 200,000-reading backlog: 400 batches, 45 MB)."""
        return sum(1 for f in self._inflight.values() if f.batch.batch_class == batch_class) + sum(
            1 for _, b in self._retry.values() if b.batch_class == batch_class
        )

    async def _form_all(self, batch_class: int) -> None:
        limit = self.alarm_batches_in_flight if batch_class == ALARM else self.telemetry_batches_in_flight
        while self.pending[batch_class] > 0 and self._count(batch_class) < limit and self.link.connected:
            if not await self._form(batch_class):
                break

    async def _form_telemetry(self) -> None:
        while (
            self.pending[TELEMETRY] > 0
            and self._count(TELEMETRY) < self.telemetry_batches_in_flight
            and self.link.connected
        ):
            if self.pending[ALARM] and self._count(ALARM) < self.alarm_batches_in_flight:
                return  # an alarm committed meanwhile goes first, not behind the rest of the window
            full = self.pending[TELEMETRY] >= self.batch_max
            late = (
                self._telemetry_since is not None and self.monotonic() - self._telemetry_since >= self.latency
            )
            if not (full or late):
                return
            now = self.monotonic()
            if self.telemetry_rate and now < self._telemetry_next_at:
                return
            if not await self._form(TELEMETRY):
                return

    def _buffer_failed(self, exc: BufferError_) -> None:
        if str(exc) != self.buffer_error:
            _log.error("uplink_buffer_failed", error=str(exc))
        self.buffer_error = str(exc)

    async def _form(self, batch_class: int) -> bool:
        try:
            batch = await self.buffer.form_batch(batch_class, self.batch_max, self._build)
        except BufferError_ as exc:
            # Nothing was formed (the transaction rolled back); the batches in flight go on.
            self._buffer_failed(exc)
            await asyncio.sleep(self.buffer_retry_s)
            return False
        self.buffer_error = None
        if batch is None:
            self.pending[batch_class] = 0
            if batch_class == TELEMETRY:
                self._telemetry_since = None
            return False
        self.pending[batch_class] = max(0, self.pending[batch_class] - batch.count)
        if batch_class == TELEMETRY:
            now = self.monotonic()
            self._telemetry_since = now if self.pending[TELEMETRY] else None
            if self.telemetry_rate:
                spacing = batch.count / self.telemetry_rate
                self._telemetry_next_at = max(now, self._telemetry_next_at) + spacing
        self._send(batch)
        return True

    async def _reap(self) -> None:
        """Delete the batches whose PUBACK arrived; re-raise a lost link."""
        for seq, f in list(self._inflight.items()):
            if not f.future.done():
                continue
            exc = f.future.exception()
            if isinstance(exc, UplinkUnavailable):
                raise exc  # left in the window: `run()` sees which batches went unacknowledged
            del self._inflight[seq]
            if isinstance(exc, NoSubscribers):
                # Accepted but delivered to nobody (the ingest has not subscribed again after a
                # broker restart): nobody has it, so it stays fixed and goes again shortly.
                delay = NO_SUBSCRIBER_RETRY_S[f.batch.batch_class]
                self._retry[seq] = (self.monotonic() + delay, f.batch)
                self.batches_unheard += 1
                _log.warning("batch_unheard", seq=seq, retry_in_s=delay)
                continue
            if exc is not None:
                # A negative PUBACK: not delivered. It stays fixed in the buffer and goes again
                # later; said once per reason, not once per batch.
                self._refuse(seq, f.batch, getattr(exc, "reason", "") or str(exc))
                continue
            try:
                await self.buffer.delete_batch(seq)
            except BufferError_ as failed:
                # It stays fixed: published again after the next reconnect, the cloud drops it.
                self._buffer_failed(failed)
                continue
            self.readings_sent += f.batch.count
            self.batches_sent += 1
            if self.refused is not None:
                _log.info("batches_accepted_again", refused=self.batches_refused)
                self.refused, self._refused_in_row = None, 0
            _log.debug("batch_acked", seq=seq, readings=f.batch.count, batch_class=f.batch.batch_class)

    def _refuse(self, seq: int, batch: Batch, reason: str) -> None:
        self.batches_refused += 1
        self._refused_in_row += 1
        backoff = min(REFUSED_RETRY_CAP_S, REFUSED_RETRY_BASE_S * 2 ** min(self._refused_in_row - 1, 16))
        delay = backoff * (0.5 + random.random() / 2)  # noqa: S311 - jitter, not a secret
        self._retry[seq] = (self.monotonic() + delay, batch)
        if reason != self.refused:
            _log.error("batch_refused", seq=seq, reason=reason, retry_in_s=round(delay, 1))
            self.refused = reason

    async def drain(self, *, within_s: float) -> bool:
        """Send everything buffered while the link is up, up to `timeout`: forms batches without
        waiting for the latency timer. Returns whether the buffer emptied."""
        self.latency = 0.0
        self._wake.set()
        deadline = self.monotonic() + within_s
        while self.monotonic() < deadline:
            if not self.link.connected:
                return False
            if self.idle:
                return True
            self._wake.set()
            await asyncio.sleep(0.02)
        return self.idle

    async def wait_acks(self, *, within_s: float) -> None:
        """Wait for the PUBACKs of what is in flight (and delete those batches)."""
        if not self._inflight:
            return
        with contextlib.suppress(TimeoutError, MqttError):
            async with asyncio.timeout(within_s):
                await asyncio.gather(*(f.future for f in self._inflight.values()), return_exceptions=True)
                await self._reap()

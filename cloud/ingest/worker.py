"""One ingest worker: broker -> decode -> bounded queue -> transaction -> PUBACK.

Two lanes, each a broker connection, a bounded queue, a database connection and a writer thread:
telemetry and gateway statuses (``linli/v1/+/+/up`` shared among the workers, ``.../status``), and
alarms (``linli/v1/+/+/alarm``, shared, on a client id ending in ``-alarm``). So an SOS never
waits behind a telemetry backlog, neither in the broker's queue for this worker nor in a
transaction of 50,000 readings being written. Threads, each with one owner:

- paho's network thread of each lane (owned by its `Consumer`) decodes each message and puts it
  on the lane's queue;
- each lane's writer thread (owned here) groups queued messages into transactions of up to
  ``ingest.max_readings_per_txn`` readings or ``ingest.txn_max_latency_ms``, commits, then
  acknowledges (in arrival order on that connection);
- the maintenance thread (owned here) runs retention, the rollup and pruning on a schedule.

Alarm batches do not linger, on either lane (an older edge sends them on ``up``). A group closes
as soon as it holds an alarm-class batch (``"class": "alarm"``: an SOS press, an open cover) and
commits at once, in two transactions:
the alarm batch alone first (a small, fast commit, and a feed row the alert service evaluates at
once), then the telemetry gathered before it. The acknowledgements follow both commits, in
arrival order (MQTT wants PUBACKs in order), as for any other transaction. Messages still
queued behind the alarm go to the next group. A group of telemetry, statuses and dead letters
only keeps lingering to fill up. Claims, de-duplication and acknowledgements are the same for
both, so a redelivered alarm batch is still stored once.

When the database refuses a message's data (what envelope validation cannot foresee, such as a
status document jsonb refuses), the group is split until that message is alone and it is
dead-lettered with the server's reason; the rest is stored. While the database is unreachable
the writer keeps its group, retries with capped jittered backoff and acknowledges nothing; the
broker stops sending once ``receive_maximum`` messages are unacknowledged, and nothing is lost.
Each state change (database down or back, broker down or back) is logged once.

Memory held while acknowledgements are withheld, per lane (docs/storage.md has the figures):

- the payloads of at most ``mqtt.receive_maximum`` messages (the broker sends no more until we
  acknowledge), each at most the edge's ``max_packet_bytes``;
- decoded readings, about five times their MessagePack size, for at most one transaction
  (``ingest.max_readings_per_txn`` plus one batch) and ``ingest.decode_ahead_readings`` queued
  behind it (plus one batch). Messages beyond that wait in the queue as received and are decoded
  by the writer when it takes them. Without this cap a backlog of 500-reading batches held
  ``receive_maximum`` x 500 decoded readings per lane (about 100 MB each at the defaults).

When the database comes back and the backlog is written, the heap's free pages go back to the
operating system (`release_free_heap`).

`stop` shuts down in a fixed order: stop intake, commit what is queued, acknowledge it,
disconnect, stop maintenance.
"""

from __future__ import annotations

import logging
import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import msgspec

from cloud.config import CloudSettings, MqttConfig
from cloud.endpoint import Snapshot
from cloud.errors import BatchRejected, EnvelopeError, StoreUnavailable
from cloud.heap import release_free_heap
from cloud.ingest.consumer import ALARM_FILTER, Consumer, Inbound
from cloud.ingest.envelope import ALARM, Envelope, decode, topic_ids
from cloud.store.maintenance import Maintenance
from cloud.store.mode import ModeInfo
from cloud.store.writer import BatchWriter, DeadLetter, GatewayStatus, WriteResult

log = logging.getLogger("linli.cloud.ingest")

_STOP: Final = object()
_status_decoder: Final = msgspec.json.Decoder(dict[str, Any])


def backoff_delay(attempt: int, *, base: float, cap: float, rng: random.Random) -> float:
    """Capped, fully jittered exponential backoff."""
    return rng.uniform(0, min(cap, base * 2 ** min(attempt, 30)))


@dataclass(frozen=True, slots=True)
class _Item:
    inbound: Inbound
    batch: Envelope | None = None
    dead: DeadLetter | None = None
    status: GatewayStatus | None = None

    @property
    def size(self) -> int:
        return len(self.batch.readings) if self.batch is not None else 1

    @property
    def decoded(self) -> bool:
        """False for a message queued as received (decoded when the writer takes it)."""
        return self.batch is not None or self.dead is not None or self.status is not None

    @property
    def decoded_readings(self) -> int:
        return len(self.batch.readings) if self.batch is not None else 0

    @property
    def alarm(self) -> bool:
        """An alarm-class batch: its transaction commits without lingering."""
        return self.batch is not None and self.batch.batch_class == ALARM


def _alarms_first(group: list[_Item]) -> list[list[_Item]]:
    """The group's alarm batches in a transaction of their own, committed before the telemetry
    gathered with them (acknowledgements still follow both commits, in arrival order)."""
    alarms = [i for i in group if i.alarm]
    if not alarms or len(alarms) == len(group):
        return [group]
    return [alarms, [i for i in group if not i.alarm]]


def classify(msg: Inbound) -> _Item:
    """Decode one message into a batch, a gateway status, or a dead letter (never raises)."""
    kind = msg.topic.rsplit("/", 1)[-1]
    if kind == "status":
        ids = topic_ids(msg.topic)
        try:
            doc = _status_decoder.decode(msg.payload) if msg.payload else {"state": "offline"}
        except msgspec.DecodeError as exc:
            return _Item(
                msg, dead=DeadLetter(msg.topic, msg.payload, f"malformed status: {exc}", msg.received_at)
            )
        if ids is None:
            return _Item(msg, dead=DeadLetter(msg.topic, msg.payload, "unexpected topic", msg.received_at))
        state = str(doc.get("state", "unknown"))
        return _Item(msg, status=GatewayStatus(ids[0], ids[1], state, doc, msg.received_at))
    try:
        return _Item(msg, batch=decode(msg.topic, msg.payload))
    except EnvelopeError as exc:
        return _Item(msg, dead=DeadLetter(msg.topic, msg.payload, exc.reason, msg.received_at))


class _Lane:
    """One broker connection, its bounded queue, and its writer (a database connection and the
    thread that owns it). The worker has two: telemetry and statuses (``up``, ``status``), and
    alarms (``alarm``): an alarm never queues behind a telemetry backlog, at the broker or here."""

    def __init__(
        self, *, worker: IngestWorker, name: str, config: MqttConfig, filters: list[str] | None
    ) -> None:
        self.worker = worker
        self.name = name
        self.queue: queue.Queue[_Item | object] = queue.Queue(maxsize=config.receive_maximum + 1024)
        #: Messages of the transaction being gathered or written (0 once it committed).
        self.gathering = 0
        self._decode_ahead = worker.settings.ingest.decode_ahead_readings
        self._held_lock = threading.Lock()
        #: Readings decoded on paho's thread and still queued (at most `_decode_ahead` + a batch).
        self.decoded_ahead = 0
        #: Readings of the transaction being gathered or written.
        self.group_readings = 0
        #: Payload bytes of the messages received and not yet acknowledged.
        self.held_bytes = 0
        self.last_commit: float | None = None
        self.consumer = Consumer(
            config=config, on_message=self._on_message, on_state=worker._on_broker_state, filters=filters
        )
        self.writer = BatchWriter(database_url=worker.settings.database_url)
        self.thread = threading.Thread(target=self._write_loop, name=f"linli-ingest-{name}", daemon=True)

    # -- paho thread ---------------------------------------------------------------------------

    def _on_message(self, msg: Inbound) -> None:
        self.worker.count("messages_received")
        if not self.worker._intake.is_set():
            return  # not acknowledged: the broker keeps it for our next session
        with self._held_lock:
            room = self.decoded_ahead < self._decode_ahead
        item = classify(msg) if room else _Item(msg)
        with self._held_lock:
            self.decoded_ahead += item.decoded_readings
            self.held_bytes += len(msg.payload)
        self.queue.put(item)

    # -- writer thread -------------------------------------------------------------------------

    def _take(self, item: _Item) -> _Item:
        """`item` decoded, now counted in the transaction rather than ahead of it."""
        if item.decoded:
            with self._held_lock:
                self.decoded_ahead -= item.decoded_readings
        else:
            item = classify(item.inbound)
        self.group_readings += item.decoded_readings
        return item

    def _release(self, group: list[_Item]) -> None:
        """Forget `group` (committed and acknowledged) in the held figures."""
        self.group_readings = 0
        with self._held_lock:
            self.held_bytes -= sum(len(i.inbound.payload) for i in group)

    def _collect(self, first: _Item) -> tuple[list[_Item], bool]:
        """The next transaction's messages, and whether the stop marker was seen.

        Closes at ``max_readings_per_txn`` readings, ``txn_max_latency_ms`` after `first`, or
        as soon as it holds an alarm-class batch.
        """
        w = self.worker
        first = self._take(first)
        group = [first]
        self.gathering = 1
        size = first.size
        limit = w.settings.ingest.max_readings_per_txn
        deadline = w._monotonic() + w.settings.ingest.txn_max_latency_ms / 1000
        alarm = first.alarm
        while size < limit and not alarm:
            remaining = deadline - w._monotonic()
            try:
                item = self.queue.get(timeout=remaining) if remaining > 0 else self.queue.get_nowait()
            except queue.Empty:
                break
            if not isinstance(item, _Item):  # the stop marker
                return group, True
            item = self._take(item)
            group.append(item)
            self.gathering = len(group)
            size += item.size
            alarm = item.alarm
        if alarm:
            w.count("alarm_transactions")
        return group, False

    def _write_loop(self) -> None:
        stop_seen = False
        while not stop_seen:
            first = self.queue.get()
            if not isinstance(first, _Item):  # the stop marker
                break
            group, stop_seen = self._collect(first)
            for part in _alarms_first(group):
                if not self._store(part):
                    log.warning("stopping with %d messages uncommitted (the broker keeps them)", len(group))
                    return
            self.last_commit = self.worker._monotonic()
            self.gathering = 0
            acked = self.consumer.ack(i.inbound for i in group)
            self._release(group)
            self.worker.count("messages", len(group))
            self.worker.count("acks", acked)
            if self.worker._trim_pending and self.queue.empty():
                self.worker._trim_pending = False
                release_free_heap()

    def _store(self, group: list[_Item]) -> bool:
        """Commit `group` (in one transaction when the database takes it); False when stopping
        before it could be committed.

        When the database refuses the data itself, the group is split in halves until the
        message at fault is alone; that one is dead-lettered with the server's reason, and
        everything else is stored.
        """
        try:
            result = self._write_retrying(group)
        except BatchRejected as exc:
            if len(group) > 1:
                mid = len(group) // 2
                return self._store(group[:mid]) and self._store(group[mid:])
            item = group[0]
            self.worker.count("db_rejected")
            if item.dead is not None:
                log.error(
                    "the database refused a dead letter from %s, dropping it: %s", item.inbound.topic, exc
                )
                return True
            log.warning(
                "the database refused a message from %s, dead-lettering it: %s", item.inbound.topic, exc
            )
            msg = item.inbound
            return self._store(
                [_Item(msg, dead=DeadLetter(msg.topic, msg.payload, exc.reason, msg.received_at))]
            )
        if result is None:
            return False
        self.worker._count(result)
        return True

    def _write_retrying(self, group: list[_Item]) -> WriteResult | None:
        """One transaction, retried with capped jittered backoff while the database is
        unavailable; None when told to stop meanwhile. Raises `BatchRejected`."""
        w = self.worker
        ing = w.settings.ingest
        attempt = 0
        while True:
            try:
                result = self.writer.write(
                    [i.batch for i in group if i.batch is not None],
                    dead_letters=[i.dead for i in group if i.dead is not None],
                    statuses=[i.status for i in group if i.status is not None],
                )
            except StoreUnavailable as exc:
                w._set_db_state(False, str(exc))
                w.count("db_errors")
                if w._stopping.is_set():
                    return None
                delay = backoff_delay(attempt, base=ing.backoff_base_s, cap=ing.backoff_cap_s, rng=w._rng)
                attempt += 1
                if w._pause(delay):
                    return None
                continue
            w._set_db_state(True)
            return result


class IngestWorker:
    """Runs until `stop`. Build with settings; `start` returns once the threads run."""

    def __init__(
        self,
        *,
        settings: CloudSettings,
        mode: ModeInfo | None = None,
        rng: random.Random | None = None,
        maintenance: bool = True,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.mode = mode
        self._rng = rng or random.Random()  # noqa: S311 - backoff jitter
        self._monotonic = monotonic
        self._intake = threading.Event()
        self._intake.set()
        self._stopping = threading.Event()
        #: Wakes the lanes waiting out a backoff when the database is back (another lane wrote)
        #: or the worker stops: a lane must not sleep through a recovery the other one saw.
        self._wake = threading.Condition()
        self._lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.db_up: bool | None = None
        #: Set when the database came back: the backlog's memory goes back once it is written.
        self._trim_pending = False
        cfg = settings.mqtt
        self.lane = _Lane(worker=self, name="writer", config=cfg, filters=None)
        self.alarm_lane = _Lane(
            worker=self,
            name="alarms",
            config=cfg.model_copy(update={"client_id": f"{cfg.client_id}-alarm"}),
            filters=[f"$share/{cfg.share_group}/{ALARM_FILTER}"],
        )
        self.lanes = (self.alarm_lane, self.lane)
        self.consumer = self.lane.consumer
        self.writer = self.lane.writer
        self.maintenance = Maintenance(settings=settings) if maintenance else None

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        for lane in self.lanes:
            lane.thread.start()
        if self.maintenance is not None:
            self.maintenance.start()
        for lane in self.lanes:
            lane.consumer.start()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Stop intake, commit and acknowledge what is queued, disconnect, stop maintenance."""
        self._intake.clear()
        self._stopping.set()
        with self._wake:
            self._wake.notify_all()
        deadline = time.monotonic() + timeout
        for lane in self.lanes:
            lane.queue.put(_STOP)
        for lane in self.lanes:
            lane.thread.join(max(0.0, deadline - time.monotonic()))
            if lane.thread.is_alive():
                log.warning(
                    "%s did not finish in %.0f s; its messages stay unacknowledged", lane.name, timeout
                )
        for lane in self.lanes:
            lane.consumer.stop()
            lane.writer.close()
        if self.maintenance is not None:
            self.maintenance.stop()

    @property
    def queue_depth(self) -> int:
        return sum(lane.queue.qsize() for lane in self.lanes)

    @property
    def broker_up(self) -> bool:
        return all(lane.consumer.connected for lane in self.lanes)

    @property
    def last_commit(self) -> float | None:
        done = [lane.last_commit for lane in self.lanes if lane.last_commit is not None]
        return max(done) if done else None

    @property
    def gathering(self) -> int:
        return sum(lane.gathering for lane in self.lanes)

    @property
    def decoded_readings(self) -> int:
        """Decoded readings held: the transactions being gathered or written and those queued."""
        return sum(lane.group_readings + lane.decoded_ahead for lane in self.lanes)

    @property
    def held_bytes(self) -> int:
        """Payload bytes received and not yet acknowledged."""
        return sum(lane.held_bytes for lane in self.lanes)

    def _on_broker_state(self, up: bool) -> None:
        self.count("broker_connects" if up else "broker_disconnects")

    def _pause(self, delay: float) -> bool:
        """Wait out a backoff of `delay` seconds, less when the database is seen back; True when
        stopping."""
        with self._wake:
            self._wake.wait_for(lambda: self._stopping.is_set() or self.db_up is True, timeout=delay)
        return self._stopping.is_set()

    def _set_db_state(self, up: bool, detail: str = "") -> None:
        with self._lock:
            if up == self.db_up:
                return
            was, self.db_up = self.db_up, up
        if up:
            log.info("database available%s", " again" if was is False else "")
            self._trim_pending = was is False
            with self._wake:
                self._wake.notify_all()
        else:
            log.error("database unavailable, holding acknowledgements and retrying: %s", detail)

    def _count(self, result: WriteResult) -> None:
        with self._lock:
            self._count_locked(result)

    def _count_locked(self, result: WriteResult) -> None:
        c = self.counters
        c["transactions"] += 1
        c["batches_stored"] += result.batches
        c["batches_duplicate"] += result.duplicate_batches
        c["readings_stored"] += result.readings
        c["readings_duplicate"] += result.duplicate_readings
        c["rows_stored"] += result.rows
        c["events_stored"] += result.events
        c["dead_letters"] += result.dead_letters
        c["gateway_statuses"] += result.statuses
        c["alert_feed_rows"] += result.feed_rows

    def snapshot(self) -> Snapshot:
        """Counters, gauges and health for the endpoint."""
        last = self.last_commit
        return Snapshot(
            counters=dict(self.counters),
            gauges={
                "queue_depth": float(self.queue_depth),
                "transaction_messages": float(self.gathering),
                "decoded_readings": float(self.decoded_readings),
                "held_payload_bytes": float(self.held_bytes),
                "database_up": 1.0 if self.db_up else 0.0,
                "broker_up": 1.0 if self.broker_up else 0.0,
                "seconds_since_commit": -1.0 if last is None else self._monotonic() - last,
            },
            health={
                "mode": self.mode.mode.value if self.mode else "unknown",
                "mode_detail": self.mode.describe() if self.mode else "",
                "database": "up" if self.db_up is not False else "down",
                "broker": "up" if self.broker_up else "down",
                "client_id": self.settings.mqtt.client_id,
                "queue_depth": self.queue_depth,
            },
        )

"""Writes a group of uplink batches to the database in one transaction, with binary COPY.

One `BatchWriter.write` call is one transaction holding, for many batches at once:

1. the claim of each ``(gateway_id, batch_seq)`` in ``ingested_batches`` (``ON CONFLICT DO
   NOTHING RETURNING``): a batch already stored, by this worker or another, is skipped whole;
2. the claim of each reading's id in ``reading_ids``: a plain binary ``COPY`` of the sorted ids
   inside a savepoint. Almost always every id is new and that is all; when one is not (a
   gateway resent a reading inside another batch), the savepoint is rolled back and the ids go
   through a staging table and ``INSERT ... ON CONFLICT DO NOTHING``, which returns the
   duplicates, and those readings are left out. Readings flagged ``estimated_ts`` (no device
   time: their id is derived from content that identical later reports share) are not claimed;
3. ``COPY readings``, ``COPY events`` (binary, rows packed by `cloud.store.pgcopy` straight from
   the decoded envelopes, streamed one envelope at a time so the server works while Python packs);
4. one set-based upsert of the device registry (last seen, battery, status) from a staging table
   holding one aggregated row per device, in device order;
5. dead letters and gateway status documents received in the same window;
6. the alert feed (`cloud.alerts.feed`): one ``alert_feed`` row per community holding the fresh
   batches as stored (MessagePack, duplicate readings left out) and the gateway statuses, then
   ``pg_notify`` of the highest ``feed_seq``.

Nothing is acknowledged to the broker until this transaction committed; a redelivered batch
then finds its claim and is skipped, so however often it arrives it is stored once.

Feed order is commit order. Just before the feed rows are inserted, the transaction takes the
advisory lock `FEED_LOCK_KEY` (``pg_advisory_xact_lock``) and holds it until it commits or rolls
back. Its ``feed_seq`` values (``nextval``) are therefore drawn while no other ingest transaction
is between drawing its own and committing: a transaction with a lower ``feed_seq`` drew it under
the lock and had committed (or rolled back) before the lock passed on, and PostgreSQL makes a
commit visible before it releases the transaction's locks. So a reader whose snapshot shows
``feed_seq`` N shows every committed row below N, and the alert service can keep one number as
its checkpoint. Without the lock, worker A could draw N, worker B draw N+1 and commit first, and a
reader that advanced past N+1 would never see N.

The cost: the tail of the transaction (the feed INSERT, the commit and its WAL flush) is serialised
across ingest workers; everything before it (claims, COPY, registry upsert) still runs in
parallel. ``NOTIFY`` alone already serialises the commits of notifying transactions (PostgreSQL
holds its notify-queue lock from pre-commit to the end of the commit), so the lock adds only the
feed INSERT to the serialised part: one statement for all the transaction's communities. A worker
waiting for the lock already holds its other row locks; the holder never waits for a row lock
after taking it, so the lock cannot deadlock. ``docs/benchmarks.md`` has the measured cost.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from cloud.alerts.feed import FEED_CHANNEL, FEED_LOCK_KEY, community_hash
from cloud.errors import BatchRejected, StoreUnavailable
from cloud.ingest.envelope import Envelope, WireReading, reading_key
from cloud.store import pgcopy
from device_profiles.standard import LIVENESS_EVENTS, Event

log = logging.getLogger("linli.cloud.writer")

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_RETRIES: Final = 5

_STAGING = (
    "CREATE TEMP TABLE IF NOT EXISTS stage_ids (reading_id uuid NOT NULL) ON COMMIT DELETE ROWS",
    "CREATE TEMP TABLE IF NOT EXISTS stage_devices ("
    " device_id text, device_type text, profile text, community_id text, gateway_id text,"
    " first_seen timestamptz, last_seen timestamptz, status text, status_at timestamptz,"
    " battery_pct double precision, battery_at timestamptz) ON COMMIT DELETE ROWS",
)

_COPY_IDS = "COPY reading_ids (reading_id) FROM STDIN (FORMAT BINARY)"
_COPY_STAGE_IDS = "COPY stage_ids (reading_id) FROM STDIN (FORMAT BINARY)"
_COPY_READINGS = "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
_COPY_EVENTS = "COPY events (time, device_id, event, attributes) FROM STDIN (FORMAT BINARY)"
_COPY_DEVICES = (
    "COPY stage_devices (device_id, device_type, profile, community_id, gateway_id, first_seen,"
    " last_seen, status, status_at, battery_pct, battery_at) FROM STDIN (FORMAT BINARY)"
)
_CLAIM_BATCHES = """
INSERT INTO ingested_batches
    (gateway_id, batch_seq, community_id, batch_class, readings, min_time, max_time)
SELECT * FROM unnest(%s::text[], %s::int8[], %s::text[], %s::text[], %s::int4[],
                     %s::timestamptz[], %s::timestamptz[])
ON CONFLICT DO NOTHING
RETURNING gateway_id, batch_seq
"""

_CLAIM_READINGS = """
WITH claimed AS (
    INSERT INTO reading_ids (reading_id) SELECT reading_id FROM stage_ids
    ON CONFLICT DO NOTHING RETURNING reading_id
)
SELECT s.reading_id FROM stage_ids s
WHERE NOT EXISTS (SELECT 1 FROM claimed c WHERE c.reading_id = s.reading_id)
"""

_UPSERT_DEVICES = """
INSERT INTO devices AS d (device_id, device_type, profile, community_id, gateway_id,
                          first_seen, last_seen, status, status_at, battery_pct, battery_at)
SELECT device_id, device_type, profile, community_id, gateway_id,
       first_seen, last_seen, status, status_at, battery_pct, battery_at
FROM stage_devices ORDER BY device_id
ON CONFLICT (device_id) DO UPDATE SET
    device_type  = EXCLUDED.device_type,
    profile      = EXCLUDED.profile,
    community_id = EXCLUDED.community_id,
    gateway_id   = EXCLUDED.gateway_id,
    first_seen   = least(d.first_seen, EXCLUDED.first_seen),
    last_seen    = greatest(d.last_seen, EXCLUDED.last_seen),
    status       = CASE WHEN d.status_at IS NULL OR EXCLUDED.status_at >= d.status_at
                        THEN EXCLUDED.status ELSE d.status END,
    status_at    = greatest(d.status_at, EXCLUDED.status_at),
    battery_pct  = CASE WHEN EXCLUDED.battery_at IS NOT NULL
                         AND (d.battery_at IS NULL OR EXCLUDED.battery_at >= d.battery_at)
                        THEN EXCLUDED.battery_pct ELSE d.battery_pct END,
    battery_at   = greatest(d.battery_at, EXCLUDED.battery_at),
    updated_at   = now()
"""

_UPSERT_GATEWAYS = """
INSERT INTO gateways AS g (gateway_id, community_id, state, status, status_at)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::jsonb[], %s::timestamptz[])
ORDER BY 1
ON CONFLICT (gateway_id) DO UPDATE SET
    community_id = EXCLUDED.community_id, state = EXCLUDED.state,
    status = EXCLUDED.status, status_at = EXCLUDED.status_at
WHERE EXCLUDED.status_at >= g.status_at
"""


#: Taken just before the feed rows are inserted; held until the commit (module docstring).
FEED_LOCK_SQL: Final = f"SELECT pg_advisory_xact_lock({FEED_LOCK_KEY})"
#: The transaction's feed rows, all in one statement, and the notification of the highest one
#: (delivered to listeners when the transaction commits, not before). Parameters: the five
#: columns as arrays, then the channel (`FEED_CHANNEL`). Sent in binary: a text ``bytea[]``
#: doubles the bytes and costs the server a hex parse (measured 255 vs 123 ms per 8 MB).
FEED_APPEND_SQL: Final = """
WITH appended AS (
    INSERT INTO alert_feed (community_id, community_hash, readings, batches, statuses)
    SELECT * FROM unnest(%b::text[], %b::int4[], %b::int4[], %b::bytea[], %b::jsonb[])
    RETURNING feed_seq
)
SELECT max(feed_seq), count(*), pg_notify(%b, max(feed_seq)::text) FROM appended
"""


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    topic: str
    payload: bytes
    reason: str
    received_at: datetime


@dataclass(frozen=True, slots=True)
class GatewayStatus:
    community_id: str
    gateway_id: str
    state: str
    document: dict[str, Any]
    received_at: datetime


@dataclass(slots=True)
class WriteResult:
    batches: int = 0
    duplicate_batches: int = 0
    readings: int = 0
    duplicate_readings: int = 0
    rows: int = 0
    events: int = 0
    devices: int = 0
    dead_letters: int = 0
    statuses: int = 0
    feed_rows: int = 0
    #: The highest feed_seq this transaction wrote (0: none).
    feed_seq: int = 0


@dataclass(slots=True)
class _Device:
    """One device's registry row, aggregated over a transaction's readings (times in us)."""

    device_type: str
    profile: str
    community_id: str
    gateway_id: str
    first_seen: int | None = None
    last_seen: int | None = None
    status: str = "online"
    status_at: int = -1
    battery: float | None = None
    battery_at: int = -1


_ROW4: Final = b"\x00\x04"
_ROW11: Final = b"\x00\x0b"
_ID_ROW: Final = b"\x00\x01\x00\x00\x00\x10"
_TS_FIELD: Final = struct.Struct(">iq")
_FLOAT8_FIELD: Final = struct.Struct(">id")
_PG_EPOCH_US: Final = pgcopy.PG_EPOCH_US
_json: Final = msgspec.json.Encoder()
_msgpack: Final = msgspec.msgpack.Encoder()
_MICROSECOND: Final = timedelta(microseconds=1)


def _dumps(obj: Any) -> str:
    return _json.encode(obj).decode()


#: A reading without device time has a content-derived id that identical later reports share
#: (docs/data-standard.md): its id is never claimed, so such reports are all kept.
_ESTIMATED: Final = "estimated_ts"


class BatchWriter:
    """Owns one database connection and writes groups of batches through it.

    Not thread-safe: one writer per thread. Call `close` when done.
    """

    def __init__(self, *, database_url: str, connect_timeout_s: float = 5.0) -> None:
        self.database_url = database_url
        self.connect_timeout_s = connect_timeout_s
        self._conn: psycopg.Connection[Any] | None = None
        self._text = pgcopy.TextFields()

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.closed

    def connect(self) -> None:
        if self.connected:
            return
        try:
            conn = psycopg.connect(self.database_url, connect_timeout=max(1, int(self.connect_timeout_s)))
            with conn.transaction():
                for statement in _STAGING:
                    conn.execute(statement)
        except psycopg.OperationalError as exc:
            raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
        self._conn = conn

    def _connection(self) -> psycopg.Connection[Any]:
        self.connect()
        if self._conn is None:
            raise StoreUnavailable("no database connection")
        return self._conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def write(
        self,
        batches: Sequence[Envelope],
        *,
        dead_letters: Sequence[DeadLetter] = (),
        statuses: Sequence[GatewayStatus] = (),
    ) -> WriteResult:
        """Store everything in one transaction.

        Raises `StoreUnavailable` when the database is gone or fails for a reason of its own
        (nothing is then committed, or the commit's outcome is unknown: redelivery is safe), and
        `BatchRejected` when it refused the data itself (nothing is committed; the caller splits
        the group to find the batch at fault).
        """
        for attempt in range(_RETRIES):
            conn = self._connection()
            try:
                with conn.transaction():
                    return self._write(conn, batches, dead_letters, statuses)
            except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as exc:
                log.info("transaction conflict (%s), retrying (%d)", type(exc).__name__, attempt + 1)
            except psycopg.OperationalError as exc:
                self.close()
                raise StoreUnavailable(f"database unavailable: {exc}") from exc
            except (psycopg.DataError, psycopg.IntegrityError) as exc:
                raise BatchRejected(f"rejected by the database: {exc}".replace("\x00", "")) from exc
            except psycopg.Error as exc:
                # Not the data's fault (a missing table, a permission, a server-side limit):
                # hold the acknowledgements and retry, as for an outage.
                self.close()
                raise StoreUnavailable(f"database error: {exc}") from exc
        raise StoreUnavailable("transaction kept conflicting with another writer")

    def _write(
        self,
        conn: psycopg.Connection[Any],
        batches: Sequence[Envelope],
        dead_letters: Sequence[DeadLetter],
        statuses: Sequence[GatewayStatus],
    ) -> WriteResult:
        result = WriteResult()
        cur = conn.cursor()
        fresh = self._claim_batches(cur, batches, result)
        stored: list[Envelope] = []
        if fresh:
            devices, stored = self._copy_readings(conn, cur, fresh, result)
            if devices:
                self._upsert_devices(cur, devices, result)
        if dead_letters:
            with cur.copy(
                "COPY dead_letters (received_at, topic, payload, reason) FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.set_types(["timestamptz", "text", "bytea", "text"])
                for d in dead_letters:
                    cp.write_row((d.received_at, d.topic, d.payload, d.reason))
            result.dead_letters = len(dead_letters)
        if statuses:
            self._upsert_gateways(cur, statuses, result)
        if stored or statuses:
            self._append_feed(cur, stored, statuses, result)  # last: the lock is held until commit
        return result

    def _claim_batches(
        self, cur: psycopg.Cursor[Any], batches: Sequence[Envelope], result: WriteResult
    ) -> list[Envelope]:
        unique: dict[tuple[str, int], Envelope] = {}
        for env in batches:
            unique.setdefault((env.gateway_id, env.batch_seq), env)
        result.duplicate_batches = len(batches) - len(unique)
        if not unique:
            return []
        cols: tuple[list[Any], ...] = ([], [], [], [], [], [], [])
        for env in unique.values():
            times = [r.ts_us for r in env.readings]
            values = (
                env.gateway_id,
                env.batch_seq,
                env.community_id,
                env.batch_class,
                len(env.readings),
                from_us(min(times)) if times else None,
                from_us(max(times)) if times else None,
            )
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        cur.execute(_CLAIM_BATCHES, cols)
        claimed = {(str(g), int(s)) for g, s in cur.fetchall()}
        result.duplicate_batches += len(unique) - len(claimed)
        result.batches = len(claimed)
        return [env for key, env in unique.items() if key in claimed]

    def _claim_readings(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        fresh: Sequence[Envelope],
    ) -> tuple[set[bytes], bool]:
        """Claim the reading ids of this transaction.

        Returns the keys of readings stored by an earlier transaction (all their copies are left
        out) and whether some id repeats inside this transaction (only its first copy is kept).
        """
        keys: set[bytes] = set()
        n = 0
        for env in fresh:
            ids = [reading_key(r.reading_id) for r in env.readings if _ESTIMATED not in r.quality]
            n += len(ids)
            keys.update(ids)
        repeats = len(keys) < n
        ordered = sorted(keys)  # one order for every writer: concurrent claims cannot deadlock
        body = b"".join([_ID_ROW + k for k in ordered])
        try:
            with conn.transaction(), cur.copy(_COPY_IDS) as cp:
                cp.write(pgcopy.SIGNATURE + body + pgcopy.TRAILER)
            return set(), repeats
        except psycopg.errors.UniqueViolation:
            pass  # some were stored before (the savepoint is rolled back): find which
        with cur.copy(_COPY_STAGE_IDS) as cp:
            cp.write(pgcopy.SIGNATURE + body + pgcopy.TRAILER)
        cur.execute(_CLAIM_READINGS)
        return {row[0].bytes for row in cur.fetchall()}, repeats

    def _copy_readings(
        self,
        conn: psycopg.Connection[Any],
        cur: psycopg.Cursor[Any],
        fresh: Sequence[Envelope],
        result: WriteResult,
    ) -> tuple[dict[str, _Device], list[Envelope]]:
        """COPY the readings and events that are new; returns the aggregated device rows and
        the envelopes as stored (readings left out as duplicates removed)."""
        stored, repeats = self._claim_readings(conn, cur, fresh)
        text = self._text
        ts_field = _TS_FIELD.pack
        value_field = _FLOAT8_FIELD.pack
        epoch = _PG_EPOCH_US
        devices: dict[str, _Device] = {}
        events: list[bytes] = []
        written: set[bytes] = set()
        filtered = bool(stored) or repeats
        readings = rows = duplicates = 0
        kept: list[Envelope] = []
        with cur.copy(_COPY_READINGS) as cp:
            cp.write(pgcopy.SIGNATURE)
            for env in fresh:
                community_id, gateway_id = env.community_id, env.gateway_id
                parts: list[bytes] = []
                append = parts.append
                left_out = duplicates
                keep: list[WireReading] = []
                for r in env.readings:
                    if filtered:
                        if _ESTIMATED not in r.quality:
                            key = reading_key(r.reading_id)
                            if key in stored or key in written:
                                duplicates += 1
                                continue
                            written.add(key)
                        keep.append(r)
                    ts = r.ts_us
                    head = _ROW4 + ts_field(8, ts - epoch) + text[r.device_id]
                    metrics = r.metrics
                    for metric, value in metrics.items():
                        append(head)
                        append(text[metric])
                        append(value_field(8, value))
                    rows += len(metrics)
                    readings += 1
                    if r.events:
                        events.extend(self._event_rows(r, head, gateway_id))
                    d = devices.get(r.device_id)
                    if d is None:
                        d = devices[r.device_id] = _Device(r.device_type, r.profile, community_id, gateway_id)
                    if r.events and not LIVENESS_EVENTS.isdisjoint(r.events):
                        if ts >= d.status_at:
                            d.status = "offline" if Event.DEVICE_OFFLINE in r.events else "online"
                            d.status_at = ts
                        continue
                    last = d.last_seen
                    if last is None or ts >= last:
                        d.last_seen = ts
                        d.device_type, d.profile = r.device_type, r.profile
                        d.community_id, d.gateway_id = community_id, gateway_id
                    first = d.first_seen
                    if first is None or ts < first:
                        d.first_seen = ts
                    if ts >= d.status_at:
                        d.status, d.status_at = "online", ts
                    battery = metrics.get("battery_pct")
                    if battery is not None and ts >= d.battery_at:
                        d.battery, d.battery_at = battery, ts
                if parts:
                    cp.write(b"".join(parts))
                if duplicates == left_out:
                    kept.append(env)
                else:
                    kept.append(msgspec.structs.replace(env, readings=tuple(keep)))
            cp.write(pgcopy.TRAILER)
        if events:
            with cur.copy(_COPY_EVENTS) as cp:
                cp.write(pgcopy.SIGNATURE + b"".join(events) + pgcopy.TRAILER)
        result.duplicate_readings += duplicates
        result.readings = readings
        result.rows = rows
        result.events = len(events)
        return devices, kept

    def _event_rows(self, r: WireReading, head: bytes, gateway_id: str) -> Iterable[bytes]:
        attrs: dict[str, Any] = {"reading_id": r.reading_id, "gateway_id": gateway_id}
        if r.quality:
            attrs["quality"] = list(r.quality)
        if r.device_ts_us is not None:
            attrs["device_ts_us"] = r.device_ts_us
        doc = b"\x01" + _json.encode(attrs)  # jsonb binary format: version 1, then the JSON text
        attributes = struct.pack(">i", len(doc)) + doc
        for event in r.events:
            yield head + self._text[event] + attributes

    def _upsert_devices(
        self, cur: psycopg.Cursor[Any], devices: dict[str, _Device], result: WriteResult
    ) -> None:
        text = self._text
        ts = pgcopy.optional_timestamp
        parts = [pgcopy.SIGNATURE]
        append = parts.append
        for device_id, d in devices.items():
            append(_ROW11)
            append(text[device_id])
            append(text[d.device_type])
            append(text[d.profile])
            append(text[d.community_id])
            append(text[d.gateway_id])
            append(ts(d.first_seen))
            append(ts(d.last_seen))
            append(text[d.status])
            append(ts(d.status_at if d.status_at >= 0 else None))
            append(pgcopy.optional_float8(d.battery))
            append(ts(d.battery_at if d.battery is not None else None))
        append(pgcopy.TRAILER)
        with cur.copy(_COPY_DEVICES) as cp:
            cp.write(b"".join(parts))
        cur.execute(_UPSERT_DEVICES)
        result.devices = len(devices)

    def _append_feed(
        self,
        cur: psycopg.Cursor[Any],
        stored: Sequence[Envelope],
        statuses: Sequence[GatewayStatus],
        result: WriteResult,
    ) -> None:
        """One ``alert_feed`` row per community, under the feed lock, and the notification."""
        envelopes: dict[str, list[Envelope]] = {}
        observed: dict[str, list[dict[str, Any]]] = {}
        for env in stored:
            envelopes.setdefault(env.community_id, []).append(env)
        for st in statuses:
            at_us = (st.received_at - _EPOCH) // _MICROSECOND
            observed.setdefault(st.community_id, []).append(
                {"gateway_id": st.gateway_id, "state": st.state, "at_us": at_us}
            )
        cols: tuple[list[Any], ...] = ([], [], [], [], [])
        for community_id in sorted(envelopes.keys() | observed.keys()):
            envs = envelopes.get(community_id, [])
            values = (
                community_id,
                community_hash(community_id),
                sum(len(env.readings) for env in envs),
                _msgpack.encode(envs),
                Jsonb(observed.get(community_id, []), dumps=_dumps),
            )
            for col, value in zip(cols, values, strict=True):
                col.append(value)
        cur.execute(FEED_LOCK_SQL)
        cur.execute(FEED_APPEND_SQL, (*cols, FEED_CHANNEL))
        row = cur.fetchone()
        if row is not None and row[0] is not None:
            result.feed_seq, result.feed_rows = int(row[0]), int(row[1])

    def _upsert_gateways(
        self, cur: psycopg.Cursor[Any], statuses: Iterable[GatewayStatus], result: WriteResult
    ) -> None:
        latest: dict[str, GatewayStatus] = {}
        for s in statuses:
            prev = latest.get(s.gateway_id)
            if prev is None or s.received_at >= prev.received_at:
                latest[s.gateway_id] = s
        cols: tuple[list[Any], ...] = ([], [], [], [], [])
        for s in latest.values():
            for col, value in zip(
                cols, (s.gateway_id, s.community_id, s.state, Jsonb(s.document), s.received_at), strict=True
            ):
                col.append(value)
        cur.execute(_UPSERT_GATEWAYS, cols)
        result.statuses = len(latest)

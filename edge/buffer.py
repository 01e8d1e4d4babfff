"""The durable store-and-forward buffer: one SQLite database in WAL mode.

Layout (docs/edge.md has the details):

- ``alarm`` and ``telemetry``: *chunks* of encoded readings, one row per class per commit (at most
  `chunk_max` readings each), the concatenated `edge.envelope.encode_reading` bytes compressed with
  zlib. A chunk costs one row and one compressed blob instead of hundreds of small rows, which
  keeps disk use far under 200 bytes per reading and makes intake one INSERT per commit.
- ``batches``: envelopes fixed when formed (alarm batches first) and deleted after their PUBACK,
  so a resend after a restart is byte-identical.
- ``devices``: each device's last state (for state-change events) and last-seen time (liveness).
- ``quarantine``: undecodable or unknown input, bounded, oldest dropped.
- ``counters``: persisted counts (evicted, expired, quarantined, ...).

Every blocking SQLite call runs on one dedicated worker thread that owns the connection, so
commits and fsyncs never block the event loop. Alarm chunks are never evicted; telemetry chunks
are evicted oldest first when the data reaches its share of the cap, and dropped past the TTL;
both are counted in the same transaction as the deletion.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, ParamSpec, TypeVar

from edge.envelope import pack_array, split_array
from edge.errors import BufferError_, BufferFull

P = ParamSpec("P")
T = TypeVar("T")

ALARM: Final = 0
TELEMETRY: Final = 1
CLASS_NAMES: Final = ("alarm", "telemetry")
_TABLES: Final = ("alarm", "telemetry")
SCHEMA_VERSION: Final = 1

#: Counters persisted in the ``counters`` table.
COUNTERS: Final = (
    "readings_buffered",
    "readings_sent",
    "batches_sent",
    "evicted",
    "expired",
    "quarantined",
    "quarantine_dropped",
    "duplicates_dropped",
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS alarm (
    id INTEGER PRIMARY KEY, n INTEGER NOT NULL, at_min INTEGER NOT NULL, at_max INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY, n INTEGER NOT NULL, at_min INTEGER NOT NULL, at_max INTEGER NOT NULL,
    data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS batches (
    seq INTEGER PRIMARY KEY, class INTEGER NOT NULL, n INTEGER NOT NULL, at_min INTEGER NOT NULL,
    payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, state BLOB, last_seen_us INTEGER NOT NULL, offline INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, at_us INTEGER NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    message TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);
"""


@dataclass(slots=True)
class DeviceRow:
    """A device's persisted liveness and state (state: the encoded last state values)."""

    last_seen_us: int
    offline: bool = False
    state: bytes | None = None


@dataclass(frozen=True, slots=True)
class QuarantineEntry:
    at_us: int
    topic: str
    reason: str
    message: str
    payload: bytes


@dataclass(slots=True)
class Intake:
    """One commit's worth of input: encoded readings per class, device updates, quarantine."""

    alarm: list[bytes] = field(default_factory=list)
    telemetry: list[bytes] = field(default_factory=list)
    #: received-at seconds of the oldest and newest reading in this intake.
    at_min: int = 0
    at_max: int = 0
    devices: dict[str, DeviceRow] = field(default_factory=dict)
    quarantine: list[QuarantineEntry] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.alarm) + len(self.telemetry)

    def add_reading(self, data: bytes, *, alarm: bool, at_s: int) -> None:
        (self.alarm if alarm else self.telemetry).append(data)
        if not self.at_min or at_s < self.at_min:
            self.at_min = at_s
        self.at_max = max(self.at_max, at_s)


@dataclass(frozen=True, slots=True)
class Batch:
    seq: int
    batch_class: int
    count: int
    at_min: int
    payload: bytes


@dataclass(frozen=True, slots=True)
class BufferStats:
    alarm_readings: int
    telemetry_readings: int
    batched_readings: int
    batches: int
    oldest_at: int | None
    disk_bytes: int
    cap_bytes: int
    counters: dict[str, int]

    @property
    def depth(self) -> int:
        return self.alarm_readings + self.telemetry_readings + self.batched_readings


#: Builds an envelope: (batch_seq, class, packed readings, counters) -> payload.
EnvelopeBuilder = Callable[[int, Literal["alarm", "telemetry"], bytes, dict[str, int]], bytes]


class Store:
    """The synchronous side, used only from the buffer's worker thread (or a CLI process)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        ttl_s: float,
        durability: Literal["full", "normal"],
        chunk_max: int,
        quarantine_max_rows: int,
        quarantine_max_payload_bytes: int,
        wall: Callable[[], float],
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.ttl_s = ttl_s
        self.durability = durability
        self.chunk_max = chunk_max
        self.quarantine_max_rows = quarantine_max_rows
        self.quarantine_max_payload_bytes = quarantine_max_payload_bytes
        self.wall = wall
        # The WAL gets a fixed share of the cap; the database file the rest.
        self.wal_reserve = max(256 * 1024, min(max_bytes // 8, 16 << 20))
        self.db_budget = max_bytes - self.wal_reserve
        try:
            if read_only:
                self.conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
                return
            path.parent.mkdir(parents=True, exist_ok=True)
            self.conn = sqlite3.connect(path, isolation_level=None)
            self.conn.execute("PRAGMA journal_mode=WAL")
            # 512 KiB of page cache instead of SQLite's 2 MB: appends and batch reads touch few
            # pages, and the cache is resident memory (linli bench edge: -2 MB at the peak, same
            # throughput; docs/benchmarks.md).
            self.conn.execute("PRAGMA cache_size=-512")
            self.page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
            self.conn.execute(f"PRAGMA journal_size_limit={self.wal_reserve}")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={max(16, self.wal_reserve // self.page_size // 4)}")
            self._sync("FULL" if durability == "full" else "NORMAL")
            self.conn.executescript(_SCHEMA)
            self.conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('next_batch_seq', 1)",
                (SCHEMA_VERSION,),
            )
            version = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            if version != SCHEMA_VERSION:
                raise BufferError_(f"{path}: schema version {version}, this agent reads {SCHEMA_VERSION}")
            self.conn.executemany(
                "INSERT OR IGNORE INTO counters VALUES (?, 0)", [(name,) for name in COUNTERS]
            )
        except sqlite3.Error as exc:
            raise BufferError_(f"cannot open the buffer {path}: {exc}") from exc
        self._synchronous = "FULL" if durability == "full" else "NORMAL"

    def _sync(self, mode: str) -> None:
        self.conn.execute(f"PRAGMA synchronous={mode}")
        self._synchronous = mode

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error as exc:
            raise BufferError_(f"closing the buffer failed: {exc}") from exc

    # -- sizes ----------------------------------------------------------------------------

    def _pages(self) -> tuple[int, int]:
        count = int(self.conn.execute("PRAGMA page_count").fetchone()[0])
        free = int(self.conn.execute("PRAGMA freelist_count").fetchone()[0])
        return count, free

    def disk_bytes(self) -> int:
        """What the buffer occupies on disk: database file plus WAL."""
        count, _ = self._pages()
        try:
            wal = os.path.getsize(f"{self.path}-wal")
        except OSError:
            wal = 0
        return count * self.page_size + wal

    def used_bytes(self) -> int:
        count, free = self._pages()
        return (count - free) * self.page_size

    # -- intake ---------------------------------------------------------------------------

    def _chunks(self, records: list[bytes]) -> Iterable[tuple[int, bytes]]:
        for i in range(0, len(records), self.chunk_max):
            part = records[i : i + self.chunk_max]
            yield len(part), zlib.compress(b"".join(part), 1)

    def commit(self, intake: Intake) -> int:
        """Write one intake in one transaction; fsync it when it holds alarms (or always in
        ``full`` mode). Returns the number of telemetry readings evicted to stay under the cap."""
        want = "FULL" if intake.alarm or self.durability == "full" else "NORMAL"
        try:
            if want != self._synchronous:
                self._sync(want)
            alarm_chunks = list(self._chunks(intake.alarm))
            telemetry_chunks = list(self._chunks(intake.telemetry))
            incoming = sum(len(c) + 64 for _, c in alarm_chunks + telemetry_chunks)
            incoming += sum(len(q.payload) + len(q.message) + 128 for q in intake.quarantine)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                evicted = self._make_room(incoming)
                for table, chunks in (("alarm", alarm_chunks), ("telemetry", telemetry_chunks)):
                    if chunks:
                        self.conn.executemany(
                            f"INSERT INTO {table} (n, at_min, at_max, data) VALUES (?, ?, ?, ?)",  # noqa: S608
                            [(n, intake.at_min, intake.at_max, data) for n, data in chunks],
                        )
                if intake.devices:
                    self.conn.executemany(
                        "INSERT INTO devices VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
                        "state = excluded.state, last_seen_us = excluded.last_seen_us, "
                        "offline = excluded.offline",
                        [(d, r.state, r.last_seen_us, int(r.offline)) for d, r in intake.devices.items()],
                    )
                counters = dict(intake.counters)
                if len(intake):
                    counters["readings_buffered"] = counters.get("readings_buffered", 0) + len(intake)
                if intake.quarantine:
                    counters.update(self._quarantine(intake.quarantine))
                if evicted:
                    counters["evicted"] = counters.get("evicted", 0) + evicted
                self._count(counters)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BufferError_(f"buffer commit failed: {exc}") from exc
        return evicted

    def _count(self, counters: dict[str, int]) -> None:
        if counters:
            self.conn.executemany(
                "UPDATE counters SET value = value + ? WHERE name = ?",
                [(v, k) for k, v in counters.items() if v],
            )

    def _quarantine(self, entries: list[QuarantineEntry]) -> dict[str, int]:
        cap = self.quarantine_max_payload_bytes
        self.conn.executemany(
            "INSERT INTO quarantine (at_us, topic, reason, message, size, payload) VALUES (?, ?, ?, ?, ?, ?)",
            [
                (q.at_us, q.topic[:1024], q.reason, q.message[:1024], len(q.payload), q.payload[:cap])
                for q in entries
            ],
        )
        rows = int(self.conn.execute("SELECT count(*) FROM quarantine").fetchone()[0])
        dropped = max(0, rows - self.quarantine_max_rows)
        if dropped:
            self.conn.execute(
                "DELETE FROM quarantine WHERE id IN (SELECT id FROM quarantine ORDER BY id LIMIT ?)",
                (dropped,),
            )
        return {"quarantined": len(entries), "quarantine_dropped": dropped}

    def _make_room(self, incoming: int) -> int:
        """Evict the oldest telemetry chunks until `incoming` more bytes fit in the budget."""
        count, free = self._pages()
        used = (count - free) * self.page_size
        high = int(self.db_budget * 0.95)
        if used + incoming <= high:
            return 0
        target = used + incoming - int(self.db_budget * 0.85)
        evicted = freed = 0
        while freed < target:
            rows = self.conn.execute(
                "SELECT id, n, length(data) FROM telemetry ORDER BY id LIMIT 64"
            ).fetchall()
            if not rows:
                break
            last = rows[-1][0]
            for rid, n, size in rows:
                evicted += n
                freed += size + 32
                if freed >= target:
                    last = rid
                    break
            self.conn.execute("DELETE FROM telemetry WHERE id <= ?", (last,))
        if used + incoming - freed > self.db_budget:
            # Nothing left to evict: what is left is alarms (and batches in flight).
            raise BufferFull(used - freed, self.db_budget)
        return evicted

    # -- expiry ---------------------------------------------------------------------------

    def expire(self) -> int:
        """Drop telemetry older than the TTL (whole chunks by their newest reading); count it."""
        cutoff = int(self.wall() - self.ttl_s)
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                n = self.conn.execute(
                    "SELECT coalesce(sum(n), 0) FROM telemetry WHERE at_max < ?", (cutoff,)
                ).fetchone()[0]
                if n:
                    self.conn.execute("DELETE FROM telemetry WHERE at_max < ?", (cutoff,))
                    self._count({"expired": int(n)})
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BufferError_(f"buffer expiry failed: {exc}") from exc
        return int(n)

    # -- batches --------------------------------------------------------------------------

    def form_batch(self, batch_class: int, max_readings: int, build: EnvelopeBuilder) -> Batch | None:
        """Fix the next batch of `batch_class`: insert the envelope and delete its chunks in one
        transaction. Returns None when that class has nothing buffered."""
        table = _TABLES[batch_class]
        try:
            # Always fsynced, whatever the durability mode: a formed batch is published next, and
            # a power cut must not roll back its sequence number for reuse with other readings.
            if self._synchronous != "FULL":
                self._sync("FULL")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                batch = self._form(table, batch_class, max_readings, build)
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BufferError_(f"forming a batch failed: {exc}") from exc
        return batch

    def _form(self, table: str, batch_class: int, max_readings: int, build: EnvelopeBuilder) -> Batch | None:
        # Read chunks one at a time and stop at the first that does not fit: a backlog of full
        # chunks must not load hundreds of blobs to use one.
        cursor = self.conn.execute(
            f"SELECT id, n, at_min, data FROM {table} ORDER BY id LIMIT ?",  # noqa: S608
            (max(1, max_readings),),
        )
        rows = []
        wanted = 0
        for row in cursor:
            rows.append(row)
            wanted += row[1]
            if wanted >= max_readings:
                break
        cursor.close()
        if not rows:
            return None
        taken: list[bytes] = []
        count = 0
        at_min = rows[0][2]
        last_id = None
        for rid, n, chunk_at, data in rows:
            if count and count + n > max_readings:
                break
            body = zlib.decompress(data)
            if n > max_readings - count:
                # A chunk larger than the batch (the setting was lowered): split it.
                parts = split_array(pack_array(n, body))
                keep, rest = parts[: max_readings - count], parts[max_readings - count :]
                self.conn.execute(
                    f"UPDATE {table} SET n = ?, data = ? WHERE id = ?",  # noqa: S608
                    (len(rest), zlib.compress(b"".join(rest), 1), rid),
                )
                taken.append(b"".join(keep))
                count += len(keep)
                at_min = min(at_min, chunk_at)
                break
            taken.append(body)
            count += n
            at_min = min(at_min, chunk_at)
            last_id = rid
        if last_id is not None:
            self.conn.execute(f"DELETE FROM {table} WHERE id <= ?", (last_id,))  # noqa: S608
        seq = int(self.conn.execute("SELECT value FROM meta WHERE key = 'next_batch_seq'").fetchone()[0])
        self.conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'next_batch_seq'")
        payload = build(
            seq,
            "alarm" if batch_class == ALARM else "telemetry",
            pack_array(count, b"".join(taken)),
            self.counters(),
        )
        self.conn.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?)", (seq, batch_class, count, at_min, payload)
        )
        return Batch(seq=seq, batch_class=batch_class, count=count, at_min=at_min, payload=payload)

    def batches(self) -> list[Batch]:
        """Batches formed and not yet acknowledged: alarm batches first, then by sequence."""
        try:
            rows = self.conn.execute(
                "SELECT seq, class, n, at_min, payload FROM batches ORDER BY class, seq"
            ).fetchall()
        except sqlite3.Error as exc:
            raise BufferError_(f"reading batches failed: {exc}") from exc
        return [Batch(seq=r[0], batch_class=r[1], count=r[2], at_min=r[3], payload=r[4]) for r in rows]

    def delete_batch(self, seq: int) -> None:
        try:
            # Not fsynced: if a power cut rolls the deletion back, the batch is resent byte for
            # byte and the cloud drops the repeat.
            if self._synchronous != "NORMAL":
                self._sync("NORMAL")
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                row = self.conn.execute("SELECT n FROM batches WHERE seq = ?", (seq,)).fetchone()
                if row is not None:
                    self.conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
                    self._count({"readings_sent": int(row[0]), "batches_sent": 1})
                self.conn.execute("COMMIT")
            except BaseException:
                self.conn.execute("ROLLBACK")
                raise
        except sqlite3.Error as exc:
            raise BufferError_(f"deleting batch {seq} failed: {exc}") from exc

    # -- reading back ---------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        return {
            str(k): int(v) for k, v in self.conn.execute("SELECT name, value FROM counters ORDER BY name")
        }

    def devices(self) -> dict[str, DeviceRow]:
        return {
            str(d): DeviceRow(last_seen_us=int(seen), offline=bool(off), state=state)
            for d, state, seen, off in self.conn.execute(
                "SELECT device_id, state, last_seen_us, offline FROM devices"
            )
        }

    def stats(self) -> BufferStats:
        try:
            depth = {}
            oldest: list[int] = []
            for table in _TABLES:
                n, at = self.conn.execute(f"SELECT coalesce(sum(n), 0), min(at_min) FROM {table}").fetchone()  # noqa: S608
                depth[table] = int(n)
                if at is not None:
                    oldest.append(int(at))
            bn, bcount, bat = self.conn.execute(
                "SELECT coalesce(sum(n), 0), count(*), min(at_min) FROM batches"
            ).fetchone()
            if bat is not None:
                oldest.append(int(bat))
            return BufferStats(
                alarm_readings=depth["alarm"],
                telemetry_readings=depth["telemetry"],
                batched_readings=int(bn),
                batches=int(bcount),
                oldest_at=min(oldest) if oldest else None,
                disk_bytes=self.disk_bytes(),
                cap_bytes=self.max_bytes,
                counters=self.counters(),
            )
        except sqlite3.Error as exc:
            raise BufferError_(f"reading buffer statistics failed: {exc}") from exc

    def quarantine_rows(self, limit: int = 100) -> list[tuple[int, QuarantineEntry, int]]:
        """Newest first: (id, entry, original payload size)."""
        rows = self.conn.execute(
            "SELECT id, at_us, topic, reason, message, payload, size FROM quarantine "
            "ORDER BY id DESC LIMIT ?",
            (limit,),
        ).fetchall()
        return [
            (
                int(r[0]),
                QuarantineEntry(at_us=r[1], topic=r[2], reason=r[3], message=r[4], payload=bytes(r[5])),
                int(r[6]),
            )
            for r in rows
        ]

    def checkpoint(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise BufferError_(f"checkpoint failed: {exc}") from exc


class Buffer:
    """The asyncio face of `Store`: every call runs on the buffer's single worker thread.

    Build it with `Buffer.open(...)`; close it with `await buffer.close()`.
    """

    def __init__(self, store: Store, executor: ThreadPoolExecutor) -> None:
        self._store = store
        self._executor = executor
        self.cap_bytes = store.max_bytes

    @classmethod
    async def open(
        cls,
        path: Path,
        *,
        max_bytes: int,
        ttl_s: float = 7 * 86400,
        durability: Literal["full", "normal"] = "full",
        chunk_max: int = 500,
        quarantine_max_rows: int = 10_000,
        quarantine_max_payload_bytes: int = 4096,
        wall: Callable[[], float] = time.time,
    ) -> Buffer:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="linli-buffer")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(
                executor,
                lambda: Store(
                    path,
                    max_bytes=max_bytes,
                    ttl_s=ttl_s,
                    durability=durability,
                    chunk_max=chunk_max,
                    quarantine_max_rows=quarantine_max_rows,
                    quarantine_max_payload_bytes=quarantine_max_payload_bytes,
                    wall=wall,
                ),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def _run(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(*args, **kwargs))

    async def commit(self, intake: Intake) -> int:
        return await self._run(self._store.commit, intake)

    async def expire(self) -> int:
        return await self._run(self._store.expire)

    async def form_batch(self, batch_class: int, max_readings: int, build: EnvelopeBuilder) -> Batch | None:
        return await self._run(self._store.form_batch, batch_class, max_readings, build)

    async def batches(self) -> list[Batch]:
        return await self._run(self._store.batches)

    async def delete_batch(self, seq: int) -> None:
        await self._run(self._store.delete_batch, seq)

    async def stats(self) -> BufferStats:
        return await self._run(self._store.stats)

    async def devices(self) -> dict[str, DeviceRow]:
        return await self._run(self._store.devices)

    async def counters(self) -> dict[str, int]:
        return await self._run(self._store.counters)

    async def checkpoint(self) -> None:
        await self._run(self._store.checkpoint)

    async def close(self) -> None:
        try:
            await self._run(self._store.close)
        finally:
            self._executor.shutdown(wait=True)

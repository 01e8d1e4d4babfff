"""The durable store-and-forward buffer: one SQLite database in WAL mode.

Layout (docs/edge.md has the details):

- ``alarm`` and ``telemetry``: *chunks* of encoded readings, one row per class per commit (at most
  `chunk_max` readings each), the concatenated `edge.envelope.encode_reading` bytes compressed with
  zlib. A chunk costs one row and one compressed blob instead of hundreds of small rows, which
  keeps disk use far under 200 bytes per reading and makes intake one INSERT per commit.
- ``batches``: envelopes fixed when formed (alarm batches first) and deleted after their PUBACK,
  so a resend after a restart is byte-identical. A batch of whole chunks stores only its header
  (the envelope up to its readings) and the range of chunk ids it consists of; those chunks stay
  where they are, marked as batched by ``meta.<class>_batched`` (the highest chunk id in a batch),
  and go with the batch. So a reading is written once, not copied into a batch row (the bytes an
  SD card is spared: docs/benchmarks.md). A batch cut from one oversized chunk (the batch size
  was lowered) stores its whole envelope, zlib-compressed, as earlier agents did.
- ``devices`` and ``device_log``: each device's last state (for state-change events), last-seen
  time (liveness) and offline mark; a commit appends the rows it changes to the log, folded into
  the table now and then (`edge.devicelog`).
- ``quarantine``: undecodable or unknown input, bounded, oldest dropped.
- ``counters``: persisted counts (evicted, expired, quarantined, ...).
- ``subscriptions``: every topic filter the field broker's persistent session may still hold, so
  that a filter dropped from the configuration is unsubscribed at the next start.

Every transaction goes through `Store._transaction`: a failed one is rolled back (unless SQLite
already did so itself, as it does after "database or disk is full"), and the error raised is the
original one, mapped to `BufferError_` with SQLite's own words and code in the message.

Every blocking SQLite call runs on one dedicated worker thread that owns the connection, so
commits and fsyncs never block the event loop. Alarm chunks are never evicted; telemetry chunks
are evicted oldest first when the data reaches its share of the cap, and dropped past the TTL;
both are counted in the same transaction as the deletion.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import zlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, ParamSpec, TypeVar

from edge import batches, command_queue, devicelog, pending
from edge.batches import EnvelopeBuilder
from edge.errors import BufferError_, BufferFull
from edge.pending import PendingDevice
from edge.records import ALARM, CLASS_NAMES, TELEMETRY, Batch, BufferStats, DeviceRow, Intake, QuarantineEntry
from edge.records import TABLES as _TABLES

__all__ = [
    "ALARM",
    "CLASS_NAMES",
    "COUNTERS",
    "SCHEMA_VERSION",
    "TELEMETRY",
    "Batch",
    "Buffer",
    "BufferStats",
    "DeviceRow",
    "EnvelopeBuilder",
    "Intake",
    "QuarantineEntry",
    "Store",
]

P = ParamSpec("P")
T = TypeVar("T")

SCHEMA_VERSION: Final = 3

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
    "unknown_device_messages",
)

_SCHEMA = (
    """
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
    payload BLOB NOT NULL, first_chunk INTEGER, last_chunk INTEGER);
CREATE TABLE IF NOT EXISTS devices (
    device_id TEXT PRIMARY KEY, state BLOB, last_seen_us INTEGER NOT NULL, offline INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS device_log (seq INTEGER PRIMARY KEY, n INTEGER NOT NULL, data BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY, at_us INTEGER NOT NULL, topic TEXT NOT NULL, reason TEXT NOT NULL,
    message TEXT NOT NULL, size INTEGER NOT NULL, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS subscriptions (filter TEXT PRIMARY KEY) WITHOUT ROWID;
"""
    + pending.SCHEMA
    + command_queue.SCHEMA
)


def _mapped(what: str, exc: sqlite3.Error) -> BufferError_:
    """`exc` as a `BufferError_` that keeps SQLite's reason (``database or disk is full``) and
    its code (``SQLITE_FULL``)."""
    code = getattr(exc, "sqlite_errorname", None)
    return BufferError_(f"{what}: {exc}" + (f" ({code})" if code else ""), sqlite_error=code)


class Store:
    """The synchronous side, used only from the buffer's worker thread (or a CLI process)."""

    def __init__(
        self,
        path: Path,
        *,
        max_bytes: int,
        telemetry_max_age_s: float,
        durability: Literal["full", "normal"],
        chunk_max: int,
        quarantine_max_rows: int,
        quarantine_max_payload_bytes: int,
        wall: Callable[[], float],
        read_only: bool = False,
        pending_max: int = 1000,
    ) -> None:
        self.path = path
        self.pending_max = pending_max
        self.max_bytes = max_bytes
        self.telemetry_max_age_s = telemetry_max_age_s
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
            # Debian's SQLite zeroes every freed page (SECURE_DELETE): each batch deleted after its
            # PUBACK was written again, as zeros, to the WAL and then to the database. FAST clears
            # deleted content only where the page is written anyway: no extra I/O on an SD card.
            self.conn.execute("PRAGMA secure_delete=FAST")
            self.page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
            self.conn.execute(f"PRAGMA journal_size_limit={self.wal_reserve}")
            self.conn.execute(f"PRAGMA wal_autocheckpoint={max(16, self.wal_reserve // self.page_size // 4)}")
            self._sync("FULL" if durability == "full" else "NORMAL")
            self.conn.executescript(_SCHEMA)
            self.conn.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?), ('next_batch_seq', 1), "
                "('alarm_batched', 0), ('telemetry_batched', 0)",
                (SCHEMA_VERSION,),
            )
            version = self.conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()[0]
            if version == 1:  # an earlier agent's buffer: its batches hold whole envelopes
                with self._transaction("upgrading the buffer"):
                    self.conn.execute("ALTER TABLE batches ADD COLUMN first_chunk INTEGER")
                    self.conn.execute("ALTER TABLE batches ADD COLUMN last_chunk INTEGER")
                    self.conn.execute("UPDATE meta SET value = 2 WHERE key = 'schema_version'")
                version = 2
            if version == 2:  # its device rows are all in the table; the log (created above) is empty
                with self._transaction("upgrading the buffer"):
                    self.conn.execute("UPDATE meta SET value = 3 WHERE key = 'schema_version'")
            elif version != SCHEMA_VERSION:
                raise BufferError_(f"{path}: schema version {version}, this agent reads {SCHEMA_VERSION}")
            self.conn.executemany(
                "INSERT OR IGNORE INTO counters VALUES (?, 0)", [(name,) for name in COUNTERS]
            )
            self._max_pages = int(self.conn.execute("PRAGMA max_page_count").fetchone()[0])
            self._logged = devicelog.logged_rows(self.conn)
        except sqlite3.Error as exc:
            raise _mapped(f"cannot open the buffer {path}", exc) from exc
        self._synchronous = "FULL" if durability == "full" else "NORMAL"

    def _batched(self, table: str) -> int:
        """The highest chunk id of `table` in a batch: chunks up to it belong to batches."""
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (f"{table}_batched",)).fetchone()
        return int(row[0]) if row is not None else 0

    def _sync(self, mode: str) -> None:
        self.conn.execute(f"PRAGMA synchronous={mode}")
        self._synchronous = mode

    @contextlib.contextmanager
    def _transaction(self, what: str, *, synchronous: str | None = None) -> Iterator[None]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``, the one way this module writes.

        On an error the transaction is rolled back, unless SQLite has already rolled it back
        itself (it does after SQLITE_FULL and some I/O errors, and a ``ROLLBACK`` then fails with
        "no transaction is active"). The error raised is always the original one: a
        `sqlite3.Error` becomes a `BufferError_` naming `what` and SQLite's reason; a failing
        rollback is only added as a note.
        """
        try:
            if synchronous is not None and synchronous != self._synchronous:
                self._sync(synchronous)
            self.conn.execute("BEGIN IMMEDIATE")
            try:
                yield
                self.conn.execute("COMMIT")
            except BaseException as exc:
                if self.conn.in_transaction:
                    try:
                        self.conn.execute("ROLLBACK")
                    except sqlite3.Error as rollback:
                        exc.add_note(f"the rollback failed too: {rollback}")
                raise
        except sqlite3.Error as exc:
            raise _mapped(what, exc) from exc

    def set_max_pages(self, pages: int | None) -> None:
        """Cap the database file at `pages` pages (SQLite's ``max_page_count``; never below its
        current size), or lift the cap with None. Past the cap every write fails with
        "database or disk is full", exactly as on a full disk: fault drills and tests use it."""
        try:
            self.conn.execute(f"PRAGMA max_page_count={int(pages or self._max_pages)}")
        except sqlite3.Error as exc:
            raise _mapped("setting max_page_count", exc) from exc

    def close(self) -> None:
        try:
            self.conn.close()
        except sqlite3.Error as exc:
            raise _mapped("closing the buffer failed", exc) from exc

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
        alarm_chunks = list(self._chunks(intake.alarm))
        telemetry_chunks = list(self._chunks(intake.telemetry))
        incoming = sum(len(c) + 64 for _, c in alarm_chunks + telemetry_chunks)
        incoming += sum(len(q.payload) + len(q.message) + 128 for q in intake.quarantine)
        with self._transaction("buffer commit failed", synchronous=want):
            evicted = self._make_room(incoming)
            for table, chunks in (("alarm", alarm_chunks), ("telemetry", telemetry_chunks)):
                if chunks:
                    # Ids above every batched one, even when the batched chunks are gone (SQLite
                    # would reuse the ids of deleted rows at the end of the table).
                    last = self.conn.execute(f"SELECT coalesce(max(id), 0) FROM {table}").fetchone()[0]  # noqa: S608
                    start = max(int(last), self._batched(table)) + 1
                    self.conn.executemany(
                        f"INSERT INTO {table} (id, n, at_min, at_max, data) VALUES (?, ?, ?, ?, ?)",  # noqa: S608
                        [
                            (start + i, n, intake.at_min, intake.at_max, data)
                            for i, (n, data) in enumerate(chunks)
                        ],
                    )
            logged = self._logged
            if intake.devices:
                logged += devicelog.append(self.conn, intake.devices)
                if logged >= devicelog.FOLD_ROWS:
                    devicelog.fold(self.conn)
                    logged = 0
            counters = dict(intake.counters)
            if len(intake):
                counters["readings_buffered"] = counters.get("readings_buffered", 0) + len(intake)
            if intake.quarantine:
                counters.update(self._quarantine(intake.quarantine))
            if intake.pending:
                pending.upsert(self.conn, intake.pending.values(), cap=self.pending_max)
            if evicted:
                counters["evicted"] = counters.get("evicted", 0) + evicted
            self._count(counters)
        self._logged = logged
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
        batched = self._batched("telemetry")  # chunks in batches are in flight: not evicted
        while freed < target:
            rows = self.conn.execute(
                "SELECT id, n, length(data) FROM telemetry WHERE id > ? ORDER BY id LIMIT 64", (batched,)
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
            self.conn.execute("DELETE FROM telemetry WHERE id > ? AND id <= ?", (batched, last))
        if used + incoming - freed > self.db_budget:
            # Nothing left to evict: what is left is alarms (and batches in flight).
            raise BufferFull(used - freed, self.db_budget)
        return evicted

    # -- expiry ---------------------------------------------------------------------------

    def expire(self) -> int:
        """Drop telemetry older than the TTL (whole chunks by their newest reading); count it."""
        cutoff = int(self.wall() - self.telemetry_max_age_s)
        with self._transaction("buffer expiry failed"):
            batched = self._batched("telemetry")  # chunks in batches are in flight: not expired
            n = self.conn.execute(
                "SELECT coalesce(sum(n), 0) FROM telemetry WHERE at_max < ? AND id > ?", (cutoff, batched)
            ).fetchone()[0]
            if n:
                self.conn.execute("DELETE FROM telemetry WHERE at_max < ? AND id > ?", (cutoff, batched))
                self._count({"expired": int(n)})
        return int(n)

    # -- batches (edge.batches) -------------------------------------------------------------

    def form_batch(self, batch_class: int, max_readings: int, build: EnvelopeBuilder) -> Batch | None:
        """Fix the next batch of `batch_class` in one transaction (`edge.batches.form`). Returns
        None when that class has nothing buffered."""
        table = _TABLES[batch_class]
        # Always fsynced, whatever the durability mode: a formed batch is published next, and a
        # power cut must not roll back its sequence number for reuse with other readings.
        with self._transaction("forming a batch failed", synchronous="FULL"):
            return batches.form(
                self.conn,
                table=table,
                batch_class=batch_class,
                batched=self._batched(table),
                max_readings=max_readings,
                build=build,
                counters=self.counters,
            )

    def batches(self) -> list[Batch]:
        """Batches formed and not yet acknowledged: alarm batches first, then by sequence."""
        try:
            return batches.formed(self.conn)
        except sqlite3.Error as exc:
            raise _mapped("reading batches failed", exc) from exc

    def delete_batch(self, seq: int) -> None:
        # Not fsynced: if a power cut rolls the deletion back, the batch is resent byte for byte
        # and the cloud drops the repeat.
        with self._transaction(f"deleting batch {seq} failed", synchronous="NORMAL"):
            sent = batches.delete(self.conn, seq)
            if sent is not None:
                self._count({"readings_sent": sent, "batches_sent": 1})

    # -- reading back ---------------------------------------------------------------------

    def counters(self) -> dict[str, int]:
        try:
            rows = self.conn.execute("SELECT name, value FROM counters ORDER BY name").fetchall()
        except sqlite3.Error as exc:
            raise _mapped("reading counters failed", exc) from exc
        return {str(k): int(v) for k, v in rows}

    def devices(self) -> dict[str, DeviceRow]:
        try:
            return devicelog.load(self.conn)
        except sqlite3.Error as exc:
            raise _mapped("reading devices failed", exc) from exc

    # -- the field session's subscriptions ------------------------------------------------

    def subscriptions(self) -> list[str]:
        """The filters the field broker's session may hold (remembered, not yet forgotten)."""
        try:
            rows = self.conn.execute("SELECT filter FROM subscriptions ORDER BY filter").fetchall()
        except sqlite3.Error as exc:
            raise _mapped("reading subscriptions failed", exc) from exc
        return [str(r[0]) for r in rows]

    def remember_subscriptions(self, filters: Sequence[str]) -> None:
        """Record filters before subscribing to them."""
        with self._transaction("recording subscriptions failed"):
            self.conn.executemany("INSERT OR IGNORE INTO subscriptions VALUES (?)", [(f,) for f in filters])

    def forget_subscriptions(self, filters: Sequence[str]) -> None:
        """Drop filters the broker has confirmed unsubscribing."""
        with self._transaction("recording subscriptions failed"):
            self.conn.executemany("DELETE FROM subscriptions WHERE filter = ?", [(f,) for f in filters])

    def stats(self) -> BufferStats:
        try:
            depth = {}
            oldest: list[int] = []
            for table in _TABLES:
                n, at = self.conn.execute(
                    f"SELECT coalesce(sum(n), 0), min(at_min) FROM {table} WHERE id > ?",  # noqa: S608
                    (self._batched(table),),
                ).fetchone()
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
                pending_devices=int(self.conn.execute("SELECT count(*) FROM pending").fetchone()[0]),
            )
        except sqlite3.Error as exc:
            raise _mapped("reading buffer statistics failed", exc) from exc

    def quarantine_rows(self, limit: int = 100) -> list[tuple[int, QuarantineEntry, int]]:
        """Newest first: (id, entry, original payload size)."""
        try:
            rows = self.conn.execute(
                "SELECT id, at_us, topic, reason, message, payload, size FROM quarantine "
                "ORDER BY id DESC LIMIT ?",
                (limit,),
            ).fetchall()
        except sqlite3.Error as exc:
            raise _mapped("reading the quarantine failed", exc) from exc
        return [
            (
                int(r[0]),
                QuarantineEntry(at_us=r[1], topic=r[2], reason=r[3], message=r[4], payload=bytes(r[5])),
                int(r[6]),
            )
            for r in rows
        ]

    def pending_devices(self) -> list[PendingDevice]:
        try:
            return pending.rows(self.conn)
        except sqlite3.Error as exc:
            raise _mapped("reading the pending devices failed", exc) from exc

    def forget_pending(self, device_ids: Iterable[str]) -> int:
        with self._transaction("forgetting pending devices failed"):
            return pending.forget(self.conn, device_ids)

    def read(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` outside a write transaction (a read-only store beside the agent)."""
        try:
            return fn(self.conn, *args)
        except sqlite3.Error as exc:
            raise _mapped(what, exc) from exc

    def within(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(conn, *args)`` in one write transaction (durable at commit, like the readings):
        the way the modules of other tables (`edge.command_queue`) write the buffer."""
        with self._transaction(what, synchronous="FULL"):
            return fn(self.conn, *args)

    def checkpoint(self) -> None:
        try:
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        except sqlite3.Error as exc:
            raise _mapped("checkpoint failed", exc) from exc


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
        telemetry_max_age_s: float = 7 * 86400,
        durability: Literal["full", "normal"] = "full",
        chunk_max: int = 500,
        quarantine_max_rows: int = 10_000,
        quarantine_max_payload_bytes: int = 4096,
        pending_max: int = 1000,
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
                    telemetry_max_age_s=telemetry_max_age_s,
                    durability=durability,
                    chunk_max=chunk_max,
                    quarantine_max_rows=quarantine_max_rows,
                    quarantine_max_payload_bytes=quarantine_max_payload_bytes,
                    pending_max=pending_max,
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

    async def pending_devices(self) -> list[PendingDevice]:
        return await self._run(self._store.pending_devices)

    async def forget_pending(self, device_ids: Iterable[str]) -> int:
        return await self._run(self._store.forget_pending, list(device_ids))

    async def checkpoint(self) -> None:
        await self._run(self._store.checkpoint)

    async def within(self, what: str, fn: Callable[..., T], *args: Any) -> T:
        """`Store.within` on the buffer's thread; `BufferError_` naming `what` on failure."""
        return await self._run(self._store.within, what, fn, *args)

    async def subscriptions(self) -> list[str]:
        return await self._run(self._store.subscriptions)

    async def remember_subscriptions(self, filters: Sequence[str]) -> None:
        await self._run(self._store.remember_subscriptions, filters)

    async def forget_subscriptions(self, filters: Sequence[str]) -> None:
        await self._run(self._store.forget_subscriptions, filters)

    async def set_max_pages(self, pages: int | None) -> None:
        await self._run(self._store.set_max_pages, pages)

    async def close(self) -> None:
        try:
            await self._run(self._store.close)
        finally:
            self._executor.shutdown(wait=True)

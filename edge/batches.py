"""A buffer's batches: envelopes fixed when formed, kept until their PUBACK (`edge.buffer`
describes the layout). Functions on the buffer's connection, called inside its transactions.

A batch of whole chunks stores only its header (the envelope up to its readings) and the range
of chunk ids it consists of; those chunks stay where they are, marked as batched by
``meta.<class>_batched``, and go with the batch. A batch cut from one oversized chunk (the batch
size was lowered) stores its whole envelope, zlib-compressed.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Callable
from typing import Literal

from edge.envelope import pack_array, split_array
from edge.errors import BufferError_
from edge.records import ALARM, TABLES, Batch

#: Builds an envelope: (batch_seq, class, packed readings, counters) -> payload.
EnvelopeBuilder = Callable[[int, Literal["alarm", "telemetry"], bytes, dict[str, int]], bytes]


def _stored_payload(stored: bytes) -> bytes:
    """A batch's envelope as published. Stored zlib-compressed (a third of the bytes written to
    an SD card); a buffer written by an earlier agent holds it as is: an envelope is a MessagePack
    map (first byte 0x80-0x8f or 0xde/0xdf), a zlib stream starts with 0x78."""
    return zlib.decompress(stored) if stored[:1] == b"\x78" else stored


def form(
    conn: sqlite3.Connection,
    *,
    table: str,
    batch_class: int,
    batched: int,
    max_readings: int,
    build: EnvelopeBuilder,
    counters: Callable[[], dict[str, int]],
) -> Batch | None:
    """Fix the next batch of `batch_class` from the chunks after `batched` (the last chunk id
    already in a batch): insert the envelope and mark or delete its chunks. None when there are
    none."""
    # Read chunks one at a time and stop at the first that does not fit: a backlog of full
    # chunks must not load hundreds of blobs to use one.
    cursor = conn.execute(
        f"SELECT id, n, at_min, data FROM {table} WHERE id > ? ORDER BY id LIMIT ?",  # noqa: S608
        (batched, max(1, max_readings)),
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
    first_id = rows[0][0]
    last_id = None
    for rid, n, chunk_at, data in rows:
        if count and count + n > max_readings:
            break
        body = zlib.decompress(data)
        if n > max_readings - count:
            # A chunk larger than the batch (the setting was lowered): split it.
            parts = split_array(pack_array(n, body))
            keep, rest = parts[: max_readings - count], parts[max_readings - count :]
            conn.execute(
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
    seq = int(conn.execute("SELECT value FROM meta WHERE key = 'next_batch_seq'").fetchone()[0])
    conn.execute("UPDATE meta SET value = value + 1 WHERE key = 'next_batch_seq'")
    readings = pack_array(count, b"".join(taken))
    payload = build(seq, "alarm" if batch_class == ALARM else "telemetry", readings, counters())
    if last_id is not None and payload.endswith(readings):
        # Whole chunks: the batch is its header and their ids; they stay, marked as batched.
        conn.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (seq, batch_class, count, at_min, payload[: len(payload) - len(readings)], first_id, last_id),
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = ?", (last_id, f"{table}_batched"))
    else:
        if last_id is not None:
            conn.execute(f"DELETE FROM {table} WHERE id > ? AND id <= ?", (batched, last_id))  # noqa: S608
        conn.execute(
            "INSERT INTO batches (seq, class, n, at_min, payload) VALUES (?, ?, ?, ?, ?)",
            (seq, batch_class, count, at_min, zlib.compress(payload, 1)),
        )
    return Batch(seq=seq, batch_class=batch_class, count=count, at_min=at_min, payload=payload)


def formed(conn: sqlite3.Connection) -> list[Batch]:
    """Batches formed and not yet acknowledged: alarm batches first, then by sequence."""
    rows = conn.execute(
        "SELECT seq, class, n, at_min, payload, first_chunk, last_chunk FROM batches ORDER BY class, seq"
    ).fetchall()
    return [
        Batch(
            seq=seq,
            batch_class=cls,
            count=n,
            at_min=at_min,
            payload=_stored_payload(stored)
            if first is None
            else _rebuilt(conn, seq, cls, n, stored, first, last),
        )
        for seq, cls, n, at_min, stored, first, last in rows
    ]


def _rebuilt(
    conn: sqlite3.Connection, seq: int, batch_class: int, count: int, header: bytes, first: int, last: int
) -> bytes:
    """A batch of whole chunks as it was formed: its header, then its chunks' readings."""
    rows = conn.execute(
        f"SELECT n, data FROM {TABLES[batch_class]} WHERE id >= ? AND id <= ? ORDER BY id",  # noqa: S608
        (first, last),
    ).fetchall()
    if sum(n for n, _ in rows) != count:
        raise BufferError_(
            f"batch {seq}: its chunks {first}-{last} hold {sum(n for n, _ in rows)} readings, not {count}"
        )
    return bytes(header) + pack_array(count, b"".join(zlib.decompress(data) for _, data in rows))


def delete(conn: sqlite3.Connection, seq: int) -> int | None:
    """Delete batch `seq` and its chunks (acknowledged); the readings it held, or None when it
    was already gone."""
    row = conn.execute(
        "SELECT n, class, first_chunk, last_chunk FROM batches WHERE seq = ?", (seq,)
    ).fetchone()
    if row is None:
        return None
    conn.execute("DELETE FROM batches WHERE seq = ?", (seq,))
    if row[2] is not None:
        conn.execute(f"DELETE FROM {TABLES[row[1]]} WHERE id >= ? AND id <= ?", (row[2], row[3]))  # noqa: S608
    return int(row[0])

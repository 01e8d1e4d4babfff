"""The buffer's device rows: appended to a log in the commit of the readings that changed them, and
folded into the ``devices`` table now and then.

A device row holds what the agent must not forget over a restart: the last state values (a
state-change event is derived from the value before), the last-seen time (liveness) and the
offline mark. It is written in the same transaction as the reading that changed it, so after a
kill the rows match the readings kept, exactly. Written in place, every commit rewrote a page of
the ``devices`` table for each device in it: a few devices a commit, scattered over the table,
cost a whole page each. Here a commit appends one compressed blob of its rows to ``device_log``
(a tail page, mostly shared with the commits before it), and a fold, once the log holds
`FOLD_ROWS` rows, applies the log to ``devices`` oldest first (the newest row wins) and empties
it, in the same transaction: each page of the table is rewritten once per fold, not once per
commit (docs/benchmarks.md, "Bytes written").

Reading the rows back (at start) is the table with the log applied over it. Nothing here holds
more rows in memory than one blob's: the fold streams the log into the table.
"""

from __future__ import annotations

import sqlite3
import zlib
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Final

import msgspec

from edge.records import DeviceRow

#: Rows the log holds before it is folded into the table. A fold is one longer commit (the agent
#: holds what arrives meanwhile, up to the field link's receive maximum): 16,384 rows took 60-170 ms
#: and raised the agent's peak by 4-6 MB; 4,096 keep the peak within 1 MB of in-place updates
#: and most of the saving (docs/benchmarks.md, "Bytes written").
FOLD_ROWS: Final = 4_096
#: Rows per blob at most: decoding a blob of thousands of rows at once makes thousands of small
#: objects at once, for one fold.
BLOB_ROWS: Final = 256

_Row = tuple[str, bytes | None, int, bool]
_encode = msgspec.msgpack.Encoder().encode
_decode = msgspec.msgpack.Decoder(list[_Row]).decode

_UPSERT: Final = (
    "INSERT INTO devices VALUES (?, ?, ?, ?) ON CONFLICT (device_id) DO UPDATE SET "
    "state = excluded.state, last_seen_us = excluded.last_seen_us, offline = excluded.offline"
)


def logged_rows(conn: sqlite3.Connection) -> int:
    """How many rows the log holds (not yet folded)."""
    return int(conn.execute("SELECT coalesce(sum(n), 0) FROM device_log").fetchone()[0])


def append(conn: sqlite3.Connection, devices: Mapping[str, DeviceRow]) -> int:
    """Append `devices` to the log in blobs of `BLOB_ROWS` (inside the caller's transaction); the
    row count."""
    items = iter(devices.items())
    while rows := [(d, r.state, r.last_seen_us, r.offline) for d, r in islice(items, BLOB_ROWS)]:
        conn.execute(
            "INSERT INTO device_log (n, data) VALUES (?, ?)", (len(rows), zlib.compress(_encode(rows), 1))
        )
    return len(devices)


def _blobs(conn: sqlite3.Connection) -> Iterable[list[_Row]]:
    cursor = conn.execute("SELECT data FROM device_log ORDER BY seq")
    try:
        for (data,) in cursor:
            yield _decode(zlib.decompress(data))
    finally:
        cursor.close()


def fold(conn: sqlite3.Connection) -> None:
    """Apply the log to the ``devices`` table, oldest first, and empty it (inside the caller's
    transaction)."""
    for rows in _blobs(conn):
        conn.executemany(_UPSERT, ((d, state, seen, int(off)) for d, state, seen, off in rows))
    conn.execute("DELETE FROM device_log")


def load(conn: sqlite3.Connection) -> dict[str, DeviceRow]:
    """Every device's row: the table, with the log applied over it."""
    rows = conn.execute("SELECT device_id, state, last_seen_us, offline FROM devices").fetchall()
    out = {
        str(d): DeviceRow(last_seen_us=int(seen), offline=bool(off), state=state)
        for d, state, seen, off in rows
    }
    for logged in _blobs(conn):
        for d, state, seen, off in logged:
            out[d] = DeviceRow(last_seen_us=seen, offline=off, state=state)
    return out

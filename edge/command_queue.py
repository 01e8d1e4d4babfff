"""The gateway's command queue: the commands the cloud sent, in the buffer, until their fate is told.

One row per command id (a resent command is the same row: the cloud sends until told it is
stored), written before the MQTT message is acknowledged, so a command acknowledged is a command
kept. The row carries the command's state at the gateway (`command_wire` states from
``at_gateway``); every change of state is also written, in the same transaction, to
``command_reports``, the outbox the reporter sends to the cloud in order and deletes from as the
cloud acknowledges (after a restart too). Ended commands whose reports were all heard are pruned
after a while. ``device_topics`` keeps each commanded device's last uplink topic, whose
variables (a ChirpStack application id) a command's topic needs, across restarts.

Plain functions on a `sqlite3.Connection`, run by `edge.buffer.Store.within` in its transactions.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final, NamedTuple

import msgspec

from device_profiles.command_wire import AT_GATEWAY, EXPIRED, FINAL_STATES, DownCommand, moves_forward

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, device_id TEXT NOT NULL, name TEXT NOT NULL,
    params BLOB NOT NULL, confirm TEXT NOT NULL, expires_at_us INTEGER NOT NULL,
    received_at_us INTEGER NOT NULL, state TEXT NOT NULL, reason TEXT, state_at_us INTEGER NOT NULL,
    sent_at_us INTEGER) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS commands_state_idx ON commands (state, seq);
CREATE TABLE IF NOT EXISTS command_reports (
    id INTEGER PRIMARY KEY, command_id TEXT NOT NULL, state TEXT NOT NULL, reason TEXT,
    at_us INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS device_topics (device_id TEXT PRIMARY KEY, topic TEXT NOT NULL) WITHOUT ROWID;
"""

_COLUMNS: Final = (
    "command_id, seq, device_id, name, params, confirm, expires_at_us, state, reason, state_at_us, sent_at_us"
)


class QueuedCommand(msgspec.Struct, frozen=True, kw_only=True):
    command_id: str
    seq: int
    device_id: str
    name: str
    params: dict[str, bool | int | str]
    confirm: str
    expires_at_us: int
    state: str
    reason: str | None
    state_at_us: int
    sent_at_us: int | None


_params: Final = msgspec.json.Decoder(dict[str, bool | int | str])


def _row(r: tuple[object, ...]) -> QueuedCommand:
    (command_id, seq, device_id, name, params, confirm, expires, state, reason, at, sent) = r
    return QueuedCommand(
        command_id=str(command_id),
        seq=int(str(seq)),
        device_id=str(device_id),
        name=str(name),
        params=_params.decode(bytes(params)) if isinstance(params, bytes) else {},
        confirm=str(confirm),
        expires_at_us=int(str(expires)),
        state=str(state),
        reason=None if reason is None else str(reason),
        state_at_us=int(str(at)),
        sent_at_us=None if sent is None else int(str(sent)),
    )


def store(conn: sqlite3.Connection, commands: Iterable[DownCommand], now_us: int) -> list[str]:
    """Keep the commands not kept yet (a command already past its time to live is kept as
    ``expired``); returns the ids new here."""
    new = []
    for c in commands:
        expired = c.expires_at_us <= now_us
        cur = conn.execute(
            f"INSERT OR IGNORE INTO commands ({_COLUMNS}, received_at_us)"  # noqa: S608 - constant
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, ?)",
            (
                c.command_id,
                c.seq,
                c.device_id,
                c.name,
                msgspec.json.encode(c.params),
                c.confirm,
                c.expires_at_us,
                EXPIRED if expired else AT_GATEWAY,
                "its time to live passed before it reached the gateway" if expired else None,
                now_us,
                now_us,
            ),
        )
        if cur.rowcount:
            new.append(c.command_id)
            reason = "its time to live passed before it reached the gateway" if expired else None
            _report(conn, c.command_id, EXPIRED if expired else AT_GATEWAY, reason, now_us)
    return new


def _report(conn: sqlite3.Connection, command_id: str, state: str, reason: str | None, at_us: int) -> None:
    conn.execute(
        "INSERT INTO command_reports (command_id, state, reason, at_us) VALUES (?, ?, ?, ?)",
        (command_id, state, reason, at_us),
    )


def in_state(conn: sqlite3.Connection, state: str) -> list[QueuedCommand]:
    """The commands in `state`, in the cloud's order."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM commands WHERE state = ? ORDER BY seq",  # noqa: S608 - constant
        (state,),
    ).fetchall()
    return [_row(r) for r in rows]


def recent(conn: sqlite3.Connection, limit: int) -> list[QueuedCommand]:
    """The newest commands (by the cloud's order), newest first."""
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM commands ORDER BY seq DESC LIMIT ?",  # noqa: S608 - constant
        (limit,),
    ).fetchall()
    return [_row(r) for r in rows]


def get(conn: sqlite3.Connection, command_id: str) -> QueuedCommand | None:
    row = conn.execute(
        f"SELECT {_COLUMNS} FROM commands WHERE command_id = ?",  # noqa: S608 - constant
        (command_id,),
    ).fetchone()
    return None if row is None else _row(row)


def set_state(
    conn: sqlite3.Connection, command_id: str, state: str, at_us: int, reason: str | None = None
) -> bool:
    """Move a command forward to `state` (never back); returns whether it moved."""
    row = conn.execute("SELECT state FROM commands WHERE command_id = ?", (command_id,)).fetchone()
    if row is None or not moves_forward(str(row[0]), state):
        return False
    conn.execute(
        "UPDATE commands SET state = ?, reason = ?, state_at_us = ?,"
        " sent_at_us = CASE WHEN ? = 'sent_to_device' THEN ? ELSE sent_at_us END WHERE command_id = ?",
        (state, reason, at_us, state, at_us, command_id),
    )
    _report(conn, command_id, state, reason, at_us)
    return True


def newest_sent(conn: sqlite3.Connection, device_id: str) -> int:
    """The highest `seq` of a command sent to the device (0: none)."""
    row = conn.execute(
        "SELECT max(seq) FROM commands WHERE device_id = ? AND sent_at_us IS NOT NULL", (device_id,)
    ).fetchone()
    return int(row[0]) if row is not None and row[0] is not None else 0


class Report(NamedTuple):
    id: int
    command_id: str
    state: str
    reason: str | None
    at_us: int


def unreported(conn: sqlite3.Connection, limit: int) -> list[Report]:
    """The state changes the cloud has not acknowledged hearing, in the order they happened."""
    rows = conn.execute(
        "SELECT id, command_id, state, reason, at_us FROM command_reports ORDER BY id LIMIT ?", (limit,)
    ).fetchall()
    return [Report(int(i), str(c), str(s), None if r is None else str(r), int(a)) for i, c, s, r, a in rows]


def mark_reported(conn: sqlite3.Connection, ids: Iterable[int]) -> None:
    """The reports the cloud acknowledged."""
    conn.executemany("DELETE FROM command_reports WHERE id = ?", [(i,) for i in ids])


def prune(conn: sqlite3.Connection, before_us: int) -> int:
    """Forget ended commands, ended before `before_us`, whose every report the cloud heard."""
    ended = ",".join(f"'{s}'" for s in sorted(FINAL_STATES))
    cur = conn.execute(
        f"DELETE FROM commands WHERE state IN ({ended}) AND state_at_us < ?"  # noqa: S608 - constants
        " AND NOT EXISTS (SELECT 1 FROM command_reports r WHERE r.command_id = commands.command_id)",
        (before_us,),
    )
    return cur.rowcount


def remember_topics(conn: sqlite3.Connection, topics: Iterable[tuple[str, str]]) -> None:
    conn.executemany("INSERT OR REPLACE INTO device_topics (device_id, topic) VALUES (?, ?)", list(topics))


def topics(conn: sqlite3.Connection) -> dict[str, str]:
    return {str(d): str(t) for d, t in conn.execute("SELECT device_id, topic FROM device_topics")}


def count(conn: sqlite3.Connection) -> dict[str, int]:
    """Commands by state."""
    return {str(s): int(n) for s, n in conn.execute("SELECT state, count(*) FROM commands GROUP BY state")}


def quarantine(conn: sqlite3.Connection, *, at_us: int, topic: str, message: str, payload: bytes) -> None:
    """A message on the command topic that is no command: kept with the reason, like a bad reading."""
    conn.execute(
        "INSERT INTO quarantine (at_us, topic, reason, message, size, payload) VALUES (?, ?, ?, ?, ?, ?)",
        (at_us, topic, "bad_command", message, len(payload), payload[:4096]),
    )

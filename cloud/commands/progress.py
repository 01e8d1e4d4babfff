"""The cloud's side of a command's way down: which commands to send, and what the gateways report.

- `due`: the queued commands to publish now, oldest first: never sent, or sent `resend_s` ago and
  not yet reported stored (the gateway was offline, its session was lost, or the report is on its
  way: the gateway keeps one copy per command id, so a resend costs nothing). Taken ``FOR UPDATE
  SKIP LOCKED``: several senders never publish the same command at once.
- `apply`: a gateway's `CommandProgress`. A state is taken only if it moves the command forward
  (`command_wire.moves_forward`), from the gateway that owns it, with an entry in the command's
  audit trail and, for a command answering an incident (an SOS button's acknowledge), one in the
  incident's audit trail: the staff see "help is coming" reach the resident.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
import psycopg
from psycopg.types.json import Jsonb

from cloud.alerts.feed import FEED_CHANNEL, community_hash
from cloud.ingest.envelope import ALARM, VERSION, Envelope, WireReading
from cloud.store.writer import FEED_LOCK_SQL
from device_profiles.command_wire import CONFIRMED, FINAL_STATES, CommandProgress, DownCommand, moves_forward
from device_profiles.standard import CLOUD_QUALITY, Event

#: What `apply` did with a report.
APPLIED: Final = "applied"
STALE: Final = "stale"  # the command is there already, or further
UNKNOWN: Final = "unknown"  # no such command (or not a UUID)
FOREIGN: Final = "foreign"  # another gateway's command
#: Namespace of the reading ids of `_note_fate`'s readings.
_FATE: Final = uuid.UUID("6c696e6c-692d-636d-642d-666174650000")

_DUE: Final = (
    "SELECT command_id, seq, device_id, community_id, gateway_id, name, params, confirm, requested_at,"
    " expires_at FROM commands WHERE state = 'queued' AND expires_at > %(now)s AND (sent_at IS NULL"
    " OR sent_at <= %(now)s - make_interval(secs => least(%(resend)s * power(2, greatest(sends - 1, 0)),"
    " %(most)s))) ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED"
)


def _us(t: datetime) -> int:
    return int(t.timestamp() * 1_000_000)


def due(
    conn: psycopg.Connection[Any], *, now: datetime, resend_s: float, resend_max_s: float, limit: int
) -> list[tuple[str, str, DownCommand]]:
    """(community, gateway, command) of the commands to publish now, in outbox order: never sent,
    or sent and not reported stored for `resend_s`, doubling with every send up to `resend_max_s`
    (a gateway offline for hours has its broker session hold a few copies, not hundreds); locked
    until the caller's transaction ends (call `mark_sent` in it)."""
    rows = conn.execute(
        _DUE, {"now": now, "resend": resend_s, "most": max(resend_s, resend_max_s), "limit": limit}
    ).fetchall()
    return [
        (
            community,
            gateway,
            DownCommand(
                command_id=str(command_id),
                seq=seq,
                device_id=device_id,
                name=name,
                params=params,
                confirm=confirm,
                requested_at_us=_us(requested_at),
                expires_at_us=_us(expires_at),
            ),
        )
        for command_id, seq, device_id, community, gateway, name, params, confirm, requested_at, expires_at
        in rows
    ]  # fmt: skip


def mark_sent(conn: psycopg.Connection[Any], command_ids: list[str], *, now: datetime) -> None:
    conn.execute(
        "UPDATE commands SET sent_at = %s, sends = sends + 1 WHERE command_id = ANY(%s::uuid[])",
        (now, command_ids),
    )


def apply(conn: psycopg.Connection[Any], report: CommandProgress, *, gateway_id: str) -> str:
    """Take one progress report of `gateway_id` (the topic's) in the caller's transaction."""
    try:
        command_id = uuid.UUID(report.command_id)
    except ValueError:
        return UNKNOWN
    row = conn.execute(
        "SELECT state, gateway_id, incident_id, name, device_id, community_id, confirm FROM commands"
        " WHERE command_id = %s FOR UPDATE",
        (command_id,),
    ).fetchone()
    if row is None:
        return UNKNOWN
    state, owner, incident_id, name, device_id, community_id, confirm = row
    if owner != gateway_id:
        return FOREIGN
    if not moves_forward(state, report.state):
        return STALE
    at = datetime.fromtimestamp(report.at_us / 1_000_000, UTC)
    conn.execute(
        "UPDATE commands SET state = %s, reason = %s, updated_at = %s WHERE command_id = %s",
        (report.state, report.reason, at, command_id),
    )
    conn.execute(
        "INSERT INTO command_audit (command_id, at, actor, state, detail) VALUES (%s, %s, %s, %s, %s)",
        (command_id, at, f"gateway {gateway_id}", report.state, report.reason or ""),
    )
    if report.state in FINAL_STATES and confirm != "none":
        _note_fate(conn, report, device_id=device_id, community_id=community_id, name=name, at=at)
    if incident_id is not None:
        detail = {"command": {"name": name, "command_id": str(command_id), "state": report.state}}
        if report.reason:
            detail["command"]["reason"] = report.reason
        conn.execute(
            "INSERT INTO incident_audit (incident_id, at, actor, actor_role, action, from_state, to_state,"
            " note, detail) SELECT incident_id, %s, 'system', 'system', 'command', state, state, %s, %s"
            " FROM incidents WHERE incident_id = %s",
            (at, f"{name} {report.state.replace('_', ' ')}", Jsonb(detail), incident_id),
        )
    return APPLIED


def _note_fate(
    conn: psycopg.Connection[Any],
    report: CommandProgress,
    *,
    device_id: str,
    community_id: str,
    name: str,
    at: datetime,
) -> None:
    """The command's end as an event of its device (``command_confirmed``, or
    ``command_not_confirmed`` for failed and expired): in ``events`` for its history, and in the
    alert feed, as the ingest writes it, for the ``command`` rules (a lamp that does not follow
    its schedule is an incident). One reading flagged `CLOUD_QUALITY`: no sign of the device's life."""
    device = conn.execute(
        "SELECT device_type, profile FROM devices WHERE device_id = %s", (device_id,)
    ).fetchone()
    if device is None:
        return
    event = Event.COMMAND_CONFIRMED if report.state == CONFIRMED else Event.COMMAND_NOT_CONFIRMED
    attributes = {"gateway_id": report.gateway_id, "command_id": report.command_id, "command": name,
                  "state": report.state, "reason": report.reason}  # fmt: skip
    conn.execute(
        "INSERT INTO events (time, device_id, event, attributes) VALUES (%s, %s, %s, %s)",
        (at, device_id, str(event), Jsonb(attributes)),
    )
    reading = WireReading(
        device_id=device_id,
        device_type=device[0],
        ts_us=report.at_us,
        received_at_us=report.at_us,
        metrics={},
        events=(str(event),),
        quality=(CLOUD_QUALITY,),
        profile=device[1],
        reading_id=str(uuid.uuid5(_FATE, f"{report.command_id}:{report.state}")),
    )
    envelope = Envelope(
        v=VERSION,
        gateway_id=report.gateway_id,
        community_id=community_id,
        batch_seq=0,
        batch_class="telemetry" if report.state == CONFIRMED else ALARM,
        created_at_us=report.at_us,
        counters={},
        readings=(reading,),
    )
    conn.execute(FEED_LOCK_SQL)
    conn.execute(
        "WITH appended AS (INSERT INTO alert_feed (community_id, community_hash, readings, batches)"
        " VALUES (%s, %s, 1, %s) RETURNING feed_seq) SELECT pg_notify(%s, feed_seq::text) FROM appended",
        (community_id, community_hash(community_id), msgspec.msgpack.encode([envelope]), FEED_CHANNEL),
    )

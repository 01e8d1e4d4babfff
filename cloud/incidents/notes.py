"""Events noted on an open incident (a rule's ``note_events``), told to everyone already told.

The alert service writes a ``noted`` occurrence (the resident cancelled an SOS press) in its own
transaction; `tell_notes` takes each one not told yet and, in one transaction with an audit
entry of the incident (action ``note``, actor ``device``) and ``told_at``, queues a message to
every ladder level the incident has reached and, for the rules in ``contact_rules``, to the
resident's emergency contacts and the doctors: "the resident cancelled the call, phone to
confirm". The incident itself stays as it is (an SOS is closed by staff only). An incident whose
first step has not been taken yet keeps its note until it has, so nobody hears of a cancel before
the call. Rows are taken ``FOR UPDATE SKIP LOCKED``: each note is told once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any, Final

import psycopg
from psycopg.rows import class_row

from cloud.incidents.escalation import contacts
from cloud.incidents.record import SELECT_INCIDENT, Context, IncidentRow, Owed, audit, enqueue

#: The audit trail's actor of a noted event.
DEVICE: Final = "device"


def tell_notes(
    conn: psycopg.Connection[Any],
    ctx: Context,
    *,
    now: datetime,
    contact_rules: Sequence[str] = ("sos_pressed",),
    limit: int = 200,
) -> int:
    """Tell every note not told yet (at most `limit`), each in its own transaction; how many."""
    told = 0
    while told < limit:
        with conn.transaction():
            row = conn.execute(
                "SELECT o.occurrence_id, o.incident_id, o.at, o.evidence FROM incident_occurrences o"
                " JOIN incidents i USING (incident_id)"
                " WHERE o.kind = 'noted' AND o.told_at IS NULL"
                " AND (i.escalation_level > 0 OR i.state <> 'detected')"
                " ORDER BY o.occurrence_id LIMIT 1 FOR UPDATE OF o SKIP LOCKED"
            ).fetchone()
            if row is None:
                break
            occurrence_id, incident_id, at, evidence = row
            with conn.cursor(row_factory=class_row(IncidentRow)) as cur:
                incident = cur.execute(
                    SELECT_INCIDENT + " WHERE i.incident_id = %s", (incident_id,)
                ).fetchone()
            assert incident is not None  # noqa: S101 - the join found it
            events = [e["event"] for e in evidence if isinstance(e, dict) and "event" in e]
            owed: list[Owed] = []
            for level in range(1, incident.escalation_level + 1):
                owed.extend(ctx.to_level(incident, level, "cancelled"))
            if incident.rule in contact_rules:
                owed.extend(contacts(ctx, incident, "cancelled"))
            audit(
                conn,
                incident,
                at=now,
                actor=DEVICE,
                actor_role=DEVICE,
                action="note",
                to_state=incident.state,
                note=f"{', '.join(events) or 'event'} at {at.isoformat(timespec='seconds')}",
                detail={"events": events, "channels": sorted({o.channel for o in owed})},
            )
            enqueue(conn, incident.incident_id, owed, at=now)
            conn.execute(
                "UPDATE incident_occurrences SET told_at = %s WHERE occurrence_id = %s", (now, occurrence_id)
            )
            told += 1
    return told

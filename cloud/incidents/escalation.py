"""The escalation ladder and auto-close, as transactions over due incidents.

`step_due` takes the incidents nobody has accepted whose next step is due (new ones: at once)
and, per incident and in one transaction with its audit entry and its notifications:

- level 0 -> 1 (the first step): tells the first level; for the rules in ``contact_rules``
  (``sos_pressed``) also the resident's emergency contacts and the community's doctors;
- level k -> k+1 at level k's deadline: tells level k+1 and reminds levels 1..k;
- at the top level, after its deadline: reminds the top level every ``remind_every_s``.

A non-latched incident that cleared stops climbing (it stays open, and auto-closes after the
quiet time unless someone accepts it); a latched one (SOS) climbs until accepted.

Accepting (`cloud.incidents.transitions`) clears ``next_escalation_at`` in its own transaction,
so no step starts after it commits; a step already running holds the row lock, and the accept
waits for it. Rows are taken ``FOR UPDATE SKIP LOCKED``: several escalators may run at once,
each step happens once.

`auto_close_due` closes cleared, non-latched incidents nobody accepted once their community's
quiet time has passed since they cleared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.rows import class_row

from cloud.incidents.record import SELECT_INCIDENT, Context, IncidentRow, Owed, audit, enqueue
from cloud.notify.message import Reason

#: The actor of the ladder's steps and of auto-close in the audit trail.
SYSTEM: Final = "system"


@dataclass(frozen=True, slots=True)
class Step:
    """One step taken: the incident, the level reached, and how many notifications it owes."""

    incident_id: int
    action: str  # escalate | remind
    level: int
    notifications: int


def step_due(
    conn: psycopg.Connection[Any],
    ctx: Context,
    *,
    now: datetime,
    contact_rules: Sequence[str] = ("sos_pressed",),
    limit: int = 200,
) -> list[Step]:
    """Take every due step (at most `limit` incidents), each incident in its own transaction."""
    steps: list[Step] = []
    while len(steps) < limit:
        with conn.transaction():
            with conn.cursor(row_factory=class_row(IncidentRow)) as cur:
                incident = cur.execute(
                    SELECT_INCIDENT
                    + " WHERE i.state = 'detected' AND (i.escalation_level = 0 OR (i.next_escalation_at <= %s"
                    " AND (i.latched OR i.cleared_at IS NULL)))"
                    " ORDER BY i.escalation_level = 0 DESC, i.severity = 'critical' DESC, i.incident_id"
                    " LIMIT 1 FOR UPDATE OF i SKIP LOCKED",
                    (now,),
                ).fetchone()
            if incident is None:
                break
            steps.append(_step(conn, ctx, incident, now, contact_rules))
    return steps


def _step(
    conn: psycopg.Connection[Any],
    ctx: Context,
    incident: IncidentRow,
    now: datetime,
    contact_rules: Sequence[str],
) -> Step:
    people = ctx.people
    community = people.communities.get(incident.community_id)
    level = incident.escalation_level
    owed: list[Owed] = []
    if community is None:  # nobody to tell: say so in the trail, never retry forever
        audit(
            conn,
            incident,
            at=now,
            actor=SYSTEM,
            actor_role=SYSTEM,
            action="escalate",
            to_state=incident.state,
            note=f"no ladder for community {incident.community_id} in the people file: nobody was told",
            detail={"level": 1, "channels": []},
        )
        _set(conn, incident, 1, None)
        return Step(incident.incident_id, "escalate", 1, 0)
    top = len(community.ladder)
    if level < top:
        new_level, action = level + 1, "escalate"
        owed.extend(ctx.to_level(incident, new_level, "escalate"))
        for earlier in range(1, new_level):
            owed.extend(ctx.to_level(incident, earlier, "remind"))
        if level == 0 and incident.rule in contact_rules:
            owed.extend(contacts(ctx, incident))
        # no deadline for this severity (info by default): the ladder stops at this level
        deadline = people.deadline_s(incident.community_id, new_level, incident.severity)
        new_next = now + timedelta(seconds=deadline) if deadline is not None else None
    else:
        new_level, action = level, "remind"
        owed.extend(ctx.to_level(incident, top, "remind"))
        every = people.remind_every_s(incident.community_id, incident.severity)
        new_next = now + timedelta(seconds=every) if every is not None else None
    _set(conn, incident, new_level, new_next)
    audit(
        conn,
        incident,
        at=now,
        actor=SYSTEM,
        actor_role=SYSTEM,
        action=action,
        to_state=incident.state,
        detail={
            "level": new_level,
            "channels": sorted({o.channel for o in owed}),
            "next_at": new_next.isoformat() if new_next else None,
        },
    )
    enqueue(conn, incident.incident_id, owed, at=now)
    return Step(incident.incident_id, action, new_level, len(owed))


def contacts(ctx: Context, incident: IncidentRow, reason: Reason | None = None) -> list[Owed]:
    """The resident's emergency contacts and the community's doctors: told of the incident
    (`reason` None: ``family`` and ``doctor``), or of what `reason` says (a cancelled call)."""
    out: list[Owed] = []
    if incident.resident_id:
        family = ctx.message(incident, reason or "family")
        for contact in ctx.people.contacts.get(incident.resident_id, ()):
            who = {"name": contact.name, "relation": contact.relation}
            if contact.mobile:
                who["mobile"] = contact.mobile
            if contact.email:
                who["email"] = contact.email
            out.append(Owed(contact.channel, family, (who,)))
    community = ctx.people.communities[incident.community_id]
    out.extend(ctx.to_staff(incident, community.doctors, reason or "doctor"))
    return out


def _set(conn: psycopg.Connection[Any], incident: IncidentRow, level: int, next_at: datetime | None) -> None:
    conn.execute(
        "UPDATE incidents SET escalation_level = %s, next_escalation_at = %s, version = version + 1"
        " WHERE incident_id = %s",
        (level, next_at, incident.incident_id),
    )


def auto_close_due(
    conn: psycopg.Connection[Any], ctx: Context, *, now: datetime, limit: int = 500
) -> list[int]:
    """Close cleared, non-latched incidents nobody accepted after their quiet time; their ids."""
    closed: list[int] = []
    shortest = min(
        [ctx.people.defaults.auto_close_quiet_s]
        + [c.auto_close_quiet_s for c in ctx.people.communities.values() if c.auto_close_quiet_s is not None]
    )
    with conn.transaction():
        with conn.cursor(row_factory=class_row(IncidentRow)) as cur:
            candidates = cur.execute(
                SELECT_INCIDENT + " WHERE i.state = 'detected' AND NOT i.latched AND i.cleared_at IS NOT NULL"
                " AND i.cleared_at <= %s ORDER BY i.cleared_at LIMIT %s FOR UPDATE OF i SKIP LOCKED",
                (now - timedelta(seconds=shortest), limit),
            ).fetchall()
        for incident in candidates:
            assert incident.cleared_at is not None  # noqa: S101 - selected so
            quiet = ctx.people.auto_close_quiet_s(incident.community_id)
            if incident.cleared_at > now - timedelta(seconds=quiet):
                continue
            conn.execute(
                "UPDATE incidents SET state = 'closed', closed_at = %s, next_escalation_at = NULL,"
                " version = version + 1 WHERE incident_id = %s",
                (now, incident.incident_id),
            )
            audit(
                conn,
                incident,
                at=now,
                actor=SYSTEM,
                actor_role=SYSTEM,
                action="auto_close",
                to_state="closed",
                note=f"cleared at {incident.cleared_at:%Y-%m-%d %H:%M:%S%z}, quiet {quiet:g} s, not accepted",
            )
            closed.append(incident.incident_id)
    return closed


def next_due(conn: psycopg.Connection[Any]) -> datetime | None:
    """When the next step is due (None: nothing waits)."""
    row = conn.execute(
        "SELECT min(next_escalation_at) FROM incidents"
        " WHERE state = 'detected' AND (latched OR cleared_at IS NULL)"
    ).fetchone()
    return row[0] if row else None

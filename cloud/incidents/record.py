"""An incident as the workflow reads it, and the two rows every change writes beside it: the
audit trail entry and the notifications it owes (the outbox).

Everything here runs inside the caller's transaction: the change, its audit entry and its
notifications commit together or not at all (so a notification is owed exactly when the change
happened).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec
import psycopg
from psycopg.rows import class_row
from psycopg.types.json import Jsonb

from cloud.incidents.people import People, Staff
from cloud.notify.message import Message, Reason

#: Notified (after commit) for every change of an incident's state or ladder level (JSON:
#: incident_id, state, action); the console's live feed and the escalator listen.
CHANGE_CHANNEL: Final = "linli_incident_change"
#: Notified (after commit) when notifications were added to the outbox; the sender listens.
OUTBOX_CHANNEL: Final = "linli_outbox"


@dataclass(slots=True)
class IncidentRow:
    incident_id: int
    state: str
    rule: str
    severity: str
    latched: bool
    community_id: str
    device_id: str | None
    resident_id: str | None
    title_zh: str
    title_en: str
    started_at: datetime
    created_at: datetime
    cleared_at: datetime | None
    handler: str | None
    escalation_level: int
    next_escalation_at: datetime | None
    accepted_at: datetime | None
    handled_at: datetime | None
    closed_at: datetime | None
    version: int
    building: str | None
    unit: str | None
    room: str | None


SELECT_INCIDENT: Final = """
SELECT i.incident_id, i.state, i.rule, i.severity, i.latched, i.community_id, i.device_id,
    i.resident_id, i.title_zh, i.title_en, i.started_at, i.created_at, i.cleared_at, i.handler,
    i.escalation_level, i.next_escalation_at, i.accepted_at, i.handled_at, i.closed_at, i.version,
    d.building, d.unit, d.room
FROM incidents i LEFT JOIN devices d ON d.device_id = i.device_id
"""


def lock_incident(conn: psycopg.Connection[Any], incident_id: int) -> IncidentRow | None:
    """The incident, locked for this transaction (None: no such incident)."""
    with conn.cursor(row_factory=class_row(IncidentRow)) as cur:
        return cur.execute(
            SELECT_INCIDENT + " WHERE i.incident_id = %s FOR UPDATE OF i", (incident_id,)
        ).fetchone()


def audit(
    conn: psycopg.Connection[Any],
    incident: IncidentRow,
    *,
    at: datetime,
    actor: str,
    actor_role: str,
    action: str,
    to_state: str,
    note: str = "",
    detail: dict[str, Any] | None = None,
) -> None:
    """Append the audit entry of a change (and tell listeners after commit)."""
    conn.execute(
        "INSERT INTO incident_audit (incident_id, at, actor, actor_role, action, from_state, to_state,"
        " note, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (
            incident.incident_id,
            at,
            actor,
            actor_role,
            action,
            incident.state,
            to_state,
            note,
            Jsonb(detail or {}),
        ),
    )
    conn.execute(
        "SELECT pg_notify(%s, %s)",
        (
            CHANGE_CHANNEL,
            msgspec.json.encode(
                {"incident_id": incident.incident_id, "state": to_state, "action": action}
            ).decode(),
        ),
    )


@dataclass(frozen=True, slots=True)
class Owed:
    """One notification owed: through `channel`, to `recipients`, saying `message`."""

    channel: str
    message: Message
    recipients: tuple[dict[str, str], ...] = ()


def recipient(member: Staff) -> dict[str, str]:
    out = {"staff_id": member.id, "name": member.name}
    if member.mobile:
        out["mobile"] = member.mobile
    if member.email:
        out["email"] = member.email
    return out


def enqueue(
    conn: psycopg.Connection[Any], incident_id: int | None, owed: Sequence[Owed], *, at: datetime
) -> int:
    """Add `owed` to the outbox (due at once) and wake the sender after commit."""
    if not owed:
        return 0
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO notify_outbox (incident_id, created_at, reason, channel, severity, recipients,"
            " message, next_attempt_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            [
                (
                    incident_id,
                    at,
                    o.message.reason,
                    o.channel,
                    o.message.severity,
                    Jsonb(list(o.recipients)),
                    Jsonb(msgspec.to_builtins(o.message)),
                    at,
                )
                for o in owed
            ],
        )
        # the payload names the channels, so the sender wakes only their workers
        cur.execute("SELECT pg_notify(%s, %s)", (OUTBOX_CHANNEL, ",".join(sorted({o.channel for o in owed}))))
    return len(owed)


@dataclass(frozen=True, slots=True)
class Context:
    """What messages need beyond the incident: names, the console's address, the time zone."""

    people: People
    console_url: str = ""
    timezone: str = "Asia/Shanghai"

    def message(
        self,
        incident: IncidentRow,
        reason: Reason,
        *,
        level: int | None = None,
        actor: str | None = None,
    ) -> Message:
        community = self.people.communities.get(incident.community_id)
        level_name = None
        if level is not None and community is not None and level <= len(community.ladder):
            level_name = community.ladder[level - 1].name
        return Message(
            reason=reason,
            severity=incident.severity,
            title_zh=incident.title_zh,
            title_en=incident.title_en,
            incident_id=incident.incident_id,
            community_id=incident.community_id,
            community_name=community.name if community is not None else "",
            building=incident.building,
            unit=incident.unit,
            room=incident.room,
            device_id=incident.device_id,
            resident_id=incident.resident_id,
            time=incident.started_at.astimezone(ZoneInfo(self.timezone)).isoformat(timespec="seconds"),
            level=level,
            level_name=level_name,
            actor=actor,
            link=f"{self.console_url.rstrip('/')}/incidents/{incident.incident_id}"
            if self.console_url
            else "",
        )

    def to_level(
        self, incident: IncidentRow, level: int, reason: Reason, *, actor: str | None = None
    ) -> list[Owed]:
        """One notification per channel of ladder `level`, mentioning its staff."""
        community = self.people.communities.get(incident.community_id)
        if community is None or not 1 <= level <= len(community.ladder):
            return []
        rung = community.ladder[level - 1]
        staff = tuple(recipient(m) for sid in rung.staff if (m := self.people.member(sid)) is not None)
        message = self.message(incident, reason, level=level, actor=actor)
        return [Owed(channel, message, staff) for channel in rung.channels]

    def to_staff(
        self, incident: IncidentRow, staff_ids: Iterable[str], reason: Reason, **kw: Any
    ) -> list[Owed]:
        """Notifications to named staff, through the channels of the ladder levels they are on."""
        community = self.people.communities.get(incident.community_id)
        out: list[Owed] = []
        for sid in staff_ids:
            member = self.people.member(sid)
            if member is None or community is None:
                continue
            if member.channel:
                channels = [member.channel]
            else:
                channels = [c for rung in community.ladder if sid in rung.staff for c in rung.channels]
            if not channels:  # nobody's own channel, on no level: the first level's group, mentioned
                channels = list(community.ladder[0].channels)
            message = self.message(incident, reason, **kw)
            out.extend(Owed(c, message, (recipient(member),)) for c in dict.fromkeys(channels))
        return out

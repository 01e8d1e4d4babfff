"""``/api/v1/incidents``: the incidents of the caller's communities, one incident with its audit
trail and notifications, and the workflow's transitions. A transition calls
`cloud.incidents.transitions.apply`, the one implementation of the rules: the state, the role,
the community and what the action needs are checked there, and a refusal is a 409 naming the
state and the actions it allows."""

from __future__ import annotations

import functools
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.api import pages
from cloud.api.access import Disclosure, Principal, community_clause
from cloud.api.deps import Actor, Address, Db, IncidentReader, State, not_found
from cloud.api.problems import Instant
from cloud.incidents.transitions import apply
from cloud.incidents.workflow import Action, actions_for, allowed_from
from cloud.incidents.workflow import State as IncidentState

router = APIRouter(tags=["incidents"])

Severity = Annotated[str, Field(pattern="^(critical|major|minor|info)$")]

ITEM_COLUMNS = (
    "i.incident_id, i.rule, i.severity, i.state, i.latched, i.community_id, i.gateway_id, i.device_id,"
    " i.resident_id, d.building, d.unit, d.room, i.title_zh, i.title_en, i.started_at, i.detected_at,"
    " i.cleared_at, i.closed_at, i.handler, i.escalation_level, i.next_escalation_at, i.occurrences,"
    " i.last_occurrence_at, i.version"
)
_DETAIL = (
    f"{ITEM_COLUMNS}, i.subject, i.subject_kind, i.detail_zh, i.detail_en, i.evidence, i.accepted_at,"
    " i.accepted_by, i.dispatched_at, i.handled_at, i.verified_at, i.rejected_at, i.reject_reason,"
    " i.assessed_at, i.sla, i.rated_at, i.rating, i.rating_comment"
)
ITEM_FROM = " FROM incidents i LEFT JOIN devices d ON d.device_id = i.device_id"


class Place(BaseModel):
    building: str | None
    unit: str | None
    #: masked for roles without personal data
    room: str | None


class Incident(BaseModel):
    incident_id: int
    rule: str
    severity: str
    state: IncidentState
    latched: bool
    community_id: str
    gateway_id: str | None
    device_id: str | None
    #: masked for roles without personal data
    resident_id: str | None
    place: Place
    title_zh: str
    title_en: str
    started_at: datetime
    detected_at: datetime
    cleared_at: datetime | None
    closed_at: datetime | None
    handler: str | None
    escalation_level: int
    next_escalation_at: datetime | None
    occurrences: int
    last_occurrence_at: datetime
    #: bumped by every transition; send it back with a transition to refuse a stale one
    version: int
    #: the workflow actions that may start from this state
    allowed: list[Action]


class Incidents(BaseModel):
    items: list[Incident]
    #: pass as ``after`` for the next (older) page; null at the end
    next: str | None


class AuditEntry(BaseModel):
    audit_id: int
    at: datetime
    actor: str
    actor_role: str
    action: str
    from_state: str
    to_state: str
    note: str
    detail: dict[str, Any]


class Recipient(BaseModel):
    staff_id: str | None
    #: masked for roles without personal data, like the numbers and addresses below
    name: str | None
    mobile: str | None
    email: str | None


class Notification(BaseModel):
    notification_id: int
    created_at: datetime
    reason: str
    channel: str
    severity: str
    state: str
    attempts: int
    sent_at: datetime | None
    last_code: str | None
    last_message: str | None
    recipients: list[Recipient]


class Contact(BaseModel):
    name: str | None
    relation: str
    mobile: str | None
    email: str | None


class IncidentDetail(Incident):
    subject: str
    subject_kind: str
    detail_zh: str
    detail_en: str
    evidence: list[dict[str, Any]]
    accepted_at: datetime | None
    accepted_by: str | None
    dispatched_at: datetime | None
    handled_at: datetime | None
    verified_at: datetime | None
    rejected_at: datetime | None
    reject_reason: str | None
    assessed_at: datetime | None
    #: response and handling times computed at ``assess`` (docs/incidents.md)
    sla: dict[str, Any] | None
    rated_at: datetime | None
    rating: int | None
    rating_comment: str | None
    #: the resident's emergency contacts (masked for roles without personal data)
    contacts: list[Contact]
    #: every change, oldest first
    audit: list[AuditEntry]
    #: every notification owed for it and what became of it
    notifications: list[Notification]
    #: the actions the caller may make now (their roles, and whether they are the handler)
    may: list[Action]


class TransitionRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    action: Action
    #: what was done, or why (``handle``, ``reopen`` and ``reject`` need one)
    note: Annotated[str, Field(max_length=4000)] = ""
    #: the staff id to dispatch to (``dispatch``)
    handler: Annotated[str | None, Field(max_length=128)] = None
    #: satisfaction 1-5 and a comment (``rate``)
    score: Annotated[int | None, Field(ge=-(2**31), lt=2**31)] = None
    comment: Annotated[str | None, Field(max_length=4000)] = None
    #: the incident's version as the caller saw it: a 409 if it has changed since
    version: Annotated[int | None, Field(ge=0, lt=2**31)] = None


@functools.cache
def _allowed(state: str) -> list[str]:
    return list(allowed_from(state))


def columns(cur: Any) -> list[str]:
    return [c.name for c in cur.description or ()]


def incident_item(row: dict[str, Any], seen: Disclosure) -> dict[str, Any]:
    subject = str(row["incident_id"])
    return {
        "incident_id": row["incident_id"],
        "rule": row["rule"],
        "severity": row["severity"],
        "state": row["state"],
        "latched": row["latched"],
        "community_id": row["community_id"],
        "gateway_id": row["gateway_id"],
        "device_id": row["device_id"],
        "resident_id": seen.text(subject, "resident_id", row["resident_id"]),
        "place": {
            "building": row["building"],
            "unit": row["unit"],
            "room": seen.text(subject, "room", row["room"]),
        },
        "title_zh": row["title_zh"],
        "title_en": row["title_en"],
        "started_at": row["started_at"],
        "detected_at": row["detected_at"],
        "cleared_at": row["cleared_at"],
        "closed_at": row["closed_at"],
        "handler": row["handler"],
        "escalation_level": row["escalation_level"],
        "next_escalation_at": row["next_escalation_at"],
        "occurrences": row["occurrences"],
        "last_occurrence_at": row["last_occurrence_at"],
        "version": row["version"],
        "allowed": _allowed(row["state"]),
    }


@router.get("/incidents", response_model=Incidents)
def incidents(
    db: Db,
    principal: IncidentReader,
    address: Address,
    state: Annotated[list[IncidentState] | None, Query(max_length=9)] = None,
    severity: Annotated[list[Severity] | None, Query(max_length=4)] = None,
    community_id: Annotated[str | None, Query(max_length=128)] = None,
    device_id: Annotated[str | None, Query(max_length=128)] = None,
    rule: Annotated[str | None, Query(max_length=64)] = None,
    open: Annotated[bool | None, Query(description="true: not closed or rejected; false: done")] = None,
    since: Annotated[Instant | None, Query(description="detected at or after this time")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=400, description="the `next` of the previous page")] = None,
) -> Response:
    """The incidents of the caller's communities, newest first."""
    scope, params = community_clause(principal, "i.community_id")
    cursor: tuple[datetime | None, int | None] = (None, None)
    if after is not None:
        at, ident = pages.decode(after, 2)
        cursor = (pages.decode_time(at), pages.decode_int(ident))
    cur = db.cursor(binary=True).execute(
        f"SELECT {ITEM_COLUMNS}{ITEM_FROM} WHERE {scope}"
        " AND (%s::text[] IS NULL OR i.state = ANY(%s)) AND (%s::text[] IS NULL OR i.severity = ANY(%s))"
        " AND (%s::text IS NULL OR i.community_id = %s) AND (%s::text IS NULL OR i.device_id = %s)"
        " AND (%s::text IS NULL OR i.rule = %s) AND (%s::bool IS NULL OR (i.closed_at IS NULL) = %s)"
        " AND (%s::timestamptz IS NULL OR i.detected_at >= %s)"
        " AND (%s::timestamptz IS NULL OR (i.detected_at, i.incident_id) < (%s, %s))"
        " ORDER BY i.detected_at DESC, i.incident_id DESC LIMIT %s",
        [
            *params,
            *(state, state, severity, severity, community_id, community_id, device_id, device_id),
            *(rule, rule, open, open, since, since, cursor[0], *cursor, limit + 1),
        ],
    )
    names = columns(cur)
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    seen = Disclosure(principal)
    items = [incident_item(r, seen) for r in rows[:limit]]
    seen.flush(db, resource="incident", address=address)
    last = rows[limit - 1] if len(rows) > limit else None
    return pages.json_answer(
        {"items": items, "next": pages.encode(last["detected_at"], last["incident_id"]) if last else None}
    )


def _detail(db: Db, state: State, principal: Principal, incident_id: int, address: str) -> dict[str, Any]:
    cur = db.execute(f"SELECT {_DETAIL}{ITEM_FROM} WHERE i.incident_id = %s", (incident_id,))
    found = cur.fetchone()
    if found is None or not principal.sees(found[5]):
        raise not_found("incident", incident_id)
    row = dict(zip(columns(cur), found, strict=True))
    seen = Disclosure(principal)
    subject = str(incident_id)
    body = incident_item(row, seen)
    for name in (
        "subject", "subject_kind", "detail_zh", "detail_en", "accepted_at", "accepted_by", "dispatched_at",
        "handled_at", "verified_at", "rejected_at", "reject_reason", "assessed_at", "sla", "rated_at",
        "rating", "rating_comment",
    ):  # fmt: skip
        body[name] = row[name]
    body["evidence"] = (
        [e for e in row["evidence"] if isinstance(e, dict)] if isinstance(row["evidence"], list) else []
    )
    if body["subject_kind"] == "resident":
        body["subject"] = seen.text(subject, "resident_id", row["subject"])
    contacts = state.context.people.contacts.get(row["resident_id"] or "", ())
    body["contacts"] = [
        {
            "name": seen.text(subject, "contacts", c.name),
            "relation": c.relation,
            "mobile": seen.phone(subject, "contacts", c.mobile),
            "email": seen.text(subject, "contacts", c.email),
        }
        for c in contacts
    ]
    body["audit"] = [
        {
            "audit_id": a[0],
            "at": a[1],
            "actor": a[2],
            "actor_role": a[3],
            "action": a[4],
            "from_state": a[5],
            "to_state": a[6],
            "note": a[7],
            "detail": a[8] if isinstance(a[8], dict) else {},
        }
        for a in db.execute(
            "SELECT audit_id, at, actor, actor_role, action, from_state, to_state, note, detail"
            " FROM incident_audit WHERE incident_id = %s ORDER BY audit_id",
            (incident_id,),
        ).fetchall()
    ]
    notifications = []
    for n in db.execute(
        "SELECT notification_id, created_at, reason, channel, severity, state, attempts, sent_at, last_code,"
        " last_message, recipients FROM notify_outbox WHERE incident_id = %s ORDER BY notification_id",
        (incident_id,),
    ).fetchall():
        people = n[10] if isinstance(n[10], list) else []
        notifications.append(
            {
                "notification_id": n[0],
                "created_at": n[1],
                "reason": n[2],
                "channel": n[3],
                "severity": n[4],
                "state": n[5],
                "attempts": n[6],
                "sent_at": n[7],
                "last_code": n[8],
                "last_message": n[9],
                "recipients": [_recipient(p, subject, seen) for p in people if isinstance(p, dict)],
            }
        )
    body["notifications"] = notifications
    body["may"] = (
        list(actions_for(row["state"], principal.roles, actor=principal.id, handler=row["handler"]))
        if principal.kind == "staff" and principal.may("act")
        else []
    )
    seen.flush(db, resource="incident", address=address)
    return body


def _recipient(person: dict[str, Any], subject: str, seen: Disclosure) -> dict[str, Any]:
    def text(name: str) -> str | None:
        value = person.get(name)
        return value if isinstance(value, str) else None

    return {
        "staff_id": text("staff_id"),
        "name": seen.text(subject, "recipients", text("name")),
        "mobile": seen.phone(subject, "recipients", text("mobile")),
        "email": seen.text(subject, "recipients", text("email")),
    }


IncidentId = Annotated[int, Path(ge=1, lt=2**63)]


@router.get("/incidents/{incident_id}", response_model=IncidentDetail)
def incident(
    db: Db, state: State, principal: IncidentReader, address: Address, incident_id: IncidentId
) -> Response:
    """One incident with its evidence, audit trail and notifications."""
    return pages.json_answer(_detail(db, state, principal, incident_id, address))


@router.post(
    "/incidents/{incident_id}/transitions",
    response_model=IncidentDetail,
    responses={
        409: {
            "description": "the workflow refused the action (the state, the role, a missing note...)"
            " or the incident changed since `version`: nothing was changed",
        }
    },
)
def transition(
    db: Db,
    state: State,
    principal: Actor,
    address: Address,
    incident_id: IncidentId,
    request: TransitionRequest,
) -> Response:
    """Do a workflow action on the incident as the caller; the incident as it is after."""
    with db.transaction():
        row = db.execute(
            "SELECT community_id, version, state FROM incidents WHERE incident_id = %s FOR UPDATE",
            (incident_id,),
        ).fetchone()
        if row is None or not principal.sees(row[0]):
            raise not_found("incident", incident_id)
        if request.version is not None and request.version != row[1]:
            raise HTTPException(
                status_code=status.HTTP_409_CONFLICT,
                detail=f"incident {incident_id} changed since version {request.version}"
                f" (it is at version {row[1]}, {row[2]}): reload it and decide again",
            )
        apply(
            db,
            incident_id,
            request.action,
            actor=principal.id,
            ctx=state.context,
            note=request.note,
            handler=request.handler,
            score=request.score,
            comment=request.comment,
            clock=state.clock,
            profiles=state.profiles,
        )
    return pages.json_answer(_detail(db, state, principal, incident_id, address))

"""The one way to change an incident's state: a function per workflow action.

Each call is one transaction: the incident is locked, the action checked against the workflow
(`cloud.incidents.workflow`: the current state, the actor's role and community, what the action
requires), the row updated, the audit entry appended and the notifications it causes added to
the outbox, all together. A refused action raises `TransitionRefused` naming the current state
and the actions it allows, and changes nothing. The API and the console call these.

    incident = accept(conn, 42, actor="w-zhang", ctx=ctx)
    dispatch(conn, 42, actor="k-li", handler="w-zhang", note="上门查看", ctx=ctx)
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from cloud.commands import outbox
from cloud.errors import IncidentNotFound, StoreUnavailable, TransitionRefused
from cloud.incidents.people import Staff
from cloud.incidents.record import Context, IncidentRow, Owed, audit, enqueue, lock_incident
from cloud.incidents.workflow import STAMPS, SUPERVISORS, TRANSITIONS, Action, allowed_from
from device_profiles.model import Profile


def _utcnow() -> datetime:
    return datetime.now(UTC)


def apply(
    conn: psycopg.Connection[Any],
    incident_id: int,
    action: Action,
    *,
    actor: str,
    ctx: Context,
    note: str = "",
    handler: str | None = None,
    score: int | None = None,
    comment: str | None = None,
    clock: Callable[[], datetime] = _utcnow,
    profiles: Mapping[str, Profile] | None = None,
) -> IncidentRow:
    """Do `action` on the incident as staff member `actor`; returns the incident as it is after.

    Accepting an SOS queues ``acknowledge`` to the button, in the same transaction, where its
    model can carry it (`profiles`: the device profiles by id, default the shipped ones); the audit
    entry says which command, or why none went.

    Raises `IncidentNotFound`, `TransitionRefused` (nothing changed), or `StoreUnavailable`.
    """
    try:
        with conn.transaction():
            incident = lock_incident(conn, incident_id)
            if incident is None:
                raise IncidentNotFound(incident_id)
            now = clock()
            member, role = _check(
                incident, action, actor, ctx, note=note, handler=handler, score=score, comment=comment
            )
            owed = _effects(
                conn,
                incident,
                action,
                member,
                role,
                ctx,
                now,
                note=note,
                handler=handler,
                score=score,
                comment=comment,
                profiles=profiles,
            )
            enqueue(conn, incident.incident_id, owed, at=now)
            after = lock_incident(conn, incident_id)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while changing incident {incident_id}: {exc}") from exc
    assert after is not None  # noqa: S101 - locked in this transaction
    return after


def _refuse(incident: IncidentRow, action: str, reason: str) -> TransitionRefused:
    return TransitionRefused(
        incident_id=incident.incident_id,
        action=action,
        state=incident.state,
        allowed=allowed_from(incident.state),
        reason=reason,
    )


def _check(
    incident: IncidentRow,
    action: Action,
    actor: str,
    ctx: Context,
    *,
    note: str,
    handler: str | None,
    score: int | None,
    comment: str | None,
) -> tuple[Staff, str]:
    t = TRANSITIONS.get(action)
    if t is None:
        raise _refuse(incident, action, f"no such action (the workflow has {', '.join(TRANSITIONS)})")
    if incident.state not in t.sources:
        allowed = allowed_from(incident.state)
        now_ok = ", ".join(allowed) if allowed else "nothing (it is final)"
        raise _refuse(incident, action, f"the incident is {incident.state}; allowed now: {now_ok}")
    member = ctx.people.member(actor)
    if member is None:
        raise _refuse(incident, action, f"{actor!r} is not a staff member")
    if not member.serves(incident.community_id):
        raise _refuse(incident, action, f"{actor!r} does not serve community {incident.community_id}")
    roles = [r for r in member.roles if r in t.roles]
    if not roles:
        raise _refuse(
            incident,
            action,
            f"{action} needs one of the roles {', '.join(sorted(t.roles))};"
            f" {actor!r} has {', '.join(member.roles)}",
        )
    if t.handler_or_supervisor and actor != incident.handler and not SUPERVISORS.intersection(member.roles):
        raise _refuse(incident, action, f"only the handler ({incident.handler}) or a supervisor may {action}")
    if t.note_required and not note.strip():
        raise _refuse(incident, action, f"{action} needs a note")
    if t.handler_required:
        target = ctx.people.member(handler) if handler else None
        if target is None:
            raise _refuse(incident, action, f"{action} needs a handler: a staff id ({handler!r} is not one)")
        if not target.serves(incident.community_id):
            raise _refuse(incident, action, f"{handler!r} does not serve community {incident.community_id}")
    if t.rating_required:
        if score is None or not 1 <= score <= 5:
            raise _refuse(incident, action, f"{action} needs a satisfaction score from 1 to 5 (got {score})")
        if not (comment or "").strip():
            raise _refuse(incident, action, f"{action} needs a comment")
    return member, roles[0]


def _effects(
    conn: psycopg.Connection[Any],
    incident: IncidentRow,
    action: Action,
    member: Staff,
    role: str,
    ctx: Context,
    now: datetime,
    *,
    note: str,
    handler: str | None,
    score: int | None,
    comment: str | None,
    profiles: Mapping[str, Profile] | None,
) -> list[Owed]:
    t = TRANSITIONS[action]
    sets: dict[str, Any] = {"state": t.target, STAMPS[t.target]: now}
    detail: dict[str, Any] = {}
    owed: list[Owed] = []
    if action == "accept":
        sets.update(accepted_by=member.id, next_escalation_at=None)
        # every level already told learns that someone has it, but the accepter's own
        community = ctx.people.communities.get(incident.community_id)
        for level in range(1, incident.escalation_level + 1):
            if community is not None and member.id in community.ladder[level - 1].staff:
                continue
            owed.extend(ctx.to_level(incident, level, "accepted", actor=member.name))
        command = acknowledge_on_button(conn, incident, member.id, now, profiles)
        if command is not None:
            detail["command"] = command
    elif action == "dispatch":
        sets["handler"] = handler
        detail["handler"] = handler
        assert handler is not None  # noqa: S101 - checked
        target = ctx.people.member(handler)
        owed.extend(ctx.to_staff(incident, [handler], "dispatch", actor=target.name if target else handler))
    elif action == "reject":
        sets.update(reject_reason=note, closed_at=now, next_escalation_at=None)
    elif action == "assess":
        sla = sla_figures(incident, ctx, now)
        sets["sla"] = Jsonb(sla)
        detail["sla"] = sla
    elif action == "rate":
        sets.update(rating=score, rating_comment=comment)
        detail.update(score=score, comment=comment)
    if action == "reopen":
        sets.update(handled_at=None, verified_at=None)
    columns = ", ".join(f"{name} = %({name})s" for name in sets)
    conn.execute(
        f"UPDATE incidents SET {columns}, version = version + 1 WHERE incident_id = %(incident_id)s",  # noqa: S608 - names from this module
        {**sets, "incident_id": incident.incident_id},
    )
    audit(
        conn,
        incident,
        at=now,
        actor=member.id,
        actor_role=role,
        action=action,
        to_state=t.target,
        note=note,
        detail=detail,
    )
    return owed


def sla_figures(incident: IncidentRow, ctx: Context, now: datetime) -> dict[str, Any]:
    """Times from detection (the incident's commit) to accept, handle and close, in seconds, and
    whether each was over the community's target for the severity (None: not reached)."""
    start = incident.created_at

    def since(at: datetime | None) -> float | None:
        return None if at is None else round((at - start).total_seconds(), 3)

    figures: dict[str, Any] = {
        "to_accept_s": since(incident.accepted_at),
        "to_handle_s": since(incident.handled_at),
        "to_close_s": since(incident.closed_at),
        "escalation_level": incident.escalation_level,
    }
    targets = ctx.people.targets(incident.community_id, incident.severity)
    for name, target in (
        ("accept", targets.accept_s if targets else None),
        ("handle", targets.handle_s if targets else None),
        ("close", targets.close_s if targets else None),
    ):
        took = figures[f"to_{name}_s"]
        figures[f"{name}_target_s"] = target
        figures[f"{name}_overdue"] = None if took is None or target is None else took > target
    figures["overdue"] = any(figures[f"{n}_overdue"] for n in ("accept", "handle", "close"))
    return figures


#: Commands an accepted SOS sends are named by the incident: one per incident, whatever retries.
ACK_NAMESPACE: Final = uuid.UUID("5e0b3c1e-8d1f-4d4a-9a57-6c1f2b0a7c11")
#: An acknowledgement later than this tells the resident nothing useful.
ACK_TTL_S: Final = 600


def acknowledge_on_button(
    conn: psycopg.Connection[Any],
    incident: IncidentRow,
    actor: str,
    now: datetime,
    profiles: Mapping[str, Profile] | None,
) -> dict[str, str] | None:
    """An accepted incident of an SOS button: queue ``acknowledge`` to it (LED or buzzer: help is
    coming). What the audit entry says: the command and its state, or why none went (the model
    cannot carry it); None for an incident that is not a button's."""
    if incident.device_id is None:
        return None
    row = conn.execute(
        "SELECT device_type FROM devices WHERE device_id = %s", (incident.device_id,)
    ).fetchone()
    if row is None or row[0] != "sos_button":
        return None
    from device_profiles import ProfileSet

    try:
        command, _ = outbox.request(
            conn,
            actor=actor,
            device_id=incident.device_id,
            name="acknowledge",
            params={},
            ttl_s=ACK_TTL_S,
            profiles=profiles if profiles is not None else ProfileSet.shipped().profiles,
            now=now,
            command_id=uuid.uuid5(ACK_NAMESPACE, f"incident:{incident.incident_id}"),
            incident_id=incident.incident_id,
        )
    except outbox.UnknownDevice:
        return None
    except outbox.CommandRefused as exc:
        return {"name": "acknowledge", "state": "not_sent", "reason": str(exc)}
    return {"name": "acknowledge", "command_id": str(command["command_id"]), "state": str(command["state"])}


def _one(action: Action) -> Callable[..., IncidentRow]:
    def run(conn: psycopg.Connection[Any], incident_id: int, **kw: Any) -> IncidentRow:
        return apply(conn, incident_id, action, **kw)

    run.__name__ = action
    run.__doc__ = f"`apply` with action {action!r}."
    return run


accept = _one("accept")
dispatch = _one("dispatch")
handle = _one("handle")
verify = _one("verify")
reopen = _one("reopen")
close = _one("close")
assess = _one("assess")
rate = _one("rate")
reject = _one("reject")

"""Commands to devices: queue one (``POST /devices/{id}/commands``), follow it (``GET``).

Who may send is configuration (``[api] command_roles``), and only to devices of the caller's
communities; the rest is the outbox's (`cloud.commands.outbox`): the standard and the device's
profile check the command, the command id makes a retried request harmless, every state change is
in the command's audit trail.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, HTTPException, Path, Query, status
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field

from cloud.api import pages
from cloud.api.access import Principal
from cloud.api.deps import CurrentPrincipal, Db, DeviceReader, State, not_found
from cloud.commands import outbox

router = APIRouter(tags=["commands"])

Key = Annotated[str, Field(min_length=1, max_length=64)]
ParamValue = bool | Annotated[int, Field(ge=-(2**31), lt=2**31)] | Annotated[str, Field(max_length=64)]
DeviceId = Annotated[str, Path(min_length=1, max_length=128)]
CommunityId = Annotated[str, Path(min_length=1, max_length=128)]


class CommandRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    #: the canonical command (docs/commands.md): switch, dim, set_schedule, acknowledge, configure
    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
    #: its parameters: ``{"on": true}``, ``{"level_pct": 40}``, ``{"on_at": "18:30", ...}``
    params: Annotated[dict[Key, ParamValue], Field(max_length=16)] = Field(default_factory=dict)
    #: seconds the command may wait for an offline gateway or device before it expires
    ttl_s: Annotated[int, Field(ge=60, le=7 * 86_400)] = 3600
    #: the idempotency key: the same id again answers the same command (default: a new one)
    command_id: uuid.UUID | None = None


class AuditEntry(BaseModel):
    at: datetime
    actor: str
    state: str
    detail: str


class Command(BaseModel):
    command_id: uuid.UUID
    device_id: str
    community_id: str
    gateway_id: str
    name: str
    params: dict[str, ParamValue]
    confirm: Literal["report", "network", "none"]
    state: Literal["queued", "at_gateway", "sent_to_device", "confirmed", "failed", "expired"]
    reason: str | None
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    updated_at: datetime
    #: the incident the command answers (an SOS button's acknowledge), if any
    incident_id: int | None = None
    audit: list[AuditEntry] = Field(default_factory=list)


class Commands(BaseModel):
    items: list[Command]


async def commander(principal: CurrentPrincipal, state: State) -> Principal:
    """The caller, whose roles must include one of ``[api] command_roles`` (403 if not)."""
    allowed = state.settings.api.command_roles
    if not set(principal.roles) & set(allowed):
        raise HTTPException(
            status_code=status.HTTP_403_FORBIDDEN,
            detail=f"the role {', '.join(principal.roles)} may not send commands"
            f" (allowed: {', '.join(allowed)})",
        )
    return principal


Commander = Annotated[Principal, Depends(commander)]


def _visible(principal: Principal) -> frozenset[str] | None:
    return None if principal.all_communities else principal.communities


@router.post(
    "/devices/{device_id}/commands",
    response_model=Command,
    status_code=status.HTTP_201_CREATED,
    responses={
        200: {
            "description": "the same request again (same command_id): the command as it is",
            "model": Command,
        },
        409: {"description": "the command_id already names another command: nothing was changed"},
    },
)
def send(
    db: Db, state: State, principal: Commander, device_id: DeviceId, request: CommandRequest
) -> Response:
    """Queue a command to the device; 422 says why the standard or the device's model refuses it."""
    now = state.clock()
    try:
        with db.transaction():
            row, created = outbox.request(
                db,
                actor=principal.id,
                device_id=device_id,
                name=request.name,
                params=request.params,
                ttl_s=request.ttl_s,
                profiles=state.profiles,
                now=now,
                command_id=request.command_id,
                visible=_visible(principal),
            )
            row["audit"] = outbox.audit(db, row["command_id"])
    except outbox.UnknownDevice:
        raise not_found("device", device_id) from None
    except outbox.CommandRefused as exc:
        raise HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=str(exc)) from None
    except outbox.CommandConflict as exc:
        raise HTTPException(status_code=status.HTTP_409_CONFLICT, detail=str(exc)) from None
    answer = pages.json_answer(row)
    answer.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    return answer


def _visible_device(db: Db, principal: Principal, device_id: str) -> None:
    row = db.execute("SELECT community_id FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    if row is None or not principal.sees(row[0]):
        raise not_found("device", device_id)


@router.get("/devices/{device_id}/commands", response_model=Commands)
def device_commands(
    db: Db,
    state: State,
    principal: DeviceReader,
    device_id: DeviceId,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> Response:
    """The device's commands, newest first, with their states."""
    _visible_device(db, principal, device_id)
    with db.transaction():
        outbox.expire_due(db, now=state.clock())
    return pages.json_answer({"items": outbox.for_device(db, device_id, limit=limit)})


@router.get("/commands/{command_id}", response_model=Command)
def command(db: Db, state: State, principal: DeviceReader, command_id: uuid.UUID) -> Response:
    """One command with its audit trail (who asked, each state it went through, and why)."""
    with db.transaction():
        outbox.expire_due(db, now=state.clock())
    row: dict[str, Any] | None = outbox.get(db, command_id)
    if row is None or not principal.sees(row["community_id"]):
        raise not_found("command", command_id)
    row["audit"] = outbox.audit(db, command_id)
    return pages.json_answer(row)


class Transition(BaseModel):
    #: when the lamps go to this state
    at: datetime
    on: bool
    #: the dim level then (0 when off)
    level_pct: int


class Schedule(BaseModel):
    """The community's streetlight schedule (``[commands] schedules``): tonight's transitions."""

    community_id: str
    timezone: str
    #: the night in force now, or the next one, in time order
    transitions: list[Transition]


@router.get("/communities/{community_id}/schedule", response_model=Schedule)
def schedule(db: Db, state: State, principal: DeviceReader, community_id: CommunityId) -> Response:
    """Tonight's streetlight schedule of the community (404: none, or no lamps with a position)."""
    from zoneinfo import ZoneInfo

    from cloud.commands.schedules import tonight

    plan = state.schedules.plan(community_id) if state.schedules is not None else None
    if plan is None or not principal.sees(community_id):
        raise not_found("schedule", community_id)
    row = db.execute(
        "SELECT avg(lat), avg(lon) FROM devices WHERE community_id = %s AND device_type = 'streetlight'"
        " AND lat IS NOT NULL AND lon IS NOT NULL",
        (community_id,),
    ).fetchone()
    if row is None or row[0] is None:
        raise not_found("schedule", community_id)
    assert state.schedules is not None  # noqa: S101 - a plan came from it
    tz = ZoneInfo(state.schedules.timezone)
    transitions = tonight(plan, state.clock(), lat=float(row[0]), lon=float(row[1]), tz=tz)
    return pages.json_answer(
        {
            "community_id": community_id,
            "timezone": state.schedules.timezone,
            "transitions": [{"at": t.at, "on": t.on, "level_pct": t.level_pct} for t in transitions],
        }
    )

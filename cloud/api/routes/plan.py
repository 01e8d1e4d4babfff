"""``/api/v1/communities/{id}/plan`` and ``/staff``: what the console's site plan and its
dispatch list need. The plan is every device of one community with where it is, its status and
its open incidents, in columns (one array per field): ten thousand devices are one small answer
and one index scan."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from fastapi.responses import Response
from pydantic import BaseModel

from cloud.api import pages
from cloud.api.deps import Db, DeviceReader, IncidentReader, State, not_found

router = APIRouter(tags=["communities"])

CommunityId = Annotated[str, Path(min_length=1, max_length=128)]

#: severities from the worst: ``worst`` in the plan is an index into it
SEVERITIES = ("critical", "major", "minor", "info")


class PlanColumns(BaseModel):
    """One entry per device, in the same order in every array."""

    device_id: list[str]
    device_type: list[str]
    building: list[str | None]
    unit: list[str | None]
    lat: list[float | None]
    lon: list[float | None]
    status: list[str]
    #: incidents of the device not yet closed
    open_incidents: list[int]
    #: the worst severity among them (an index into ``severities``), null when none is open
    worst: list[int | None]


class Plan(BaseModel):
    community_id: str
    severities: list[str]
    devices: PlanColumns


class StaffMember(BaseModel):
    staff_id: str
    name: str
    roles: list[str]


class Staff(BaseModel):
    items: list[StaffMember]


@router.get("/communities/{community_id}/plan", response_model=Plan)
def plan(db: Db, principal: DeviceReader, community_id: CommunityId) -> Response:
    """Every device of a community for its site plan: place, status and open incidents. The
    building and unit are not personal data; rooms and residents are left out."""
    if not principal.sees(community_id):
        raise not_found("community", community_id)
    rows = db.execute(
        "SELECT d.device_id, d.device_type, d.building, d.unit, d.lat, d.lon, d.status,"
        " coalesce(i.n, 0)::int, i.worst FROM devices d LEFT JOIN ("
        "   SELECT device_id, count(*) AS n, min(array_position(%s::text[], severity)) - 1 AS worst"
        "   FROM incidents WHERE community_id = %s AND closed_at IS NULL GROUP BY 1) i USING (device_id)"
        " WHERE d.community_id = %s ORDER BY d.building NULLS LAST, d.unit NULLS LAST, d.device_id",
        (list(SEVERITIES), community_id, community_id),
    ).fetchall()
    names = PlanColumns.model_fields
    columns: dict[str, list[object]] = {name: [r[i] for r in rows] for i, name in enumerate(names)}
    return pages.json_answer(
        {"community_id": community_id, "severities": list(SEVERITIES), "devices": columns}
    )


@router.get("/communities/{community_id}/staff", response_model=Staff)
def staff(state: State, principal: IncidentReader, community_id: CommunityId) -> Response:
    """The staff who serve a community (whom an incident may be dispatched to), by id."""
    if not principal.sees(community_id):
        raise not_found("community", community_id)
    people = state.context.people
    if community_id not in people.communities:
        raise not_found("community", community_id)
    items = [
        {"staff_id": s.id, "name": s.name, "roles": list(s.roles)}
        for s in sorted(people.staff, key=lambda s: s.id)
        if s.serves(community_id)
    ]
    return pages.json_answer({"items": items})

"""``/api/v1/devices/{id}/events`` and ``/api/v1/communities/{id}/events``: the events devices
reported (an SOS press, a door opened, a device gone offline), newest first, filtered and paged."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel, StringConstraints

from cloud.api import pages
from cloud.api.access import Principal
from cloud.api.deps import Db, DeviceReader, State, not_found
from cloud.api.problems import Instant

router = APIRouter(tags=["events"])

DEFAULT_SPAN = timedelta(days=7)


class Event(BaseModel):
    time: datetime
    device_id: str
    event: str
    attributes: dict[str, Any]


class Events(BaseModel):
    items: list[Event]
    start: datetime
    end: datetime
    #: pass as ``after`` for the next (older) page; null at the end
    next: str | None


EventNames = Annotated[
    list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] | None,
    Query(max_length=20, description="only these events (sos_pressed, door_opened, ...)"),
]
Start = Annotated[Instant | None, Query(description="default: 7 days before end")]
End = Annotated[Instant | None, Query(description="default: now (excluded)")]
Limit = Annotated[int, Query(ge=1, le=1000)]
After = Annotated[str | None, Query(max_length=600, description="the `next` of the previous page")]


def _page(
    db: Db,
    *,
    where: str,
    params: list[Any],
    event: list[str] | None,
    start: datetime,
    end: datetime,
    limit: int,
    after: str | None,
) -> Response:
    if after is not None:
        at, device_id, name = pages.decode(after, 3)
        cursor: tuple[datetime | None, str | None, str | None] = (pages.decode_time(at), device_id, name)
    else:
        cursor = (None, None, None)
    rows = db.execute(
        f"SELECT e.time, e.device_id, e.event, e.attributes FROM events e WHERE {where}"  # noqa: S608 - fixed
        " AND e.time >= %s AND e.time < %s AND (%s::text[] IS NULL OR e.event = ANY(%s))"
        " AND (%s::timestamptz IS NULL OR (e.time, e.device_id, e.event) < (%s, %s, %s))"
        " ORDER BY e.time DESC, e.device_id DESC, e.event DESC LIMIT %s",
        [*params, start, end, event, event, cursor[0], *cursor, limit + 1],
    ).fetchall()
    items = [
        {"time": t, "device_id": d, "event": e, "attributes": a if isinstance(a, dict) else {}}
        for t, d, e, a in rows[:limit]
    ]
    more = len(rows) > limit
    last = items[-1] if more else None
    return pages.json_answer(
        {
            "items": items,
            "start": start,
            "end": end,
            "next": pages.encode(last["time"], last["device_id"], last["event"]) if last else None,
        }
    )


def _span(state: State, start: datetime | None, end: datetime | None) -> tuple[datetime, datetime]:
    end = end or state.clock()
    return start or end - DEFAULT_SPAN, end


@router.get("/devices/{device_id}/events", response_model=Events)
def device_events(
    db: Db,
    state: State,
    principal: DeviceReader,
    device_id: Annotated[str, Path(min_length=1, max_length=128)],
    event: EventNames = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 100,
    after: After = None,
) -> Response:
    """A device's events, newest first."""
    row = db.execute("SELECT community_id FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    if row is None or not principal.sees(row[0]):
        raise not_found("device", device_id)
    first, last = _span(state, start, end)
    return _page(
        db,
        where="e.device_id = %s",
        params=[device_id],
        event=event,
        start=first,
        end=last,
        limit=limit,
        after=after,
    )


def community_exists(db: Db, state: State, principal: Principal, community_id: str) -> bool:
    if not principal.sees(community_id):
        return False
    if community_id in state.context.people.communities:
        return True
    row = db.execute(
        "SELECT EXISTS (SELECT 1 FROM devices WHERE community_id = %s)"
        " OR EXISTS (SELECT 1 FROM gateways WHERE community_id = %s)",
        (community_id, community_id),
    ).fetchone()
    return bool(row and row[0])


@router.get("/communities/{community_id}/events", response_model=Events)
def community_events(
    db: Db,
    state: State,
    principal: DeviceReader,
    community_id: Annotated[str, Path(min_length=1, max_length=128)],
    event: EventNames = None,
    device_type: Annotated[str | None, Query(max_length=64)] = None,
    start: Start = None,
    end: End = None,
    limit: Limit = 100,
    after: After = None,
) -> Response:
    """The events of a community's devices, newest first."""
    if not community_exists(db, state, principal, community_id):
        raise not_found("community", community_id)
    first, last = _span(state, start, end)
    return _page(
        db,
        where="e.device_id IN (SELECT device_id FROM devices WHERE community_id = %s"
        " AND (%s::text IS NULL OR device_type = %s))",
        params=[community_id, device_type, device_type],
        event=event,
        start=first,
        end=last,
        limit=limit,
        after=after,
    )

"""``/api/v1/communities`` and ``/api/v1/gateways``: the communities the caller serves with their
device and incident counts, and their gateways with the state, last status and buffer depth
each gateway reported."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from cloud.api import pages
from cloud.api.access import community_clause
from cloud.api.deps import Db, DeviceReader, State, not_found

router = APIRouter(tags=["communities"])


class Community(BaseModel):
    community_id: str
    #: from the people file; null for a community that has devices but no staff yet
    name: str | None
    devices: int
    online: int
    offline: int
    living_alone: int
    gateways: int
    #: incidents not yet closed or rejected
    open_incidents: int


class Communities(BaseModel):
    items: list[Community]


class Buffer(BaseModel):
    """The gateway's store-and-forward buffer, from its last status message."""

    depth: int | None
    alarm: int | None
    telemetry: int | None
    oldest_age_s: float | None
    disk_bytes: int | None
    cap_bytes: int | None


class Gateway(BaseModel):
    gateway_id: str
    community_id: str
    #: as the gateway last reported it (``offline`` is its last will)
    state: str
    #: when its last status message was written
    last_seen: datetime
    version: str | None
    uptime_s: float | None
    buffer: Buffer
    #: devices it heard or was told of that the inventory lacks (``linli edge devices pending``)
    pending_devices: int | None = None
    #: its uplinks: name -> connected
    links: dict[str, bool]
    devices: int


class Gateways(BaseModel):
    items: list[Gateway]
    next: str | None


class GatewayDetail(Gateway):
    #: the whole status document (docs/edge.md describes it)
    status: dict[str, Any]


@router.get("/communities", response_model=Communities)
def communities(db: Db, state: State, principal: DeviceReader) -> Response:
    """The communities the caller serves (all of them for district roles)."""
    scope, params = community_clause(principal, "c.community_id")
    named = state.context.people.communities
    rows = db.execute(
        "SELECT c.community_id, coalesce(d.n, 0), coalesce(d.online, 0), coalesce(d.offline, 0),"  # noqa: S608 - scope from access
        " coalesce(d.alone, 0), coalesce(g.n, 0), coalesce(i.n, 0)"
        " FROM (SELECT community_id FROM devices WHERE community_id IS NOT NULL"
        "       UNION SELECT community_id FROM gateways UNION SELECT unnest(%s::text[])) c"
        " LEFT JOIN (SELECT community_id, count(*) AS n, count(*) FILTER (WHERE status = 'online') AS online,"
        "   count(*) FILTER (WHERE status = 'offline') AS offline,"
        "   count(*) FILTER (WHERE living_alone) AS alone FROM devices GROUP BY 1) d USING (community_id)"
        " LEFT JOIN (SELECT community_id, count(*) AS n FROM gateways GROUP BY 1) g USING (community_id)"
        " LEFT JOIN (SELECT community_id, count(*) AS n FROM incidents WHERE closed_at IS NULL GROUP BY 1) i"
        "   USING (community_id)"
        f" WHERE {scope} ORDER BY 1",
        [sorted(named), *params],
    ).fetchall()
    items = [
        {
            "community_id": r[0],
            "name": named[r[0]].name if r[0] in named else None,
            "devices": r[1],
            "online": r[2],
            "offline": r[3],
            "living_alone": r[4],
            "gateways": r[5],
            "open_incidents": r[6],
        }
        for r in rows
    ]
    return pages.json_answer({"items": items})


_GATEWAY = (
    "SELECT g.gateway_id, g.community_id, g.state, g.status_at, g.status,"
    " (SELECT count(*) FROM devices d WHERE d.gateway_id = g.gateway_id) FROM gateways g"
)


def _gateway(row: tuple[Any, ...]) -> dict[str, Any]:
    status: dict[str, Any] = row[4] if isinstance(row[4], dict) else {}
    buffer = status.get("buffer") if isinstance(status.get("buffer"), dict) else {}
    links = status.get("links") if isinstance(status.get("links"), dict) else {}
    assert isinstance(buffer, dict)  # noqa: S101 - narrowed above
    assert isinstance(links, dict)  # noqa: S101 - narrowed above

    def number(value: object) -> float | None:
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    def count(value: object) -> int | None:
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    version = status.get("version")
    return {
        "gateway_id": row[0],
        "community_id": row[1],
        "state": row[2],
        "last_seen": row[3],
        "version": version if isinstance(version, str) else None,
        "uptime_s": number(status.get("uptime_s")),
        "buffer": {
            "depth": count(buffer.get("depth")),
            "alarm": count(buffer.get("alarm")),
            "telemetry": count(buffer.get("telemetry")),
            "oldest_age_s": number(buffer.get("oldest_age_s")),
            "disk_bytes": count(buffer.get("disk_bytes")),
            "cap_bytes": count(buffer.get("cap_bytes")),
        },
        "pending_devices": count(status.get("pending_devices")),
        "links": {str(k): bool(v) for k, v in links.items()},
        "devices": row[5],
    }


@router.get("/gateways", response_model=Gateways)
def gateways(
    db: Db,
    principal: DeviceReader,
    community_id: Annotated[str | None, Query(max_length=128)] = None,
    state: Annotated[str | None, Query(max_length=32, description="online, offline")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=400, description="the `next` of the previous page")] = None,
) -> Response:
    """The gateways of the caller's communities, by id."""
    scope, params = community_clause(principal, "g.community_id")
    last = pages.decode(after, 1)[0] if after is not None else None
    rows = db.execute(
        f"{_GATEWAY} WHERE {scope} AND (%s::text IS NULL OR g.community_id = %s)"
        " AND (%s::text IS NULL OR g.state = %s) AND (%s::text IS NULL OR g.gateway_id > %s)"
        " ORDER BY g.gateway_id LIMIT %s",
        [*params, community_id, community_id, state, state, last, last, limit + 1],
    ).fetchall()
    items = [_gateway(r) for r in rows[:limit]]
    more = len(rows) > limit
    return pages.json_answer(
        {"items": items, "next": pages.encode(items[-1]["gateway_id"]) if more else None}
    )


@router.get("/gateways/{gateway_id}", response_model=GatewayDetail)
def gateway(
    db: Db, principal: DeviceReader, gateway_id: Annotated[str, Path(min_length=1, max_length=128)]
) -> Response:
    """One gateway with its whole last status document."""
    row = db.execute(f"{_GATEWAY} WHERE g.gateway_id = %s", (gateway_id,)).fetchone()
    if row is None or not principal.sees(row[1]):
        raise not_found("gateway", gateway_id)
    body = _gateway(row)
    body["status"] = row[4] if isinstance(row[4], dict) else {}
    return pages.json_answer(body)

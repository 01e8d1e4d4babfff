"""``/api/v1/devices``: the devices of the caller's communities, filtered and paged, and one
device with its metrics (units from the data standard), latest values and location. Residents
and room numbers are masked for roles without ``pii``; every unmasked read is audited."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from fastapi.responses import Response
from pydantic import BaseModel

from cloud.api import pages
from cloud.api.access import Disclosure, community_clause
from cloud.api.deps import Address, Db, DeviceReader, State, not_found
from cloud.api.problems import Instant
from device_profiles.standard import ENVIRONMENT_METRICS, METRICS

router = APIRouter(tags=["devices"])

DeviceStatus = Literal["unknown", "online", "offline"]

_COLUMNS = (
    "device_id, device_type, profile, community_id, gateway_id, lat, lon, building, unit, room,"
    " resident_id, living_alone, status, status_at, first_seen, last_seen, battery_pct, battery_at"
)


class Location(BaseModel):
    lat: float | None
    lon: float | None
    building: str | None
    unit: str | None
    #: masked (``4**``) for roles without personal data
    room: str | None


class Device(BaseModel):
    device_id: str
    device_type: str
    profile: str
    community_id: str | None
    gateway_id: str | None
    location: Location
    #: masked for roles without personal data
    resident_id: str | None
    living_alone: bool | None
    status: DeviceStatus
    status_at: datetime | None
    first_seen: datetime | None
    last_seen: datetime | None
    battery_pct: float | None
    battery_at: datetime | None


class Devices(BaseModel):
    items: list[Device]
    #: pass as ``after`` for the next page; null at the end
    next: str | None


class Latest(BaseModel):
    metric: str
    #: from the data standard; null for a metric it does not define
    unit: str | None
    description: str | None
    time: datetime | None
    value: float | None


class ProfileInfo(BaseModel):
    """The device's profile (device_profiles/): who makes it and how often it reports."""

    id: str
    vendor: str
    model: str
    device_type: str
    description: str
    report_interval_s: float
    #: the canonical commands its dialect carries (docs/commands.md)
    commands: list[str] = []


class DeviceDetail(Device):
    #: null for a profile this API does not know (not shipped, not in ``[alerts] profiles``)
    profile_info: ProfileInfo | None
    #: the device type's metrics with their latest values (null: never reported)
    latest: list[Latest]
    #: incidents of the device not yet closed
    open_incidents: int


def device_item(row: dict[str, Any], seen: Disclosure) -> dict[str, Any]:
    """A ``devices`` row as the API shows it to `seen`'s caller."""
    device_id = row["device_id"]
    return {
        "device_id": device_id,
        "device_type": row["device_type"],
        "profile": row["profile"],
        "community_id": row["community_id"],
        "gateway_id": row["gateway_id"],
        "location": {
            "lat": row["lat"],
            "lon": row["lon"],
            "building": row["building"],
            "unit": row["unit"],
            "room": seen.text(device_id, "room", row["room"]),
        },
        "resident_id": seen.text(device_id, "resident_id", row["resident_id"]),
        "living_alone": row["living_alone"],
        "status": row["status"],
        "status_at": row["status_at"],
        "first_seen": row["first_seen"],
        "last_seen": row["last_seen"],
        "battery_pct": row["battery_pct"],
        "battery_at": row["battery_at"],
    }


def _rows(db: Db, sql: str, params: Any) -> list[dict[str, Any]]:
    cur = db.execute(sql, params)
    names = [c.name for c in cur.description or ()]
    return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


@router.get("/devices", response_model=Devices)
def devices(
    db: Db,
    principal: DeviceReader,
    address: Address,
    community_id: Annotated[str | None, Query(max_length=128)] = None,
    gateway_id: Annotated[str | None, Query(max_length=128)] = None,
    device_type: Annotated[str | None, Query(max_length=64)] = None,
    status: DeviceStatus | None = None,
    battery_below: Annotated[float | None, Query(ge=0, le=100, description="battery_pct below this")] = None,
    silent_since: Annotated[
        Instant | None, Query(description="not heard from since this time (or never)")
    ] = None,
    living_alone: bool | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[str | None, Query(max_length=400, description="the `next` of the previous page")] = None,
) -> Response:
    """The devices of the caller's communities, by device id."""
    scope, scope_params = community_clause(principal)
    last = pages.decode(after, 1)[0] if after is not None else None
    rows = _rows(
        db,
        f"SELECT {_COLUMNS} FROM devices WHERE {scope}"  # noqa: S608 - fixed names, scope from access
        " AND (%s::text IS NULL OR community_id = %s) AND (%s::text IS NULL OR gateway_id = %s)"
        " AND (%s::text IS NULL OR device_type = %s) AND (%s::text IS NULL OR status = %s)"
        " AND (%s::float8 IS NULL OR battery_pct < %s)"
        " AND (%s::timestamptz IS NULL OR last_seen IS NULL OR last_seen < %s)"
        " AND (%s::bool IS NULL OR living_alone = %s)"
        " AND (%s::text IS NULL OR device_id > %s) ORDER BY device_id LIMIT %s",
        [
            *scope_params,
            *(community_id, community_id, gateway_id, gateway_id, device_type, device_type),
            *(status, status, battery_below, battery_below, silent_since, silent_since),
            *(living_alone, living_alone, last, last, limit + 1),
        ],
    )
    seen = Disclosure(principal)
    items = [device_item(r, seen) for r in rows[:limit]]
    seen.flush(db, resource="device", address=address)
    more = len(rows) > limit
    return pages.json_answer({"items": items, "next": pages.encode(items[-1]["device_id"]) if more else None})


@router.get("/devices/{device_id}", response_model=DeviceDetail)
def device(
    db: Db,
    state: State,
    principal: DeviceReader,
    address: Address,
    device_id: Annotated[str, Path(min_length=1, max_length=128)],
) -> Response:
    """One device: where it is, whose it is (masked per role), its metrics and latest values."""
    rows = _rows(db, f"SELECT {_COLUMNS} FROM devices WHERE device_id = %s", (device_id,))  # noqa: S608
    if not rows or not principal.sees(rows[0]["community_id"]):
        raise not_found("device", device_id)
    row = rows[0]
    standard = METRICS.get(row["device_type"])
    if standard is not None:
        latest_rows = db.execute(
            "SELECT m, r.time, r.value FROM unnest(%s::text[]) AS m LEFT JOIN LATERAL"
            " (SELECT time, value FROM readings WHERE device_id = %s AND metric = m"
            "  ORDER BY time DESC LIMIT 1) r ON TRUE",
            (list(standard), device_id),
        ).fetchall()
    else:  # a type outside the standard: what it reported in the last week
        latest_rows = db.execute(
            "SELECT DISTINCT ON (metric) metric, time, value FROM readings"
            " WHERE device_id = %s AND time > now() - interval '7 days' ORDER BY metric, time DESC",
            (device_id,),
        ).fetchall()
    open_row = db.execute(
        "SELECT count(*) FROM incidents WHERE device_id = %s AND closed_at IS NULL", (device_id,)
    ).fetchone()
    seen = Disclosure(principal)
    body = device_item(row, seen)
    body["latest"] = [
        {
            "metric": m,
            "unit": standard[m].unit if standard and m in standard else None,
            "description": standard[m].description if standard and m in standard else None,
            "time": t,
            "value": v,
        }
        for m, t, v in latest_rows
        # the environmental metrics every type may report: only those this device reports
        if t is not None or m not in ENVIRONMENT_METRICS
    ]
    body["open_incidents"] = open_row[0] if open_row else 0
    known = state.profiles.get(row["profile"])
    body["profile_info"] = (
        None
        if known is None
        else {
            "id": known.id,
            "vendor": known.vendor,
            "model": known.model,
            "device_type": known.device_type,
            "description": known.description,
            "report_interval_s": known.report_interval_s,
            "commands": sorted(known.commands),
        }
    )
    seen.flush(db, resource="device", address=address)
    return pages.json_answer(body)

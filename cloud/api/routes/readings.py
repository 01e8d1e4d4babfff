"""``/api/v1/devices/{device_id}/readings``: a device's sensor history, raw or aggregated
(`cloud.api.history` plans the query), as JSON or CSV (``Accept: text/csv``)."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from fastapi.responses import Response
from pydantic import BaseModel, StringConstraints

from cloud.api.deps import Db, HistoryReader, State, not_found
from cloud.api.history import INTERVAL_PATTERN, Agg, HistoryRequestError, Zone, encode_cursor, plan_history
from cloud.api.problems import Instant, Invalid

router = APIRouter(tags=["history"])

_JSON = msgspec.json.Encoder()


class Point(BaseModel):
    time: datetime
    value: float


class History(BaseModel):
    device_id: str
    start: datetime
    end: datetime
    #: the bucket width asked for; null for raw rows
    interval: str | None
    agg: Agg | None
    #: ``hourly``: aggregated from the hourly rollup; ``raw``: from the readings themselves
    source: str
    series: dict[str, list[Point]]
    #: raw rows only: pass as ``after`` for the next page; null at the end
    next: str | None


def _unprocessable(detail: str) -> HTTPException:
    return HTTPException(status_code=status.HTTP_422_UNPROCESSABLE_CONTENT, detail=detail)


@router.get(
    "/devices/{device_id}/readings",
    response_model=History,
    responses={
        200: {"content": {"text/csv": {"schema": {"type": "string"}, "example": "time,metric,value\n"}}},
        422: {
            "model": Invalid,
            "description": "invalid, or more points than one answer holds: the detail says how to narrow it",
        },
    },
)
def readings(
    request: Request,
    db: Db,
    state: State,
    principal: HistoryReader,
    device_id: Annotated[str, Path(min_length=1, max_length=128)],
    metric: Annotated[
        list[Annotated[str, StringConstraints(min_length=1, max_length=64)]],
        Query(min_length=1, max_length=20, description="one or more metric names"),
    ],
    start: Annotated[Instant | None, Query(description="default: 24 hours before end")] = None,
    end: Annotated[Instant | None, Query(description="default: now")] = None,
    interval: Annotated[
        str | None,
        Query(pattern=INTERVAL_PATTERN, description="bucket width: 30s, 15m, 1h, 1d, 1w; none: raw rows"),
    ] = None,
    agg: Annotated[Agg, Query(description="how a bucket's readings are combined")] = "avg",
    tz: Annotated[
        Zone | None, Query(description="IANA zone of daily buckets (default [api] timezone)")
    ] = None,
    limit: Annotated[
        int | None, Query(ge=1, description="raw rows per page (default and most: max_points)")
    ] = None,
    after: Annotated[
        str | None, Query(max_length=200, description="raw rows: the `next` of the previous page")
    ] = None,
) -> Response:
    """A device's readings of the given metrics between start and end (end excluded)."""
    try:
        zone = ZoneInfo(tz or state.settings.api.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise _unprocessable(f"tz: unknown time zone {tz!r} (an IANA name such as Asia/Shanghai)") from exc
    end = end or state.clock()
    start = start or end - timedelta(hours=24)
    metrics = sorted(set(metric))
    try:
        plan = plan_history(
            device_id=device_id,
            metrics=metrics,
            start=start,
            end=end,
            interval=interval,
            agg=agg,
            zone=zone,
            max_points=state.settings.api.max_points,
            limit=limit,
            after=after,
            rollup=state.rollup.get(db),
        )
    except HistoryRequestError as exc:
        raise _unprocessable(str(exc)) from exc
    csv_wanted = "text/csv" in request.headers.get("accept", "")
    if plan.bucketed and not csv_wanted:
        # one round trip: the device's community (NULL: no such device) beside each series' JSON,
        # written by PostgreSQL; this process only checks the community and splices the JSON in
        found = db.execute(
            "SELECT (SELECT community_id FROM devices WHERE device_id = %s), s.metric, s.points"  # noqa: S608 - the plan's own SQL
            " FROM (SELECT 1) AS one LEFT JOIN (SELECT metric,"
            " json_agg(json_build_object('time', b, 'value', v) ORDER BY b)::text AS points"
            f" FROM ({plan.sql}) AS p(b, metric, v) GROUP BY metric) AS s ON TRUE",
            (device_id, *plan.params),
        ).fetchall()
        if not found or found[0][0] is None or not principal.sees(found[0][0]):
            raise not_found("device", device_id)
        series_json = {m: points for _, m, points in found if m is not None}
        body = {
            "device_id": device_id,
            "start": start,
            "end": end,
            "interval": interval,
            "agg": agg,
            "source": plan.source,
            "series": {m: msgspec.Raw(series_json.get(m, "[]").encode()) for m in metrics},
            "next": None,
        }
        return Response(content=_JSON.encode(body), media_type="application/json")
    row = db.execute("SELECT community_id FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    if row is None or not principal.sees(row[0]):
        raise not_found("device", device_id)
    rows = db.execute(plan.sql, plan.params).fetchall()
    next_cursor = None
    if not plan.bucketed:
        page = plan.params[-1]
        assert isinstance(page, int)  # noqa: S101 - the plan's LIMIT is page + 1
        if len(rows) == page:
            rows = rows[:-1]
            next_cursor = encode_cursor(rows[-1][0], rows[-1][1])
    if csv_wanted:
        out = io.StringIO()
        out.write("time,metric,value\n")
        for t, m, v in rows:
            out.write(f"{t.isoformat()},{m},{v!r}\n")
        return Response(content=out.getvalue(), media_type="text/csv")
    series: dict[str, list[dict[str, object]]] = {m: [] for m in metrics}
    for t, m, v in rows:
        series[m].append({"time": t, "value": v})
    body = {
        "device_id": device_id,
        "start": start,
        "end": end,
        "interval": interval,
        "agg": agg if plan.bucketed else None,
        "source": plan.source,
        "series": series,
        "next": next_cursor,
    }
    return Response(content=_JSON.encode(body), media_type="application/json")

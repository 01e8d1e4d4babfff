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

from cloud.api import pages
from cloud.api.access import Principal
from cloud.api.deps import Db, HistoryReader, State, not_found
from cloud.api.history import (
    INTERVAL_PATTERN,
    Agg,
    HistoryRequestError,
    Plan,
    Zone,
    plan_history,
)
from cloud.api.hourly import NONE, compose, tail_sql, tails
from cloud.api.problems import Instant, Invalid

router = APIRouter(tags=["history"])


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
            after=_cursor(after),
            rollup=(rollup := state.rollup.get(db)),
        )
    except HistoryRequestError as exc:
        raise _unprocessable(str(exc)) from exc
    if "text/csv" in request.headers.get("accept", ""):
        return _csv(db, principal, device_id, plan)
    # one round trip: the device's community (NULL: no such device), the page's size and last
    # row (raw rows), and each series' JSON written by PostgreSQL; this process only checks the
    # community and splices the JSON in
    following: str | None = None
    cache, rolled = state.hourly, plan.rolled
    if cache is not None and rolled is not None and rollup.generation is not None:
        # the rolled-up hours from this process's cache, the raw hours above them from the database
        sql, params = tail_sql(rolled)
        found = db.execute(sql, params).fetchall()
        if found[0][0] is None or not principal.sees(found[0][0]):
            raise not_found("device", device_id)
        above = tails(found)
        start_s, split_s = int(rolled.start.timestamp()), int(rolled.split.timestamp())
        series = {}
        for m in metrics:
            rolled_up = cache.series(db, rollup.generation, device_id, m).between(start_s, split_s)
            series[m] = compose(rolled_up.then(above.get(m, NONE)), rolled)
        return _answer(device_id, metrics, start, end, interval, agg, plan, series, None)
    if plan.bucketed:
        found = db.execute(_BUCKETS.format(plan=plan.sql), (device_id, *plan.params)).fetchall()
        community = found[0][0]
    else:
        fence = plan.params[-1]
        found = db.execute(
            _PAGE.format(plan=plan.sql), (*plan.params, device_id, fence, fence, fence)
        ).fetchall()
        community, count, last_time, last_metric = found[0][:4]
        if count == fence:
            following = pages.encode(last_time, last_metric)
    if community is None or not principal.sees(community):
        raise not_found("device", device_id)
    series_json = {row[-2]: row[-1].encode() for row in found if row[-2] is not None}
    return _answer(device_id, metrics, start, end, interval, agg, plan, series_json, following)


def _answer(
    device_id: str,
    metrics: list[str],
    start: datetime,
    end: datetime,
    interval: str | None,
    agg: Agg,
    plan: Plan,
    series: dict[str, bytes],
    following: str | None,
) -> Response:
    body = {
        "device_id": device_id,
        "start": start,
        "end": end,
        "interval": interval,
        "agg": agg if plan.bucketed else None,
        "source": plan.source,
        "series": {m: msgspec.Raw(series.get(m, b"[]")) for m in metrics},
        "next": following,
    }
    return pages.json_answer(body)


def _cursor(after: str | None) -> tuple[datetime, str] | None:
    if after is None:
        return None
    at, metric = pages.decode(after, 2)
    return pages.decode_time(at), metric


_SERIES = "json_agg(json_build_object('time', t, 'value', v) ORDER BY t)::text"
#: buckets: the device's community, then each metric's series
_BUCKETS = (
    "SELECT (SELECT community_id FROM devices WHERE device_id = %s), s.metric, s.points"  # noqa: S608 - constant
    f" FROM (SELECT 1) AS one LEFT JOIN (SELECT metric, {_SERIES} AS points"
    " FROM ({plan}) AS p(t, metric, v) GROUP BY metric) AS s ON TRUE"
)
#: a page of raw rows (the plan's LIMIT is the page + 1, the fence): the device's community, the
#: rows found, the page's last row (the cursor), then each metric's series without the fence
_PAGE = (
    "WITH q AS (SELECT t, metric, v, row_number() OVER (ORDER BY t, metric) AS rn"  # noqa: S608 - constant
    " FROM ({plan}) AS p(t, metric, v))"
    " SELECT (SELECT community_id FROM devices WHERE device_id = %s), (SELECT count(*) FROM q),"
    " (SELECT t FROM q WHERE rn = %s - 1), (SELECT metric FROM q WHERE rn = %s - 1), s.metric, s.points"
    f" FROM (SELECT 1) AS one LEFT JOIN (SELECT metric, {_SERIES} AS points"
    " FROM q WHERE rn < %s GROUP BY metric) AS s ON TRUE"
)


def _csv(db: Db, principal: Principal, device_id: str, plan: Plan) -> Response:
    row = db.execute("SELECT community_id FROM devices WHERE device_id = %s", (device_id,)).fetchone()
    if row is None or not principal.sees(row[0]):
        raise not_found("device", device_id)
    rows = db.execute(plan.sql, plan.params).fetchall()
    if not plan.bucketed and len(rows) == plan.params[-1]:
        rows = rows[:-1]  # the page's fence: the caller pages with JSON's `next`
    out = io.StringIO()
    out.write("time,metric,value\n")
    for t, m, v in rows:
        out.write(f"{t.isoformat()},{m},{v!r}\n")
    return Response(content=out.getvalue(), media_type="text/csv")

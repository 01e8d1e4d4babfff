"""Sensor history queries: raw rows page by page, or buckets aggregated from the raw table or from
the hourly rollup (``readings_hourly``), whichever answers the request exactly and faster.

Pure functions build the plan (`plan_history`) and its SQL; `cloud.api.routes.readings` runs it.

- **Raw** (no interval): rows ordered by time then metric, at most `limit` per answer, with a
  cursor (the last row's time and metric) for the next page.
- **Buckets** (an interval such as ``15m``, ``1h``, ``1d``, ``1w``): ``date_bin`` buckets aligned
  to midnight in the request's time zone (weeks start on Monday). The hourly rollup is used when
  the interval is a whole number of hours, start and end fall on whole hours, the zone's offset
  is a whole number of hours and the aggregate can be composed from hourly ones (avg, min, max,
  sum, count); otherwise the raw rows are bucketed (``first`` and ``last`` always are).
"""

from __future__ import annotations

import enum
import math
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final, Literal
from zoneinfo import ZoneInfo, available_timezones

import psycopg

Agg = Literal["avg", "min", "max", "sum", "count", "first", "last"]
AGGS: Final[tuple[Agg, ...]] = ("avg", "min", "max", "sum", "count", "first", "last")

_UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}
INTERVAL_PATTERN: Final = r"^[1-9][0-9]{0,5}[smhdw]$"
_INTERVAL: Final = re.compile(r"^([1-9][0-9]{0,5})([smhdw])$")
#: the IANA time zones this machine knows, as an enumeration in the OpenAPI document
Zone = enum.StrEnum("Zone", {name: name for name in sorted(available_timezones())})  # type: ignore[misc]
#: a Monday at midnight: buckets of days and weeks are aligned to it in the request's zone
_ORIGIN: Final = datetime(2000, 1, 3)  # noqa: DTZ001 - a wall-clock time, placed in a zone below

_NEVER: Final = datetime(1970, 1, 1, tzinfo=UTC)

_RAW_AGG: Final[dict[Agg, str]] = {
    "avg": "avg(value)",
    "min": "min(value)",
    "max": "max(value)",
    "sum": "sum(value)",
    "count": "count(*)::double precision",
    "first": "(array_agg(value ORDER BY time))[1]",
    "last": "(array_agg(value ORDER BY time DESC))[1]",
}
_HOURLY_AGG: Final[dict[Agg, str]] = {
    "avg": "sum(sum) / sum(n)",
    "min": "min(min)",
    "max": "max(max)",
    "sum": "sum(sum)",
    "count": "sum(n)::double precision",
}
#: the same, for one hourly row (an interval of exactly one hour needs no grouping)
_HOUR_ROW: Final[dict[Agg, str]] = {
    "avg": "sum / n",
    "min": "min",
    "max": "max",
    "sum": "sum",
    "count": "n::double precision",
}


class HistoryRequestError(ValueError):
    """A request that cannot be answered as asked; the message says how to narrow or fix it."""


def parse_interval(text: str) -> timedelta:
    """``15m`` -> 15 minutes (units s, m, h, d, w)."""
    m = _INTERVAL.match(text)
    if m is None:
        raise HistoryRequestError(
            f"interval {text!r} is not a number followed by s, m, h, d or w (for example 15m, 1h, 1d)"
        )
    return timedelta(seconds=int(m.group(1)) * _UNITS[m.group(2)])


@dataclass(frozen=True, slots=True)
class Rollup:
    """Where the hourly aggregates are: TimescaleDB's continuous aggregate ``readings_hourly``
    (`continuous`), or the service's rollup table, complete below `watermark` (raw rows above)."""

    continuous: bool
    watermark: datetime
    #: when the rollup last ran (its rows below the watermark change only then); None: never
    generation: datetime | None = None


class RollupState:
    """`Rollup` of the database, read once (the mode) and every `ttl_s` (the watermark).

    A watermark older than the real one only moves more hours to the raw side: still exact."""

    def __init__(self, *, ttl_s: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._continuous: bool | None = None
        self._watermark = _NEVER
        self._generation: datetime | None = None
        self._read_at = -math.inf

    def get(self, conn: psycopg.Connection[Any]) -> Rollup:
        with self._lock:
            if self._continuous is None:
                from cloud.store.mode import detect_mode

                self._continuous = detect_mode(conn).server_jobs
            now = self._clock()
            if not self._continuous and now - self._read_at >= self._ttl_s:
                row = conn.execute("SELECT value, mark FROM job_state WHERE job = 'rollup'").fetchone()
                self._watermark, self._generation = (row[0], row[1]) if row is not None else (_NEVER, None)
                self._read_at = now
            return Rollup(continuous=self._continuous, watermark=self._watermark, generation=self._generation)


@dataclass(frozen=True, slots=True)
class Rolled:
    """Buckets of the service's rollup table below `split` and of the raw rows from `split` to
    `end` (hourly aggregates of both, composed into buckets of `width` from `origin`): what a
    cache of the rolled-up hours (`cloud.api.hourly`) can answer in place of `Plan.sql`."""

    device_id: str
    metrics: list[str]
    start: datetime
    split: datetime
    end: datetime
    width: timedelta
    origin: datetime
    agg: Agg


@dataclass(frozen=True, slots=True)
class Plan:
    """What to run: raw rows or buckets, from which source, and the SQL."""

    source: Literal["raw", "hourly"]
    bucketed: bool
    sql: str
    params: tuple[object, ...]
    #: the same buckets described for the cache of rolled-up hours (service rollup only)
    rolled: Rolled | None = None


def _whole_hours(t: datetime) -> bool:
    return t.minute == 0 and t.second == 0 and t.microsecond == 0


def _zone_offset_whole_hours(zone: ZoneInfo, at: datetime) -> bool:
    offset = at.astimezone(zone).utcoffset() or timedelta(0)
    return offset.total_seconds() % 3600 == 0


def plan_history(
    *,
    device_id: str,
    metrics: list[str],
    start: datetime,
    end: datetime,
    interval: str | None,
    agg: Agg,
    zone: ZoneInfo,
    max_points: int,
    limit: int | None,
    after: tuple[datetime, str] | None,
    rollup: Rollup,
) -> Plan:
    """The query answering the request; `HistoryRequestError` when it is invalid or too large."""
    if end <= start:
        raise HistoryRequestError("end must be after start")
    if interval is None:
        page = max_points if limit is None else limit
        if page > max_points:
            raise HistoryRequestError(f"limit {page} is above the most points per answer ({max_points})")
        cursor_time, cursor_metric = after or (start - timedelta(microseconds=1), "")
        sql = (
            "SELECT time, metric, value FROM readings"
            " WHERE device_id = %s AND metric = ANY(%s) AND time >= %s AND time < %s"
            " AND (time, metric) > (%s, %s)"
            " ORDER BY time, metric LIMIT %s"
        )
        return Plan("raw", False, sql, (device_id, metrics, start, end, cursor_time, cursor_metric, page + 1))
    if after is not None:
        raise HistoryRequestError("after (a cursor) is for raw rows: buckets come in one answer")
    width = parse_interval(interval)
    buckets = math.ceil((end - start) / width) + 1
    points = buckets * len(metrics)
    if points > max_points:
        longer = _suggest(width, (end - start) * len(metrics) / max_points)
        raise HistoryRequestError(
            f"{points} points ({buckets} buckets of {interval} x {len(metrics)} metrics) is above the most"
            f" per answer ({max_points}): ask for a shorter range, fewer metrics, or a longer interval"
            f" (at least {longer} for this range)"
        )
    origin = _ORIGIN.replace(tzinfo=zone)
    hours = width.total_seconds() / 3600
    hourly = (
        hours >= 1
        and hours.is_integer()
        and agg in _HOURLY_AGG
        and _whole_hours(start.astimezone(UTC))
        and _whole_hours(end.astimezone(UTC))
        and _zone_offset_whole_hours(zone, start)
        and _zone_offset_whole_hours(zone, end)
    )
    if hourly and rollup.continuous:
        sql = (
            f"SELECT date_bin(%s, bucket, %s) AS b, metric, {_HOURLY_AGG[agg]} FROM readings_hourly"  # noqa: S608 - a fixed table of expressions
            " WHERE device_id = %s AND metric = ANY(%s) AND bucket >= %s AND bucket < %s"
            " GROUP BY b, metric ORDER BY b, metric"
        )
        return Plan("hourly", True, sql, (width, origin, device_id, metrics, start, end))
    if hourly and width == timedelta(hours=1):
        # hourly buckets are the rollup's own rows: no regrouping. The rollup below the
        # watermark's hour, the raw rows from that hour on (the two parts share no hour)
        split = min(max(rollup.watermark.replace(minute=0, second=0, microsecond=0), start), end)
        sql = (
            f"SELECT bucket AS b, metric, {_HOUR_ROW[agg]} FROM readings_hourly_rollup"  # noqa: S608 - fixed expressions
            " WHERE device_id = %s AND metric = ANY(%s) AND bucket >= %s AND bucket < %s"
            " UNION ALL"
            " SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00'), metric,"
            f" {_RAW_AGG[agg]} FROM readings"
            " WHERE device_id = %s AND metric = ANY(%s) AND time >= %s AND time < %s"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        )
        rolled = Rolled(device_id, metrics, start, split, end, width, origin, agg)
        parts = (device_id, metrics, start, split, device_id, metrics, split, end)
        return Plan("hourly", True, sql, parts, rolled)
    if hourly:
        # the rollup table below the watermark, the raw rows above it, with constant bounds so
        # that only the chunks above the watermark are planned
        split = min(max(rollup.watermark, start), end)
        sql = (
            f"SELECT date_bin(%s, h.bucket, %s) AS b, h.metric, {_HOURLY_AGG[agg]} FROM ("  # noqa: S608 - a fixed table of expressions
            " SELECT bucket, metric, n, sum, min, max FROM readings_hourly_rollup"
            " WHERE device_id = %s AND metric = ANY(%s) AND bucket >= %s AND bucket < %s"
            " UNION ALL"
            " SELECT date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00'), metric,"
            " count(*), sum(value), min(value), max(value) FROM readings"
            " WHERE device_id = %s AND metric = ANY(%s) AND time >= %s AND time < %s GROUP BY 1, 2"
            ") AS h GROUP BY b, h.metric ORDER BY b, h.metric"
        )
        params = (width, origin, device_id, metrics, start, split, device_id, metrics, split, end)
        rolled = Rolled(device_id, metrics, start, split, end, width, origin, agg)
        return Plan("hourly", True, sql, params, rolled)
    sql = (
        f"SELECT date_bin(%s, time, %s) AS b, metric, {_RAW_AGG[agg]} FROM readings"  # noqa: S608 - a fixed table of expressions
        " WHERE device_id = %s AND metric = ANY(%s) AND time >= %s AND time < %s"
        " GROUP BY b, metric ORDER BY b, metric"
    )
    return Plan("raw", True, sql, (width, origin, device_id, metrics, start, end))


def _suggest(width: timedelta, needed: timedelta) -> str:
    for text in ("1m", "5m", "15m", "30m", "1h", "3h", "6h", "12h", "1d", "7d"):
        w = parse_interval(text)
        if w >= width and w >= needed:
            return text
    return "7d with a shorter range"

"""A community's `History` from TimescaleDB: one query per series, only what its detectors read.

Raw readings are read where a detector needs the moments themselves (door activity, switch-ons,
the last half hour of water levels); the hourly rollup (``readings_hourly``, up to date to the
latest reading in every storage mode) where an aggregate does: messages per hour (the largest
count of any metric in the hour), battery levels (the mean of six hours), and a lamp's power at
full output (the hourly median of power normalised to a 100 % dim level, from the raw rows of
the hours it burnt at full output). Each query is bounded by the community's devices and the
longest window its rules ask for.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Final, NamedTuple

import numpy as np
import psycopg

from cloud.alerts.detect.history import ACTIVITY, FULL_POWER, MESSAGES, History, Series
from cloud.alerts.detect.kinds import (
    DAY,
    BatteryLifeRule,
    DetectorRule,
    LampDriftRule,
    LampTimingRule,
    ReportDriftRule,
    RoutineRule,
    WaterTrendRule,
)
from cloud.alerts.model import DeviceInfo
from cloud.errors import StoreUnavailable

log = logging.getLogger("linli.cloud.alerts")

#: a round of the routine detector reads the messages per hour of this long (its door contacts'
#: health over the quiet time), rounded up to what the drift detector reads: one cached series
_ROUTINE_MESSAGES_S: Final = 15 * 86_400

_ACTIVITY: Final = """
SELECT device_id, extract(epoch FROM time)::bigint FROM readings
WHERE device_id = ANY(%(ids)s) AND metric = 'contact_open' AND value >= 0.5
  AND time > to_timestamp(%(start)s) AND time <= to_timestamp(%(now)s)
UNION ALL
SELECT device_id, extract(epoch FROM time)::bigint FROM events
WHERE device_id = ANY(%(ids)s) AND event = 'door_opened'
  AND time > to_timestamp(%(start)s) AND time <= to_timestamp(%(now)s)
"""

_RAW: Final = """
SELECT device_id, extract(epoch FROM time)::bigint, value FROM readings
WHERE device_id = ANY(%(ids)s) AND metric = %(metric)s
  AND time > to_timestamp(%(start)s) AND time <= to_timestamp(%(now)s)
"""

_MESSAGES: Final = """
SELECT device_id, extract(epoch FROM bucket)::bigint, max(n)::float8 FROM readings_hourly
WHERE device_id = ANY(%(ids)s) AND bucket > to_timestamp(%(start)s) AND bucket <= to_timestamp(%(now)s)
GROUP BY device_id, bucket
"""

_SIX_HOURLY: Final = """
SELECT device_id, extract(epoch FROM time_bucket('6 hours', bucket))::bigint + 10800,
       sum(sum) / sum(n)
FROM readings_hourly
WHERE device_id = ANY(%(ids)s) AND metric = %(metric)s
  AND bucket >= to_timestamp(%(start)s) AND bucket <= to_timestamp(%(now)s)
GROUP BY 1, 2
"""

_FULL_POWER: Final = """
SELECT p.device_id, extract(epoch FROM time_bucket('1 hour', p.time))::bigint + 1800,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY p.value * 100 / d.value)
FROM readings p JOIN readings d ON d.device_id = p.device_id AND d.time = p.time AND d.metric = 'dim_pct'
WHERE p.device_id = ANY(%(ids)s) AND p.metric = 'power_w' AND d.value >= %(dim)s
  AND p.time > to_timestamp(%(start)s) AND p.time <= to_timestamp(%(now)s)
  AND d.time > to_timestamp(%(start)s) AND d.time <= to_timestamp(%(now)s)
GROUP BY 1, 2
"""


class _Cached(NamedTuple):
    series: Series
    start: float
    end: int
    full_at: int


class SeriesCache:
    """A community's two big series (door activity over eight weeks, messages per hour over two)
    kept between rounds: a round reads only the rows after the previous round's end, less
    `overlap_s` (rows stored late, the hour still filling), and everything again every
    `full_every_s` (rows stored later than that: a gateway back after a long outage)."""

    def __init__(self, *, overlap_s: int = 3600, full_every_s: int = 86_400) -> None:
        self.overlap_s = overlap_s
        self.full_every_s = full_every_s
        self._entries: dict[str, _Cached] = {}
        #: rows read by the last round (for tests and logs)
        self.rows_read = 0

    def get(
        self, name: str, start: float, now: int, *, late: int | None = None, bucket: int = 1
    ) -> tuple[Series | None, float]:
        """The cached series trimmed to after `start`, and from when to read; (None, start): all.
        `late`: the oldest reading time stored since the last round (the feed says), if older;
        `bucket`: the series' rows are buckets of so many seconds (named by their start)."""
        e = self._entries.get(name)
        if e is None or e.end > now or now - e.full_at >= self.full_every_s or e.start > start:
            return None, start
        edge = min(e.end - self.overlap_s, late if late is not None else e.end)
        since = max(start, edge // bucket * bucket - 1)  # whole buckets: one still filling is read again
        keep = (e.series.t > start) & (e.series.t <= since)
        s = e.series
        return Series(dev=s.dev[keep], t=s.t[keep], v=s.v[keep], n_devices=len(s.starts) - 1), since

    def put(self, name: str, series: Series, start: float, now: int, *, full: bool) -> None:
        e = self._entries.get(name)
        self._entries[name] = _Cached(series, start, now, now if full or e is None else e.full_at)


def load_history(
    conn: psycopg.Connection[Any],
    *,
    devices: Sequence[DeviceInfo],
    rules: Sequence[DetectorRule],
    now: int,
    cache: SeriesCache | None = None,
    late: int | None = None,
) -> History:
    """The history `rules` read about `devices` up to `now` (Unix seconds); with a `cache`, door
    activity and messages per hour are read incrementally (from `late` at the latest: the oldest
    reading time stored since the previous round).

    Raises `StoreUnavailable` when the database fails (the service retries in a new session).
    """
    index = {d.device_id: i for i, d in enumerate(devices)}
    n = len(devices)
    series: dict[str, Series] = {}

    def ids(types: Sequence[str], *, alone: bool = False) -> list[str]:
        return [
            d.device_id
            for d in devices
            if (not types or d.device_type in types) and (d.living_alone or not alone)
        ]

    def read(sql: str, params: dict[str, Any], *, values: bool = True) -> Series:
        try:
            rows = conn.execute(sql, params).fetchall()
        except psycopg.errors.UndefinedTable:
            # ``readings_hourly`` is the ingest's to create (the storage mode): not there yet
            log.warning("no readings_hourly yet (no ingest has prepared the storage): skipped")
            return Series.empty(n)
        dev = [index[r[0]] for r in rows]
        t = [r[1] for r in rows]
        v = [r[2] for r in rows] if values else None
        return Series.of(dev, t, v, n_devices=n)

    def incremental(
        name: str, sql: str, p: dict[str, Any], start: float, *, values: bool = True, bucket: int = 1
    ) -> Series:
        if cache is None:
            return read(sql, {**p, "start": start}, values=values)
        kept, since = cache.get(name, start, now, late=late, bucket=bucket)
        new = read(sql, {**p, "start": since}, values=values)
        cache.rows_read += len(new)
        if kept is None:
            cache.put(name, new, start, now, full=True)
            return new
        both = Series.of(
            np.concatenate([kept.dev, new.dev]),
            np.concatenate([kept.t, new.t]),
            np.concatenate([kept.v, new.v]),
            n_devices=n,
        )
        cache.put(name, both, start, now, full=False)
        return both

    def merge(name: str, s: Series) -> None:
        old = series.get(name)
        if old is None or len(old) == 0:
            series[name] = s
            return
        series[name] = Series.of(
            np.concatenate([old.dev, s.dev]),
            np.concatenate([old.t, s.t]),
            np.concatenate([old.v, s.v]),
            n_devices=n,
        )

    messages_from: float = now
    try:
        for rule in rules:
            if isinstance(rule, RoutineRule):
                p = {"ids": ids(rule.device_types, alone=True), "now": now}
                series[ACTIVITY] = incremental(ACTIVITY, _ACTIVITY, p, now - rule.history, values=False)
            elif isinstance(rule, LampDriftRule):
                start = now - rule.baseline - rule.recent
                p = {"ids": ids(rule.device_types), "start": start, "now": now, "dim": rule.full_dim_pct}
                series[FULL_POWER] = read(_FULL_POWER, p)
            elif isinstance(rule, LampTimingRule):
                p = {"ids": ids(rule.device_types), "metric": "lamp_on", "now": now}
                series["lamp_on"] = read(_RAW, {**p, "start": now - (rule.nights + 2) * DAY})
            elif isinstance(rule, WaterTrendRule):
                p = {"ids": ids(rule.device_types), "metric": rule.metric, "now": now}
                merge(rule.metric, read(_RAW, {**p, "start": now - rule.window}))
            elif isinstance(rule, BatteryLifeRule):
                p = {"ids": ids(rule.device_types), "metric": rule.metric, "now": now}
                series[rule.metric] = read(_SIX_HOURLY, {**p, "start": now - rule.window})
            elif isinstance(rule, ReportDriftRule):
                messages_from = min(messages_from, now - rule.window - rule.baseline - 3600)
            if isinstance(rule, RoutineRule):  # is the door contact alive? (the messages it sent)
                messages_from = min(messages_from, now - _ROUTINE_MESSAGES_S)
        if messages_from < now:
            p = {"ids": [d.device_id for d in devices], "now": now}
            series[MESSAGES] = incremental(MESSAGES, _MESSAGES, p, messages_from, bucket=3600)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while reading history: {exc}") from exc
    except psycopg.Error as exc:
        raise StoreUnavailable(f"the database refused a history query: {exc}") from exc
    return History(devices=devices, series=series)

"""A cache of the rolled-up hours, per API process: hourly history without PostgreSQL.

The service's hourly rollup (``readings_hourly_rollup``, `cloud.store.rollup`) changes only when
the maintenance run rolls up (every ``[retention] interval_s``, retention in the same
transaction), and each run stamps ``job_state`` (`Rollup.generation`). Between runs a
device's rolled-up hours are the same for every request, yet a 30-day hourly series made
PostgreSQL read and write out 720 rows each time. `HourlyCache` keeps each series (device, metric)
as arrays the first time it is asked for and forgets everything when the generation changes; a
request then reads from PostgreSQL only the device's community (every request is still checked)
and the raw hours above the rollup's watermark, and composes the buckets here (`compose`).

Answers equal the SQL path's: the same hourly rows, the same composition (``date_bin`` from the
same origin, sums over counts for averages); late readings reach them as they reach the SQL path,
with the run that rolls them up (seen within ``RollupState``'s few seconds). Bounded by
``[api] hourly_cache_rows`` hours per process, least recently used series forgotten first; 0
turns it off. TimescaleDB's own continuous aggregate (``community`` mode) is not cached.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import psycopg

from cloud.api.history import Rolled

#: bytes a cached hour takes (its time, count, sum, min and max)
HOUR_BYTES: Final = 40

_EMPTY_I: Final = np.zeros(0, dtype=np.int64)
_EMPTY_F: Final = np.zeros(0, dtype=np.float64)


@dataclass(frozen=True, slots=True)
class Hours:
    """Hourly aggregates in time order: epoch seconds of each hour, count, sum, min, max."""

    at: npt.NDArray[np.int64]
    n: npt.NDArray[np.int64]
    sum: npt.NDArray[np.float64]
    min: npt.NDArray[np.float64]
    max: npt.NDArray[np.float64]

    @classmethod
    def of_rows(cls, rows: Sequence[tuple[Any, ...]]) -> Hours:
        """From rows of (epoch seconds, count, sum, min, max)."""
        if not rows:
            return NONE
        at, n, total, low, high = zip(*rows, strict=True)
        return cls(
            np.array(at, dtype=np.int64),
            np.array(n, dtype=np.int64),
            np.array(total, dtype=np.float64),
            np.array(low, dtype=np.float64),
            np.array(high, dtype=np.float64),
        )

    def between(self, start: int, end: int) -> Hours:
        """The hours in [start, end) (epoch seconds)."""
        lo, hi = np.searchsorted(self.at, [start, end])
        return Hours(self.at[lo:hi], self.n[lo:hi], self.sum[lo:hi], self.min[lo:hi], self.max[lo:hi])

    def then(self, later: Hours) -> Hours:
        """These hours followed by `later` ones (all after these)."""
        if not len(later.at):
            return self
        return Hours(
            np.concatenate((self.at, later.at)),
            np.concatenate((self.n, later.n)),
            np.concatenate((self.sum, later.sum)),
            np.concatenate((self.min, later.min)),
            np.concatenate((self.max, later.max)),
        )


#: no hours
NONE: Final = Hours(_EMPTY_I, _EMPTY_I, _EMPTY_F, _EMPTY_F, _EMPTY_F)


class HourlyCache:
    """The rolled-up hours of the series asked for, per `Rollup.generation` (thread-safe)."""

    def __init__(self, *, max_hours: int) -> None:
        self.max_hours = max_hours
        self._lock = threading.Lock()
        self._generation: datetime | None = None
        self._series: OrderedDict[tuple[str, str], Hours] = OrderedDict()
        self._hours = 0
        self.hits = 0
        self.misses = 0

    @property
    def hours(self) -> int:
        """Hours held now."""
        return self._hours

    def series(
        self, conn: psycopg.Connection[Any], generation: datetime, device_id: str, metric: str
    ) -> Hours:
        """The rolled-up hours of (`device_id`, `metric`), read from `conn` on a miss."""
        key = (device_id, metric)
        with self._lock:
            if self._generation is None or generation > self._generation:
                self._series.clear()
                self._hours = 0
                self._generation = generation
            # a request that read an earlier run's stamp reads its series itself (below)
            found = self._series.get(key) if generation == self._generation else None
            if found is not None:
                self._series.move_to_end(key)
                self.hits += 1
                return found
            self.misses += 1
        hours = Hours.of_rows(
            conn.cursor(binary=True)
            .execute(
                "SELECT extract(epoch FROM bucket)::bigint, n, sum, min, max FROM readings_hourly_rollup"
                " WHERE device_id = %s AND metric = %s ORDER BY bucket",
                (device_id, metric),
            )
            .fetchall()
        )
        with self._lock:
            # only for the run this request saw being the newest one seen (rows read now are
            # never older than the stamp read before them)
            if generation == self._generation and key not in self._series and len(hours.at) <= self.max_hours:
                self._series[key] = hours
                self._hours += len(hours.at)
                while self._hours > self.max_hours:
                    _, old = self._series.popitem(last=False)
                    self._hours -= len(old.at)
        return hours


def tail_sql(rolled: Rolled) -> tuple[str, tuple[object, ...]]:
    """The device's community, then the hourly aggregates of its raw rows from the split on."""
    if rolled.split >= rolled.end:
        return "SELECT community_id FROM devices WHERE device_id = %s", (rolled.device_id,)
    return (
        "SELECT d.community_id, t.h, t.metric, t.n, t.sum, t.min, t.max FROM (SELECT 1) AS one"
        " LEFT JOIN devices d ON d.device_id = %s LEFT JOIN LATERAL ("
        " SELECT extract(epoch FROM date_bin(INTERVAL '1 hour', time, TIMESTAMPTZ '2000-01-01 00:00+00'))"
        "::bigint AS h, metric, count(*) AS n, sum(value) AS sum, min(value) AS min, max(value) AS max"
        " FROM readings"
        " WHERE device_id = %s AND metric = ANY(%s) AND time >= %s AND time < %s GROUP BY 1, 2 ORDER BY 1"
        ") AS t ON TRUE",
        (rolled.device_id, rolled.device_id, rolled.metrics, rolled.split, rolled.end),
    )


def tails(rows: Sequence[tuple[Any, ...]]) -> dict[str, Hours]:
    """`tail_sql`'s rows as hours per metric."""
    per: dict[str, list[tuple[Any, ...]]] = {}
    for row in rows:
        if len(row) > 1 and row[2] is not None:
            per.setdefault(row[2], []).append((row[1], *row[3:]))
    return {metric: Hours.of_rows(found) for metric, found in per.items()}


def compose(hours: Hours, rolled: Rolled) -> bytes:
    """The JSON series (``[{"time": ..., "value": ...}, ...]``) of `hours` in buckets of
    `rolled.width` from `rolled.origin`, combined by `rolled.agg` as the SQL path combines them."""
    if not len(hours.at):
        return b"[]"
    width = int(rolled.width.total_seconds())
    origin = int(rolled.origin.timestamp())
    index = (hours.at - origin) // width
    firsts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    n = np.add.reduceat(hours.n, firsts)
    agg = rolled.agg
    if agg == "avg":
        values = np.add.reduceat(hours.sum, firsts) / n
    elif agg == "sum":
        values = np.add.reduceat(hours.sum, firsts)
    elif agg == "min":
        values = np.minimum.reduceat(hours.min, firsts)
    elif agg == "max":
        values = np.maximum.reduceat(hours.max, firsts)
    else:  # count
        values = n.astype(np.float64)
    starts = (origin + index[firsts] * width).astype("datetime64[s]")
    times = np.datetime_as_string(starts, unit="s")
    points = zip(times.tolist(), values.tolist(), strict=True)
    return ("[" + ", ".join(f'{{"time": "{t}+00:00", "value": {v!r}}}' for t, v in points) + "]").encode()

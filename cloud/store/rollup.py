"""The service-maintained hourly rollup (``readings_hourly_rollup``), for servers without
continuous aggregates.

Each run, in one transaction:

- the watermark moves to the start of the current hour; hours between the old and the new
  watermark are computed from ``readings``;
- hours below the old watermark that received late readings are recomputed: they are found from
  ``ingested_batches`` (``min_time``/``max_time`` of batches ingested since the previous run,
  less a safety margin for transactions that were still open then);
- ``job_state`` records the new watermark and the run time.

Recomputing an hour replaces its rows (delete, insert), so a run is idempotent and a repeated or
overlapping run is harmless. ``readings_hourly`` (see `cloud.store.mode`) shows the rollup below
the watermark and aggregates raw readings above it.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, Final

import psycopg

_HOUR: Final = timedelta(hours=1)
_BIN: Final = "date_bin(INTERVAL '1 hour', {col}, TIMESTAMPTZ '2000-01-01 00:00+00')"


def hour_floor(ts: datetime) -> datetime:
    return ts.replace(minute=0, second=0, microsecond=0)


def refresh_rollup(conn: psycopg.Connection[Any], *, now: datetime, margin: timedelta) -> int:
    """Bring the rollup up to the start of `now`'s hour; returns the hours recomputed.

    Runs inside the caller's transaction.
    """
    new_wm = hour_floor(now)
    row = conn.execute("SELECT value, mark FROM job_state WHERE job = 'rollup' FOR UPDATE").fetchone()
    if row is None:
        bucket = _BIN.format(col="min(time)")
        first = conn.execute(f"SELECT {bucket} FROM readings").fetchone()  # noqa: S608 - constant
        old_wm: datetime = first[0] if first and first[0] is not None else new_wm
        late: list[datetime] = []
    else:
        old_wm, mark = row[0], row[1]
        late = [
            r[0]
            for r in conn.execute(
                f"SELECT DISTINCT h FROM ingested_batches b,"  # noqa: S608 - constant fragments
                f" generate_series({_BIN.format(col='b.min_time')},"
                f" least(b.max_time, %s::timestamptz - INTERVAL '1 microsecond'), INTERVAL '1 hour') AS h"
                f" WHERE b.ingested_at >= %s AND b.min_time < %s",
                (old_wm, mark - margin, old_wm),
            )
        ]
    hours = sorted(set(late))
    if old_wm < new_wm:
        h = old_wm
        while h < new_wm:
            hours.append(h)
            h += _HOUR
    if hours:
        conn.execute("DELETE FROM readings_hourly_rollup WHERE bucket = ANY(%s)", (hours,))
        conn.execute(
            "INSERT INTO readings_hourly_rollup (bucket, device_id, metric, n, sum, min, max)"  # noqa: S608
            f" SELECT {_BIN.format(col='r.time')}, r.device_id, r.metric,"
            " count(*), sum(r.value), min(r.value), max(r.value)"
            " FROM unnest(%s::timestamptz[]) AS h(start)"
            " JOIN readings r ON r.time >= h.start AND r.time < h.start + INTERVAL '1 hour'"
            " GROUP BY 1, 2, 3",
            (hours,),
        )
    conn.execute(
        "INSERT INTO job_state (job, value, mark) VALUES ('rollup', %s, %s)"
        " ON CONFLICT (job) DO UPDATE"
        " SET value = greatest(job_state.value, EXCLUDED.value), mark = EXCLUDED.mark",
        (new_wm, now),
    )
    return len(set(hours))

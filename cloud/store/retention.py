"""Service-side retention and pruning, for what the server does not do by itself.

- ``apache``: ``drop_chunks`` on ``readings`` and ``events`` (whole chunks, cheap), ``DELETE`` on
  the rollup table;
- ``postgres``: ``DELETE`` on ``readings``, ``events`` and the rollup;
- ``community``: the server's retention policies do all of that;
- every mode: forget reading ids and batch claims older than their de-duplication windows, dead
  letters older than the events' retention, and finished commands (with their audit trail) older
  than ``commands_days``.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import psycopg

from cloud.config import RetentionConfig
from cloud.store.mode import StoreMode


def enforce_retention(
    conn: psycopg.Connection[Any], *, mode: StoreMode, retention: RetentionConfig, now: datetime
) -> dict[str, int]:
    """Delete what is past its retention; returns rows (or chunks) removed per table.

    Runs inside the caller's transaction.
    """
    r = retention
    removed: dict[str, int] = {}
    readings_cutoff = now - timedelta(days=r.readings_days)
    events_cutoff = now - timedelta(days=r.events_days)
    if mode is StoreMode.APACHE:
        for table, cutoff in (("readings", readings_cutoff), ("events", events_cutoff)):
            rows = conn.execute(
                "SELECT count(*) FROM drop_chunks(%s::regclass, older_than => %s::timestamptz)",
                (table, cutoff),
            ).fetchone()
            removed[f"{table}_chunks"] = int(rows[0]) if rows else 0
    elif mode is StoreMode.POSTGRES:
        removed["readings"] = conn.execute(
            "DELETE FROM readings WHERE time < %s", (readings_cutoff,)
        ).rowcount
        removed["events"] = conn.execute("DELETE FROM events WHERE time < %s", (events_cutoff,)).rowcount
    if mode is not StoreMode.COMMUNITY:
        removed["readings_hourly_rollup"] = conn.execute(
            "DELETE FROM readings_hourly_rollup WHERE bucket < %s", (now - timedelta(days=r.rollup_days),)
        ).rowcount
    removed["reading_ids"] = conn.execute(
        "DELETE FROM reading_ids WHERE ingested_at < %s", (now - timedelta(hours=r.dedupe_reading_ids_hours),)
    ).rowcount
    removed["ingested_batches"] = conn.execute(
        "DELETE FROM ingested_batches WHERE ingested_at < %s", (now - timedelta(days=r.dedupe_batches_days),)
    ).rowcount
    removed["dead_letters"] = conn.execute(
        "DELETE FROM dead_letters WHERE received_at < %s", (events_cutoff,)
    ).rowcount
    removed.update(_finished_commands(conn, now - timedelta(days=r.commands_days)))
    return removed


_FINISHED = "c.state IN ('confirmed', 'failed', 'expired') AND c.updated_at < %s"


def _finished_commands(conn: psycopg.Connection[Any], cutoff: datetime) -> dict[str, int]:
    """Delete commands that ended before `cutoff`, their audit trail first. The trail is
    append-only (a trigger) except for this transaction (``linli.retention``, migration 0009)."""
    conn.execute("SELECT set_config('linli.retention', 'on', true)")
    try:
        audit = conn.execute(
            f"DELETE FROM command_audit a USING commands c WHERE a.command_id = c.command_id AND {_FINISHED}",  # noqa: S608 - a fixed condition
            (cutoff,),
        ).rowcount
        commands = conn.execute(f"DELETE FROM commands c WHERE {_FINISHED}", (cutoff,)).rowcount  # noqa: S608
    finally:
        conn.execute("SELECT set_config('linli.retention', 'off', true)")
    return {"command_audit": audit, "commands": commands}

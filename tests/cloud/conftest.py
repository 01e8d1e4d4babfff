"""Helpers for the cloud tests: envelopes built byte for byte from the documented wire format
(docs/edge.md), never with the edge's code, and migrated databases."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
import pytest

from cloud.store.migrate import migrate
from tests.conftest import PgServer

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


@dataclass
class R:
    """One reading, in the positional wire order."""

    device_id: str
    ts_us: int
    metrics: dict[str, int | float]
    events: list[str] = field(default_factory=list)
    device_type: str = "door_contact"
    profile: str = "aqara/mccgq11lm"
    reading_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    quality: list[str] = field(default_factory=list)
    device_ts_us: int | None = None

    def wire(self) -> list[Any]:
        out: list[Any] = [
            self.device_id,
            self.device_type,
            self.ts_us,
            self.ts_us + 1000,
            self.metrics,
            self.events,
            self.quality,
            self.profile,
            self.reading_id,
        ]
        if self.device_ts_us is not None:
            out.append(self.device_ts_us)
        return out


def envelope(
    readings: list[R],
    *,
    batch_seq: int,
    gateway_id: str = "gw1",
    community_id: str = "c1",
    v: int = 1,
    batch_class: str = "telemetry",
) -> bytes:
    return msgspec.msgpack.encode(
        {
            "v": v,
            "gateway_id": gateway_id,
            "community_id": community_id,
            "batch_seq": batch_seq,
            "class": batch_class,
            "created_at_us": T0_US,
            "counters": {"received": len(readings)},
            "readings": [r.wire() for r in readings],
        }
    )


def up_topic(community_id: str = "c1", gateway_id: str = "gw1") -> str:
    return f"linli/v1/{community_id}/{gateway_id}/up"


def door_readings(
    n: int, *, start_us: int = T0_US, devices: int = 10, prefix: str = "d", step_us: int = 1_000_000
) -> list[R]:
    return [
        R(
            f"{prefix}{i % devices:04d}",
            start_us + i * step_us,
            {"contact_open": i % 2, "battery_pct": 90 - (i % 7), "link_quality": 120.5},
        )
        for i in range(n)
    ]


@pytest.fixture
def migrated_url(database_url: str) -> str:
    with psycopg.connect(database_url, autocommit=True) as conn:
        migrate(conn)
    return database_url


@pytest.fixture
def plain_url(pg_server: PgServer) -> Iterator[str]:
    """A database WITHOUT timescaledb, migrated."""
    name = f"plain_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_server.admin_dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0'.encode())
    url = pg_server.dsn(name)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, timescaledb=False)
    yield url
    pg_server.drop_database(name)


def count(url: str, query: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return int(row[0])


def named(url: str, application_name: str) -> str:
    """`url` with an application name, to find its session in ``pg_stat_activity``."""
    return f"{url}{'&' if '?' in url else '?'}application_name={application_name}"


def session(conn: psycopg.Connection[Any], application_name: str) -> tuple[int, str | None, list[int]]:
    """(pid, wait event type, pids blocking it) of the session so named, or (0, None, [])."""
    row = conn.execute(
        "SELECT pid, wait_event_type, pg_blocking_pids(pid) FROM pg_stat_activity"
        " WHERE application_name = %s",
        (application_name,),
    ).fetchone()
    return (int(row[0]), row[1], list(row[2])) if row else (0, None, [])


def wait_blocked(
    conn: psycopg.Connection[Any], application_name: str, by: int, timeout: float = 20.0
) -> tuple[int, str | None, list[int]]:
    """Poll until the named session waits on a lock `by` holds or waits for (or `timeout`);
    returns its `session`.

    The lock manager (``pg_blocking_pids``) can show the wait a moment before the backend
    publishes its wait event, so both must agree before the wait counts as seen."""
    deadline = time.monotonic() + timeout

    def waiting(state: tuple[int, str | None, list[int]]) -> bool:
        return state[1] == "Lock" and by in state[2]

    while not waiting(state := session(conn, application_name)) and time.monotonic() < deadline:
        time.sleep(0.02)
    return state

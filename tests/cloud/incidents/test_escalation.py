"""The escalation ladder and auto-close with an injected clock, against a real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import psycopg
import pytest

from cloud.incidents import transitions as tr
from cloud.incidents.escalation import auto_close_due, next_due, step_due
from cloud.incidents.record import Context
from tests.cloud.incidents.conftest import T0, fire

pytestmark = pytest.mark.integration


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def outbox(conn: psycopg.Connection[Any], since: int = 0) -> list[tuple[str, str, tuple[str, ...]]]:
    """(reason, channel, recipients' ids or names) of the notifications after `since`, in order."""
    return [
        (r[0], r[1], tuple(p.get("staff_id", p.get("name")) for p in r[2]))
        for r in conn.execute(
            "SELECT reason, channel, recipients FROM notify_outbox WHERE notification_id > %s"
            " ORDER BY notification_id",
            (since,),
        )
    ]


def last_id(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(max(notification_id), 0) FROM notify_outbox").fetchone()
    assert row is not None
    return int(row[0])


def test_the_full_ladder_escalates_reminds_and_stops_on_accept(
    migrated_url: str, conn: Any, ctx: Context
) -> None:
    iid = fire(migrated_url)
    steps = step_due(conn, ctx, now=at(0))
    assert [(s.action, s.level) for s in steps] == [("escalate", 1)]
    # an SOS: the first level, the resident's family and the community's doctor, at once
    assert outbox(conn) == [
        ("escalate", "grid", ("w-zhang",)),
        ("family", "family-sms", ("李娜",)),
        ("doctor", "doctor-mail", ("d-chen",)),
    ]
    assert next_due(conn) == at(120)
    mark = last_id(conn)
    assert step_due(conn, ctx, now=at(119)) == []  # not before the deadline
    assert [s.level for s in step_due(conn, ctx, now=at(120))] == [2]
    assert outbox(conn, mark) == [("escalate", "committee", ("k-li",)), ("remind", "grid", ("w-zhang",))]
    mark = last_id(conn)
    assert [s.level for s in step_due(conn, ctx, now=at(240))] == [3]
    assert [s.level for s in step_due(conn, ctx, now=at(360))] == [4]
    assert outbox(conn, mark)[-4:] == [
        ("escalate", "district", ("q-sun",)),
        ("remind", "grid", ("w-zhang",)),
        ("remind", "committee", ("k-li",)),
        ("remind", "street", ("s-wang",)),
    ]
    mark = last_id(conn)
    # at the top: reminded at its interval (its deadline by default) until someone accepts
    assert [(s.action, s.level) for s in step_due(conn, ctx, now=at(480))] == [("remind", 4)]
    assert [(s.action, s.level) for s in step_due(conn, ctx, now=at(600))] == [("remind", 4)]
    assert outbox(conn, mark) == [("remind", "district", ("q-sun",))] * 2
    mark = last_id(conn)
    tr.accept(conn, iid, actor="s-wang", ctx=ctx, clock=lambda: at(610))
    assert next_due(conn) is None
    assert step_due(conn, ctx, now=at(10_000)) == []
    # the levels told learn that it is taken, but the accepter's own (s-wang, street)
    assert outbox(conn, mark) == [
        ("accepted", "grid", ("w-zhang",)),
        ("accepted", "committee", ("k-li",)),
        ("accepted", "district", ("q-sun",)),
    ]
    trail = conn.execute(
        "SELECT action, detail->>'level' FROM incident_audit WHERE incident_id = %s ORDER BY audit_id", (iid,)
    ).fetchall()
    assert trail == [
        ("escalate", "1"),
        ("escalate", "2"),
        ("escalate", "3"),
        ("escalate", "4"),
        ("remind", "4"),
        ("remind", "4"),
        ("accept", None),
    ]


def test_a_severity_without_deadline_tells_the_first_level_only(
    migrated_url: str, conn: Any, ctx: Context
) -> None:
    fire(
        migrated_url, rule="lamp_failure", subject="lamp-1", severity="info", latched=False, resident_id=None
    )
    assert [s.level for s in step_due(conn, ctx, now=at(0))] == [1]
    assert outbox(conn) == [("escalate", "grid", ("w-zhang",))]  # no family, no doctor: not an SOS
    assert next_due(conn) is None
    assert step_due(conn, ctx, now=at(86_400)) == []


def test_two_escalators_take_each_step_once(migrated_url: str, ctx: Context) -> None:
    for i in range(40):
        fire(migrated_url, subject=f"sos-{i}")
    barrier = threading.Barrier(2)
    taken: list[int] = []

    def run() -> None:
        with psycopg.connect(migrated_url, autocommit=True) as c:
            barrier.wait()
            taken.extend(s.incident_id for s in step_due(c, ctx, now=at(0)))

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(taken) == sorted(set(taken))
    assert len(taken) == 40
    with psycopg.connect(migrated_url) as c:
        assert c.execute("SELECT count(*) FROM notify_outbox WHERE reason = 'escalate'").fetchone() == (40,)


def test_auto_close_only_cleared_unlatched_unaccepted_after_the_quiet_time(
    migrated_url: str, conn: Any, ctx: Context
) -> None:
    quiet = fire(migrated_url, rule="door_left_open", subject="door-1", severity="major", latched=False)
    fire(migrated_url, rule="door_left_open", subject="door-1", severity="major", latched=False, kind="clear")
    taken = fire(migrated_url, rule="door_left_open", subject="door-2", severity="major", latched=False)
    fire(migrated_url, rule="door_left_open", subject="door-2", severity="major", latched=False, kind="clear")
    tr.accept(conn, taken, actor="w-zhang", ctx=ctx)
    still = fire(migrated_url, rule="door_left_open", subject="door-3", severity="major", latched=False)
    sos = fire(migrated_url, subject="sos-9")
    conn.execute("UPDATE incidents SET cleared_at = %s WHERE incident_id = %s", (T0, sos))  # even if cleared
    assert auto_close_due(conn, ctx, now=at(599)) == []
    assert auto_close_due(conn, ctx, now=at(600)) == [quiet]
    states = dict(conn.execute("SELECT incident_id, state FROM incidents").fetchall())
    assert (states[quiet], states[taken], states[still], states[sos]) == (
        "closed",
        "accepted",
        "detected",
        "detected",
    )
    assert conn.execute(
        "SELECT actor, action, to_state FROM incident_audit WHERE incident_id = %s", (quiet,)
    ).fetchall() == [("system", "auto_close", "closed")]


def test_a_cleared_incident_stops_climbing_a_latched_one_does_not(
    migrated_url: str, conn: Any, ctx: Context
) -> None:
    door = fire(migrated_url, rule="door_left_open", subject="door-1", severity="critical", latched=False)
    sos = fire(migrated_url, subject="sos-2")
    assert sorted(s.incident_id for s in step_due(conn, ctx, now=at(0))) == sorted([door, sos])
    fire(
        migrated_url,
        rule="door_left_open",
        subject="door-1",
        severity="critical",
        latched=False,
        kind="clear",
    )
    conn.execute("UPDATE incidents SET cleared_at = %s WHERE incident_id = %s", (T0, sos))
    assert [s.incident_id for s in step_due(conn, ctx, now=at(120))] == [sos]
    levels = dict(conn.execute("SELECT incident_id, escalation_level FROM incidents").fetchall())
    assert (levels[door], levels[sos]) == (1, 2)

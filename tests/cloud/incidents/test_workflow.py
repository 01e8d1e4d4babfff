"""The workflow against a real PostgreSQL: every transition, who may make it, what it requires,
the audit trail written with it, and refusals that change nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import pytest

from cloud.errors import IncidentNotFound, TransitionRefused
from cloud.incidents import transitions as tr
from cloud.incidents.record import Context
from cloud.incidents.workflow import STATES, TRANSITIONS, allowed_from
from tests.cloud.incidents.conftest import T0, fire

pytestmark = pytest.mark.integration


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> Any:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def conn(migrated_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(migrated_url, autocommit=True) as c:
        yield c


def trail(conn: psycopg.Connection[Any], incident_id: int) -> list[tuple[str, str, str, str, str]]:
    return [
        (r[0], r[1], r[2], r[3], r[4])
        for r in conn.execute(
            "SELECT actor, action, from_state, to_state, note FROM incident_audit"
            " WHERE incident_id = %s AND actor <> 'system' ORDER BY audit_id",
            (incident_id,),
        )
    ]


def test_every_state_is_reachable_and_every_transition_names_roles() -> None:
    targets = {t.target for t in TRANSITIONS.values()} | {"detected"}
    assert targets == set(STATES)
    assert all(t.roles for t in TRANSITIONS.values())
    assert allowed_from("rated") == ()
    assert allowed_from("rejected") == ()


def test_the_whole_loop_with_its_audit_trail_and_sla(migrated_url: str, conn: Any, ctx: Context) -> None:
    iid = fire(migrated_url)
    clock = Clock()
    clock.advance(60)
    assert tr.accept(conn, iid, actor="w-zhang", ctx=ctx, clock=clock).state == "accepted"
    clock.advance(30)
    after = tr.dispatch(conn, iid, actor="k-li", handler="w-zhao", note="上门查看", ctx=ctx, clock=clock)
    assert (after.state, after.handler) == ("dispatched", "w-zhao")
    clock.advance(600)
    tr.handle(conn, iid, actor="w-zhao", note="老人摔倒，已送医", ctx=ctx, clock=clock)
    clock.advance(60)
    tr.reopen(conn, iid, actor="k-li", note="家属反映未联系", ctx=ctx, clock=clock)
    clock.advance(60)
    tr.handle(conn, iid, actor="w-zhao", note="已联系家属", ctx=ctx, clock=clock)
    tr.verify(conn, iid, actor="k-li", ctx=ctx, clock=clock)
    clock.advance(3000)
    tr.close(conn, iid, actor="k-li", ctx=ctx, clock=clock)
    assert tr.assess(conn, iid, actor="k-li", ctx=ctx, clock=clock).state == "assessed"
    final = tr.rate(conn, iid, actor="k-li", score=4, comment="响应及时", ctx=ctx, clock=clock)
    assert final.state == "rated"
    assert final.closed_at is not None
    assert trail(conn, iid) == [
        ("w-zhang", "accept", "detected", "accepted", ""),
        ("k-li", "dispatch", "accepted", "dispatched", "上门查看"),
        ("w-zhao", "handle", "dispatched", "handled", "老人摔倒，已送医"),
        ("k-li", "reopen", "handled", "dispatched", "家属反映未联系"),
        ("w-zhao", "handle", "dispatched", "handled", "已联系家属"),
        ("k-li", "verify", "handled", "verified", ""),
        ("k-li", "close", "verified", "closed", ""),
        ("k-li", "assess", "closed", "assessed", ""),
        ("k-li", "rate", "assessed", "rated", ""),
    ]
    (sla, rating, comment) = conn.execute(
        "SELECT sla, rating, rating_comment FROM incidents WHERE incident_id = %s", (iid,)
    ).fetchone()
    created = conn.execute("SELECT created_at FROM incidents WHERE incident_id = %s", (iid,)).fetchone()[0]
    # created_at is the database's wall clock; the clock here starts at T0: figures are differences
    assert sla["to_accept_s"] == pytest.approx(
        (T0 + timedelta(seconds=60) - created).total_seconds(), abs=1e-3
    )
    assert sla["accept_target_s"] == 120
    assert sla["close_target_s"] == 4 * 3600
    assert (rating, comment) == (4, "响应及时")
    # the dispatch told the handler: she is on no ladder level and has no channel of her own, so
    # through the first level's group, mentioning her
    rows = conn.execute(
        "SELECT reason, channel, recipients FROM notify_outbox"
        " WHERE incident_id = %s AND reason = 'dispatch'",
        (iid,),
    ).fetchall()
    assert [(r[0], r[1], [p["staff_id"] for p in r[2]]) for r in rows] == [("dispatch", "grid", ["w-zhao"])]


def test_an_invalid_transition_names_the_state_and_the_allowed_ones(
    migrated_url: str, conn: Any, ctx: Context
) -> None:
    iid = fire(migrated_url)
    with pytest.raises(TransitionRefused) as err:
        tr.close(conn, iid, actor="k-li", ctx=ctx)
    assert err.value.state == "detected"
    assert err.value.allowed == ("accept", "reject")
    assert "the incident is detected; allowed now: accept, reject" in str(err.value)
    assert trail(conn, iid) == []


@pytest.mark.parametrize(
    ("action", "kw", "expected"),
    [
        ("accept", {"actor": "nobody"}, "'nobody' is not a staff member"),
        ("accept", {"actor": "w-other"}, "'w-other' does not serve community c01"),
        ("reject", {"actor": "w-zhang"}, "reject needs a note"),
        ("reject", {"actor": "d-chen", "note": "误报"}, "reject needs one of the roles"),
    ],
)
def test_who_may_and_what_is_required(
    migrated_url: str, conn: Any, ctx: Context, action: str, kw: dict[str, Any], expected: str
) -> None:
    iid = fire(migrated_url)
    with pytest.raises(TransitionRefused, match=expected):
        tr.apply(conn, iid, action, ctx=ctx, **kw)  # type: ignore[arg-type]
    assert conn.execute("SELECT state, version FROM incidents WHERE incident_id = %s", (iid,)).fetchone() == (
        "detected",
        0,
    )


def test_dispatch_handle_and_rate_requirements(migrated_url: str, conn: Any, ctx: Context) -> None:
    iid = fire(migrated_url)
    tr.accept(conn, iid, actor="d-chen", ctx=ctx)  # a doctor may take an SOS
    with pytest.raises(TransitionRefused, match="needs a handler"):
        tr.dispatch(conn, iid, actor="k-li", ctx=ctx)
    with pytest.raises(TransitionRefused, match="'w-other' does not serve"):
        tr.dispatch(conn, iid, actor="k-li", handler="w-other", ctx=ctx)
    tr.dispatch(conn, iid, actor="k-li", handler="w-zhao", ctx=ctx)
    with pytest.raises(TransitionRefused, match=r"only the handler \(w-zhao\) or a supervisor"):
        tr.handle(conn, iid, actor="w-zhang", note="x", ctx=ctx)
    tr.handle(conn, iid, actor="k-li", note="居委会代办", ctx=ctx)  # a supervisor may act for the handler
    tr.verify(conn, iid, actor="s-wang", ctx=ctx)
    tr.close(conn, iid, actor="s-wang", ctx=ctx)
    tr.assess(conn, iid, actor="s-wang", ctx=ctx)
    for score, comment in ((0, "x"), (6, "x"), (None, "x"), (3, " ")):
        with pytest.raises(TransitionRefused, match=r"score from 1 to 5|needs a comment"):
            tr.rate(conn, iid, actor="k-li", score=score, comment=comment, ctx=ctx)
    tr.rate(conn, iid, actor="k-li", score=5, comment="满意", ctx=ctx)
    with pytest.raises(TransitionRefused, match="allowed now: nothing"):
        tr.rate(conn, iid, actor="k-li", score=5, comment="again", ctx=ctx)


def test_reject_closes_it_and_frees_the_rule_for_a_new_incident(
    migrated_url: str, conn: Any, ctx: Context
) -> None:
    iid = fire(migrated_url)
    tr.reject(conn, iid, actor="w-zhang", note="老人误按", ctx=ctx)
    state, reason, closed = conn.execute(
        "SELECT state, reject_reason, closed_at FROM incidents WHERE incident_id = %s", (iid,)
    ).fetchone()
    assert (state, reason) == ("rejected", "老人误按")
    assert closed is not None
    assert fire(migrated_url) != iid  # the next press is a new incident


def test_unknown_incident(conn: Any, ctx: Context) -> None:
    with pytest.raises(IncidentNotFound):
        tr.accept(conn, 999, actor="w-zhang", ctx=ctx)


def test_the_audit_trail_is_append_only(migrated_url: str, conn: Any, ctx: Context) -> None:
    iid = fire(migrated_url)
    tr.accept(conn, iid, actor="w-zhang", ctx=ctx)
    for statement in ("UPDATE incident_audit SET note = 'x'", "DELETE FROM incident_audit"):
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(statement)
    assert len(trail(conn, iid)) == 1

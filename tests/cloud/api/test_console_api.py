"""What the console needs from the API: the actions the caller may make now, the staff an
incident may be dispatched to, a community's site plan in columns, and the loop's figures over a
period, each scoped to the caller's communities."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from tests.cloud.api.conftest import Clock, login
from tests.cloud.incidents.conftest import fire

pytestmark = [pytest.mark.integration]


@pytest.fixture
def as_(client: httpx.Client, accounts: Callable[..., None]) -> Callable[[str], dict[str, str]]:
    accounts("w-zhang", "w-zhao", "k-li", "w-other", "q-sun")
    tokens: dict[str, dict[str, str]] = {}

    def headers(staff_id: str) -> dict[str, str]:
        if staff_id not in tokens:
            tokens[staff_id] = login(client, staff_id)
        return tokens[staff_id]

    return headers


def _act(client: httpx.Client, headers: dict[str, str], incident: int, **body: Any) -> dict[str, Any]:
    r = client.post(f"/api/v1/incidents/{incident}/transitions", headers=headers, json=body)
    assert r.status_code == 200, r.status_code
    answer: dict[str, Any] = r.json()
    return answer


def test_may_lists_what_the_callers_role_allows_now(
    client: httpx.Client, migrated_url: str, as_: Callable[[str], dict[str, str]]
) -> None:
    sos = fire(migrated_url, subject="sos-1")

    def may(staff_id: str) -> list[str]:
        body: dict[str, Any] = client.get(f"/api/v1/incidents/{sos}", headers=as_(staff_id)).json()
        return list(body["may"])

    assert may("w-zhang") == ["accept", "reject"]
    assert may("k-li") == ["accept", "reject"]
    _act(client, as_("w-zhang"), sos, action="accept")
    assert may("w-zhang") == ["dispatch", "reject"]
    _act(client, as_("k-li"), sos, action="dispatch", handler="w-zhao")
    assert may("w-zhao") == ["dispatch", "handle", "reject"]  # the handler
    assert may("w-zhang") == ["dispatch", "reject"]  # another grid worker may not handle it
    assert may("k-li") == ["dispatch", "handle", "reject"]  # a supervisor may
    _act(client, as_("w-zhao"), sos, action="handle", note="已上门")
    assert may("w-zhao") == []  # verifying is for supervisors
    assert may("k-li") == ["verify", "reopen"]


def test_staff_and_plan_of_a_community(
    client: httpx.Client, migrated_url: str, as_: Callable[[str], dict[str, str]]
) -> None:
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, building, unit,"
            " room, lat, lon, status) VALUES"
            " ('sos-1', 'sos_button', 'p', 'c01', 'gw1', '3', '2', '301', 31.2, 121.4, 'online'),"
            " ('door-1', 'door_contact', 'p', 'c01', 'gw1', '1', '1', '101', NULL, NULL, 'offline'),"
            " ('cover-9', 'manhole_cover', 'p', 'c02', 'gw2', NULL, NULL, NULL, NULL, NULL, 'online')"
        )
    fire(migrated_url, subject="sos-1")
    fire(migrated_url, rule="door_silent", subject="sos-1", severity="major", latched=False)
    plan = client.get("/api/v1/communities/c01/plan", headers=as_("w-zhang"))
    assert plan.status_code == 200
    body = plan.json()
    assert body["severities"] == ["critical", "major", "minor", "info"]
    assert body["devices"] == {
        "device_id": ["door-1", "sos-1"],
        "device_type": ["door_contact", "sos_button"],
        "building": ["1", "3"],
        "unit": ["1", "2"],
        "lat": [None, 31.2],
        "lon": [None, 121.4],
        "status": ["offline", "online"],
        "open_incidents": [0, 2],
        "worst": [None, 0],
    }
    assert "room" not in body["devices"]
    assert client.get("/api/v1/communities/c02/plan", headers=as_("w-zhang")).status_code == 404
    assert client.get("/api/v1/communities/c02/plan", headers=as_("q-sun")).json()["devices"][
        "device_id"
    ] == ["cover-9"]

    staff = client.get("/api/v1/communities/c01/staff", headers=as_("w-zhang")).json()["items"]
    assert [s["staff_id"] for s in staff] == [
        "a-root",
        "d-chen",
        "k-li",
        "q-sun",
        "s-wang",
        "w-zhang",
        "w-zhao",
    ]
    assert staff[2] == {"staff_id": "k-li", "name": "李强", "roles": ["committee"]}
    assert client.get("/api/v1/communities/c02/staff", headers=as_("w-zhang")).status_code == 404
    assert client.get("/api/v1/communities/nowhere/staff", headers=as_("q-sun")).status_code == 404


def test_performance_over_a_period(
    client: httpx.Client, migrated_url: str, as_: Callable[[str], dict[str, str]], clock: Clock
) -> None:
    sos = fire(migrated_url, subject="sos-1")
    fire(migrated_url, subject="sos-9", community_id="c02", resident_id="c02-r0001")
    clock.advance(-3600)  # the work happens in the past (a token issued in the future is refused)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        row = conn.execute(
            "UPDATE incidents SET created_at = %s WHERE incident_id = %s RETURNING created_at",
            (clock.now, sos),
        ).fetchone()
    assert row is not None
    for seconds, who, action, extra in (
        (40, "w-zhang", "accept", {}),
        (20, "k-li", "dispatch", {"handler": "w-zhao"}),
        (600, "w-zhao", "handle", {"note": "已上门"}),
        (60, "k-li", "verify", {}),
        (60, "k-li", "close", {}),
        (10, "k-li", "assess", {}),
        (10, "k-li", "rate", {"score": 4, "comment": "及时"}),
    ):
        clock.advance(seconds)
        _act(client, as_(who), sos, action=action, **extra)
    end = datetime.now(UTC) + timedelta(minutes=1)  # the c02 incident was created at the wall clock's now
    period = {"start": (row[0] - timedelta(hours=1)).isoformat(), "end": end.isoformat()}
    r = client.get("/api/v1/performance", headers=as_("k-li"), params=period)
    assert r.status_code == 200, r.status_code
    body = r.json()
    assert [c["community_id"] for c in body["communities"]] == ["c01"]  # c02 is not k-li's
    c01 = body["communities"][0]
    assert (c01["incidents"], c01["accepted"], c01["handled"], c01["satisfaction"]) == (1, 1, 1, 4.0)
    assert c01["to_accept_median_s"] == pytest.approx(40, abs=0.5)
    assert c01["to_handle_median_s"] == pytest.approx(660, abs=0.5)
    assert c01["to_close_median_s"] == pytest.approx(780, abs=0.5)
    staff = {s["staff_id"]: s for s in body["staff"]}
    assert (staff["w-zhang"]["accepted"], staff["w-zhao"]["handled"], staff["w-zhao"]["satisfaction"]) == (
        1,
        1,
        4.0,
    )
    district = client.get("/api/v1/performance", headers=as_("q-sun"), params=period).json()
    assert [c["community_id"] for c in district["communities"]] == ["c01", "c02"]
    backwards = {"start": period["end"], "end": period["start"]}
    assert client.get("/api/v1/performance", headers=as_("q-sun"), params=backwards).status_code == 422
    decade = {"start": "2016-01-01T00:00:00Z", "end": "2026-01-01T00:00:00Z"}
    assert client.get("/api/v1/performance", headers=as_("q-sun"), params=decade).status_code == 422

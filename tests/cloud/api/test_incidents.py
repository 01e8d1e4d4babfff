"""Incidents through the API: the list and its filters, one incident with its trail and
notifications (masked per role), transitions through the workflow's own functions (refusals are
409 and change nothing), and the live feed (SSE) scoped to the caller's communities."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cloud.config import CloudSettings, build_settings
from tests.cloud.api.conftest import login
from tests.cloud.incidents.conftest import fire

pytestmark = [pytest.mark.integration]


@pytest.fixture
def api_settings(migrated_url: str, tmp_path: Path) -> CloudSettings:
    """The live feed polls every 20 ms here (0.5 s by default)."""
    return build_settings(
        {
            "database_url": migrated_url,
            "api": {"token_key_file": str(tmp_path / "api-token.key"), "live_poll_s": 0.02},
        }
    )


@pytest.fixture
def as_(client: httpx.Client, accounts: Callable[..., None]) -> Callable[[str], dict[str, str]]:
    accounts("w-zhang", "k-li", "s-wang", "w-other", "q-sun")
    tokens: dict[str, dict[str, str]] = {}

    def headers(staff_id: str) -> dict[str, str]:
        if staff_id not in tokens:
            tokens[staff_id] = login(client, staff_id)
        return tokens[staff_id]

    return headers


@pytest.fixture
def incidents(migrated_url: str) -> dict[str, int]:
    return {
        "sos": fire(migrated_url, subject="sos-1"),
        "door": fire(migrated_url, rule="door_silent", subject="door-1", severity="major", latched=False),
        "c02": fire(migrated_url, subject="sos-9", community_id="c02", resident_id="c02-r0001"),
    }


def _ids(body: dict[str, Any]) -> list[int]:
    return [i["incident_id"] for i in body["items"]]


def _act(client: httpx.Client, headers: dict[str, str], incident: int, **body: Any) -> httpx.Response:
    return client.post(f"/api/v1/incidents/{incident}/transitions", headers=headers, json=body)


def test_list_filters_and_pages(
    client: httpx.Client, incidents: dict[str, int], as_: Callable[[str], dict[str, str]]
) -> None:
    worker = as_("w-zhang")
    assert _ids(client.get("/api/v1/incidents", headers=worker).json()) == [
        incidents["door"],
        incidents["sos"],
    ]
    assert sorted(_ids(client.get("/api/v1/incidents", headers=as_("q-sun")).json())) == sorted(
        incidents.values()
    )
    assert _ids(client.get("/api/v1/incidents", headers=as_("w-other")).json()) == [incidents["c02"]]
    for params, expected in (
        ({"severity": "critical"}, [incidents["sos"]]),
        ({"rule": "door_silent"}, [incidents["door"]]),
        ({"state": ["accepted", "detected"]}, [incidents["door"], incidents["sos"]]),
        ({"state": "closed"}, []),
        ({"open": "false"}, []),
        ({"community_id": "c02"}, []),  # not the worker's: nothing, not an error
        ({"device_id": "sos-1"}, [incidents["sos"]]),
    ):
        r = client.get("/api/v1/incidents", headers=worker, params=params)
        assert r.status_code == 200, r.text
        assert _ids(r.json()) == expected, params
    first = client.get("/api/v1/incidents", headers=as_("q-sun"), params={"limit": 2}).json()
    second = client.get(
        "/api/v1/incidents", headers=as_("q-sun"), params={"limit": 2, "after": first["next"]}
    ).json()
    assert sorted(_ids(first) + _ids(second)) == sorted(incidents.values())
    assert second["next"] is None
    item = client.get("/api/v1/incidents", headers=as_("s-wang"), params={"device_id": "sos-1"}).json()[
        "items"
    ][0]
    assert item["resident_id"] == "c0*******"  # street offices see no personal data
    assert item["place"]["room"] == "4**"
    assert item["allowed"] == ["accept", "reject"]


def test_the_workflow_through_the_api(
    client: httpx.Client, incidents: dict[str, int], as_: Callable[[str], dict[str, str]], migrated_url: str
) -> None:
    sos = incidents["sos"]
    accepted = _act(client, as_("w-zhang"), sos, action="accept", version=0)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["state"] == "accepted"
    assert accepted.json()["version"] == 1
    stale = _act(client, as_("k-li"), sos, action="dispatch", handler="w-zhang", version=0)
    assert stale.status_code == 409
    assert "changed since version 0" in stale.json()["detail"]
    dispatched = _act(
        client, as_("k-li"), sos, action="dispatch", handler="w-zhang", note="上门查看", version=1
    )
    assert dispatched.status_code == 200, dispatched.text
    refused = _act(client, as_("w-zhang"), sos, action="handle")  # a note is required
    assert refused.status_code == 409
    assert refused.json()["state"] == "dispatched"
    assert refused.json()["allowed"] == ["dispatch", "handle", "reject"]
    assert "note" in refused.json()["reason"]
    assert _act(client, as_("w-other"), sos, action="handle", note="x").status_code == 404
    assert _act(client, as_("w-zhang"), sos, action="fly").status_code == 422
    assert _act(client, as_("w-zhang"), sos, action="handle", note="ok", extra=1).status_code == 422
    handled = _act(client, as_("w-zhang"), sos, action="handle", note="老人摔倒, 已送医")
    assert handled.json()["state"] == "handled"
    assert handled.json()["handled_at"] is not None
    assert [(a["action"], a["actor"]) for a in handled.json()["audit"]] == [
        ("accept", "w-zhang"),
        ("dispatch", "k-li"),
        ("handle", "w-zhang"),
    ]
    with psycopg.connect(migrated_url) as conn:
        row = conn.execute("SELECT state, version FROM incidents WHERE incident_id = %s", (sos,)).fetchone()
    assert row == ("handled", 3)  # the refusals changed nothing

    shown = client.get(f"/api/v1/incidents/{sos}", headers=as_("k-li")).json()
    dispatch = [n for n in shown["notifications"] if n["reason"] == "dispatch"]
    assert len(dispatch) == 1
    assert dispatch[0]["recipients"][0]["mobile"] == "13800000001"
    assert shown["contacts"] == [
        {"name": "李娜", "relation": "family", "mobile": "13900000009", "email": None}
    ]
    masked = client.get(f"/api/v1/incidents/{sos}", headers=as_("s-wang")).json()
    assert masked["contacts"] == [
        {"name": "李*", "relation": "family", "mobile": "139****0009", "email": None}
    ]
    assert masked["notifications"][-1]["recipients"][0]["mobile"] == "138****0001"
    assert client.get(f"/api/v1/incidents/{incidents['c02']}", headers=as_("k-li")).status_code == 404
    with psycopg.connect(migrated_url) as conn:
        readers = {
            r[0] for r in conn.execute("SELECT principal FROM api_pii_audit WHERE subject = %s", (str(sos),))
        }
    assert readers == {"w-zhang", "k-li"}  # the answers to their transitions and k-li's read; not s-wang


class Feed:
    """Server-Sent Events read from a streamed response, one event at a time."""

    def __init__(self, response: httpx.Response) -> None:
        self.lines = response.iter_lines()

    def next(self) -> dict[str, Any]:
        event: dict[str, Any] = {}
        for line in self.lines:
            if line == "":
                if "event" in event:
                    return event
                event = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(": ")
            event[name] = value
        raise AssertionError("the feed ended")


@pytest.fixture
def feed(client: httpx.Client) -> Callable[..., Any]:
    import contextlib
    import json

    @contextlib.contextmanager
    def open_feed(
        headers: dict[str, str], last_event_id: str | None = None
    ) -> Iterator[Callable[[], dict[str, Any]]]:
        extra = {"Last-Event-ID": last_event_id} if last_event_id else {}
        with client.stream("GET", "/api/v1/live", headers=headers | extra | {"Accept-Encoding": "gzip"}) as r:
            assert r.status_code == 200
            assert r.headers["content-type"].startswith("text/event-stream")
            assert "content-encoding" not in r.headers  # never compressed: events must not wait in a buffer
            events = Feed(r)

            def read() -> dict[str, Any]:
                event = events.next()
                event["data"] = json.loads(event["data"])
                return event

            ready = read()
            assert ready["event"] == "ready"
            yield read

    return open_feed


def test_the_live_feed_is_scoped_and_resumable(
    client: httpx.Client, feed: Callable[..., Any], as_: Callable[[str], dict[str, str]], migrated_url: str
) -> None:
    with feed(as_("w-zhang")) as read:
        sos = fire(migrated_url, subject="sos-1")
        fire(migrated_url, subject="sos-9", community_id="c02", resident_id="c02-r0001")  # not c01's
        new = read()
        assert new["event"] == "incident"
        assert new["data"]["incident_id"] == sos
        assert new["data"]["resident_id"] == "c01-r0007"
        assert _act(client, as_("k-li"), sos, action="accept").status_code == 200
        change = read()
        assert change["event"] == "change"
        assert (change["data"]["action"], change["data"]["actor"]) == ("accept", "k-li")
        assert change["data"]["incident"]["state"] == "accepted"
        position = change["id"]
    # missed while away: a dispatch, and an incident of another community that is not shown
    fire(migrated_url, rule="other", subject="sos-8", community_id="c02", resident_id=None)
    assert _act(client, as_("k-li"), sos, action="dispatch", handler="w-zhang").status_code == 200
    with feed(as_("w-zhang"), last_event_id=position) as read:
        missed = read()
        assert (missed["event"], missed["data"]["action"]) == ("change", "dispatch")
    with feed(as_("s-wang"), last_event_id="0.0") as read:
        seen = [read() for _ in range(5)]  # every incident (all communities) and both changes
        assert [e["event"] for e in seen] == ["incident", "incident", "incident", "change", "change"]
        assert seen[0]["data"]["resident_id"] == "c0*******"
    key_holder = client.get("/api/v1/live", headers={"Authorization": "Bearer nope"})
    assert key_holder.status_code == 401


def test_the_live_feed_sends_a_change_that_committed_after_a_later_one(
    feed: Callable[..., Any], as_: Callable[[str], dict[str, str]], migrated_url: str
) -> None:
    insert = (
        "INSERT INTO incident_audit (incident_id, at, actor, actor_role, action, from_state, to_state)"
        " VALUES (%s, now(), 'k-li', 'committee', %s, 'detected', 'detected') RETURNING audit_id"
    )
    with feed(as_("w-zhang")) as read:
        sos = fire(migrated_url, subject="sos-1")
        assert read()["event"] == "incident"
        with psycopg.connect(migrated_url) as slow, psycopg.connect(migrated_url, autocommit=True) as quick:
            early = slow.execute(insert, (sos, "early")).fetchone()  # takes its id, commits later
            late = quick.execute(insert, (sos, "late")).fetchone()
            assert early is not None
            assert late is not None
            assert early[0] < late[0]
            first = read()
            assert (first["event"], first["data"]["audit_id"]) == ("change", late[0])
            slow.commit()
            second = read()
            assert (second["event"], second["data"]["audit_id"]) == ("change", early[0])

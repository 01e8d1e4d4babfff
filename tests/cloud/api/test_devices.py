"""Communities, gateways, devices and events through the API: filters, pages, latest values,
masking and the personal data audit."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest
from psycopg.types.json import Jsonb

from tests.cloud.api.conftest import login

pytestmark = [pytest.mark.integration]

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
def fleet(migrated_url: str) -> str:
    """c01: 12 door contacts (door-00..door-11) on gw1, half online, batteries 5..60 %, heard
    from 0..11 hours ago; door-03 in room 1203 of resident c01-r0003 (living alone). c02: one
    manhole cover on gw2. gw1 reported a buffer of 42 readings."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for i in range(12):
            conn.execute(
                "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, building,"
                " unit, room, resident_id, living_alone, status, battery_pct, last_seen)"
                " VALUES (%s, 'door_contact', 'aqara/mccgq11lm', 'c01', 'gw1', '12', '1',"
                " %s, %s, %s, %s, %s, %s)",
                (
                    f"door-{i:02d}",
                    f"{12}0{i}",
                    f"c01-r{i:04d}",
                    i == 3,
                    "online" if i % 2 == 0 else "offline",
                    5.0 + 5 * i,
                    NOW - timedelta(hours=i),
                ),
            )
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, status)"
            " VALUES ('cover-1', 'manhole_cover', 'nb-cover', 'c02', 'gw2', 'online')"
        )
        status = {
            "v": 1,
            "state": "online",
            "version": "0.9.0",
            "uptime_s": 3600.5,
            "buffer": {"depth": 42, "alarm": 2, "telemetry": 40, "oldest_age_s": 12, "disk_bytes": 8192,
                       "cap_bytes": 1 << 30},
            "links": {"field": True, "cloud": False},
            "pending_devices": 2,
        }  # fmt: skip
        conn.execute(
            "INSERT INTO gateways (gateway_id, community_id, state, status, status_at) VALUES"
            " ('gw1', 'c01', 'online', %s, %s), ('gw2', 'c02', 'offline', '{}', %s)",
            (Jsonb(status), NOW, NOW - timedelta(hours=2)),
        )
        conn.execute(
            "INSERT INTO readings (time, device_id, metric, value) VALUES"
            " (%s, 'door-03', 'contact_open', 0), (%s, 'door-03', 'contact_open', 1),"
            " (%s, 'door-03', 'battery_pct', 20)",
            (NOW - timedelta(minutes=10), NOW - timedelta(minutes=1), NOW - timedelta(hours=1)),
        )
        for minutes, event in ((30, "door_opened"), (20, "door_closed"), (10, "door_opened")):
            conn.execute(
                "INSERT INTO events (time, device_id, event, attributes) VALUES (%s, 'door-03', %s, %s)",
                (NOW - timedelta(minutes=minutes), event, Jsonb({"n": minutes})),
            )
        conn.execute(
            "INSERT INTO events (time, device_id, event) VALUES (%s, 'door-05', 'door_opened'),"
            " (%s, 'cover-1', 'cover_opened')",
            (NOW - timedelta(minutes=5), NOW - timedelta(minutes=5)),
        )
    return migrated_url


@pytest.fixture
def as_(client: httpx.Client, accounts: Callable[..., None]) -> Callable[[str], dict[str, str]]:
    accounts("w-zhang", "s-wang", "w-other", "q-sun")
    return lambda staff_id: login(client, staff_id)


def _ids(body: dict[str, Any], key: str = "device_id") -> list[str]:
    return [item[key] for item in body["items"]]


def test_devices_filter_and_page(
    client: httpx.Client, fleet: str, as_: Callable[[str], dict[str, str]]
) -> None:
    worker = as_("w-zhang")
    r = client.get("/api/v1/devices", headers=worker)
    assert r.status_code == 200
    assert _ids(r.json()) == [f"door-{i:02d}" for i in range(12)]  # c01 only, by id
    cases: list[tuple[dict[str, Any], list[str]]] = [
        ({"status": "offline"}, [f"door-{i:02d}" for i in range(1, 12, 2)]),
        ({"battery_below": 20}, ["door-00", "door-01", "door-02"]),
        ({"silent_since": (NOW - timedelta(hours=9, minutes=30)).isoformat()}, ["door-10", "door-11"]),
        ({"living_alone": True}, ["door-03"]),
        ({"gateway_id": "gw2"}, []),  # another community's gateway: nothing of it
        ({"community_id": "c02"}, []),
        ({"device_type": "manhole_cover"}, []),
    ]
    for params, expected in cases:
        r = client.get("/api/v1/devices", headers=worker, params=params)
        assert r.status_code == 200, r.text
        assert _ids(r.json()) == expected, params
    district = as_("q-sun")
    assert _ids(
        client.get("/api/v1/devices", headers=district, params={"device_type": "manhole_cover"}).json()
    ) == ["cover-1"]
    seen: list[str] = []
    after = None
    while True:
        query: dict[str, Any] = {"limit": 5} | ({"after": after} if after else {})
        page = client.get("/api/v1/devices", headers=district, params=query).json()
        seen += _ids(page)
        after = page["next"]
        if after is None:
            break
    assert seen == sorted([*(f"door-{i:02d}" for i in range(12)), "cover-1"])
    epoch = client.get("/api/v1/devices", headers=district, params={"silent_since": "0.0"})
    assert epoch.status_code == 422  # a number is not read as a time in 1970
    assert "ISO 8601" in epoch.text
    bad = client.get("/api/v1/devices", headers=district, params={"after": "not-a-cursor"})
    assert bad.status_code == 422
    assert "after" in bad.json()["detail"]


def test_one_device_with_its_latest_values_masked_per_role(
    client: httpx.Client, fleet: str, as_: Callable[[str], dict[str, str]], migrated_url: str
) -> None:
    worker = client.get("/api/v1/devices/door-03", headers=as_("w-zhang")).json()
    assert worker["resident_id"] == "c01-r0003"
    assert worker["location"] == {"lat": None, "lon": None, "building": "12", "unit": "1", "room": "1203"}
    latest = {m["metric"]: m for m in worker["latest"]}
    assert set(latest) == {"contact_open", "open_count", "battery_pct", "rssi_dbm", "link_quality"}
    assert latest["contact_open"]["value"] == 1.0  # the newer of the two
    assert latest["contact_open"]["unit"] == "0/1"
    assert latest["battery_pct"]["value"] == 20.0
    assert latest["open_count"]["value"] is None
    assert latest["open_count"]["time"] is None
    assert worker["profile_info"]["vendor"].lower() == "aqara"
    assert worker["profile_info"]["device_type"] == "door_contact"
    assert worker["profile_info"]["report_interval_s"] > 0
    assert client.get("/api/v1/devices/cover-1", headers=as_("q-sun")).json()["profile_info"] is None
    street = client.get("/api/v1/devices/door-03", headers=as_("s-wang")).json()
    assert street["resident_id"] == "c0*******"
    assert street["location"]["room"] == "1***"
    assert client.get("/api/v1/devices/door-03", headers=as_("w-other")).status_code == 404
    assert client.get("/api/v1/devices/nope", headers=as_("q-sun")).status_code == 404
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute("SELECT principal, resource, subject, fields FROM api_pii_audit").fetchall()
    assert rows == [("w-zhang", "device", "door-03", ["resident_id", "room"])]


def test_communities_and_gateways(
    client: httpx.Client, fleet: str, as_: Callable[[str], dict[str, str]]
) -> None:
    mine = client.get("/api/v1/communities", headers=as_("w-zhang")).json()["items"]
    assert mine == [
        {
            "community_id": "c01",
            "name": "阳光小区",
            "devices": 12,
            "online": 6,
            "offline": 6,
            "living_alone": 1,
            "gateways": 1,
            "open_incidents": 0,
        }
    ]
    everyone = client.get("/api/v1/communities", headers=as_("q-sun")).json()["items"]
    assert [c["community_id"] for c in everyone] == ["c01", "c02"]
    assert everyone[1]["name"] is None
    gateways = client.get("/api/v1/gateways", headers=as_("q-sun")).json()["items"]
    assert [(g["gateway_id"], g["state"], g["devices"]) for g in gateways] == [
        ("gw1", "online", 12),
        ("gw2", "offline", 1),
    ]
    assert gateways[0]["buffer"]["depth"] == 42
    assert (gateways[0]["pending_devices"], gateways[1]["pending_devices"]) == (2, None)
    assert gateways[0]["buffer"]["alarm"] == 2
    assert gateways[0]["links"] == {"field": True, "cloud": False}
    assert gateways[1]["buffer"]["depth"] is None  # it never said
    offline = client.get("/api/v1/gateways", headers=as_("q-sun"), params={"state": "offline"}).json()
    assert _ids(offline, "gateway_id") == ["gw2"]
    one = client.get("/api/v1/gateways/gw1", headers=as_("w-zhang")).json()
    assert one["status"]["version"] == "0.9.0"
    assert one["uptime_s"] == 3600.5
    assert client.get("/api/v1/gateways/gw1", headers=as_("w-other")).status_code == 404


def test_events_of_a_device_and_of_a_community(
    client: httpx.Client, fleet: str, as_: Callable[[str], dict[str, str]]
) -> None:
    worker = as_("w-zhang")
    device = client.get("/api/v1/devices/door-03/events", headers=worker).json()
    assert [(e["event"], e["attributes"]) for e in device["items"]] == [
        ("door_opened", {"n": 10}),
        ("door_closed", {"n": 20}),
        ("door_opened", {"n": 30}),
    ]
    opened = client.get(
        "/api/v1/devices/door-03/events", headers=worker, params={"event": "door_opened"}
    ).json()
    assert len(opened["items"]) == 2
    since = client.get(
        "/api/v1/devices/door-03/events",
        headers=worker,
        params={"start": (NOW - timedelta(minutes=25)).isoformat()},
    ).json()
    assert len(since["items"]) == 2
    community = client.get("/api/v1/communities/c01/events", headers=worker).json()
    assert [(e["device_id"], e["event"]) for e in community["items"]] == [
        ("door-05", "door_opened"),
        ("door-03", "door_opened"),
        ("door-03", "door_closed"),
        ("door-03", "door_opened"),
    ]  # c02's cover is not in it
    pages: list[tuple[str, str]] = []
    after = None
    while True:
        params: dict[str, Any] = {"limit": 3} | ({"after": after} if after else {})
        page = client.get("/api/v1/communities/c01/events", headers=worker, params=params).json()
        pages += [(e["time"], e["event"]) for e in page["items"]]
        after = page["next"]
        if after is None:
            break
    assert len(pages) == 4
    assert len(set(pages)) == 4
    assert client.get("/api/v1/communities/c02/events", headers=worker).status_code == 404
    assert client.get("/api/v1/communities/c99/events", headers=as_("q-sun")).status_code == 404
    assert client.get("/api/v1/devices/cover-1/events", headers=worker).status_code == 404

"""Commands through the API: queued in the outbox with their audit trail, checked by the standard
and the device's profile, idempotent by command id, sent only by the configured roles to devices
of their communities, expired when their time to live passes."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import httpx
import psycopg
import pytest

from tests.cloud.api.conftest import Clock, login

pytestmark = [pytest.mark.integration]

LAMP = "a84041000181c0de"


@pytest.fixture
def lamps(migrated_url: str) -> None:
    """A ChirpStack streetlight and a Tuya SOS button in c01, an NB-IoT streetlight in c02."""
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id) VALUES"
            " (%s, 'streetlight', 'generic_lorawan/streetlight', 'c01', 'gw1'),"
            " ('sos-7', 'sos_button', 'tuya/ts0215a_sos', 'c01', 'gw1'),"
            " ('861234567890123', 'streetlight', 'generic_nbiot/streetlight', 'c02', 'gw2')",
            (LAMP,),
        )


def post(client: httpx.Client, headers: dict[str, str], device: str, **body: Any) -> httpx.Response:
    return client.post(f"/api/v1/devices/{device}/commands", json=body, headers=headers)


@pytest.mark.usefixtures("lamps")
def test_a_command_is_queued_with_its_audit_trail_once(
    client: httpx.Client, accounts: Callable[..., None], migrated_url: str
) -> None:
    accounts("k-li")
    k_li = login(client, "k-li")
    command_id = str(uuid.uuid4())
    r = post(client, k_li, LAMP, name="dim", params={"level_pct": 40}, command_id=command_id, ttl_s=600)
    assert r.status_code == 201, r.text
    body = r.json()
    assert {
        k: body[k] for k in ("command_id", "device_id", "gateway_id", "name", "params", "state", "confirm")
    } == {
        "command_id": command_id,
        "device_id": LAMP,
        "gateway_id": "gw1",
        "name": "dim",
        "params": {"level_pct": 40},
        "state": "queued",
        "confirm": "report",
    }
    assert [(a["actor"], a["state"], a["detail"]) for a in body["audit"]] == [
        ("k-li", "queued", "dim level_pct=40")
    ]
    # the same request again: the same command, nothing new
    again = post(client, k_li, LAMP, name="dim", params={"level_pct": 40}, command_id=command_id, ttl_s=600)
    assert again.status_code == 200
    assert again.json()["requested_at"] == body["requested_at"]
    # the id for another command: refused
    other = post(client, k_li, LAMP, name="dim", params={"level_pct": 80}, command_id=command_id)
    assert other.status_code == 409
    assert "use a new id" in other.json()["detail"]
    with psycopg.connect(migrated_url) as conn:
        assert conn.execute("SELECT count(*) FROM commands").fetchone() == (1,)
        assert conn.execute("SELECT count(*) FROM command_audit").fetchone() == (1,)
    listed = client.get(f"/api/v1/devices/{LAMP}/commands", headers=k_li).json()["items"]
    assert [c["command_id"] for c in listed] == [command_id]
    one = client.get(f"/api/v1/commands/{command_id}", headers=k_li).json()
    assert (one["state"], len(one["audit"])) == ("queued", 1)


@pytest.mark.usefixtures("lamps")
@pytest.mark.parametrize(
    ("device", "body", "detail"),
    [
        (LAMP, {"name": "dim", "params": {"level_pct": 140}}, "level_pct 140 is outside 0..100 %"),
        (LAMP, {"name": "switch", "params": {"on": "yes"}}, "on must be true or false"),
        (LAMP, {"name": "acknowledge"}, "'acknowledge' is not a command of streetlight"),
        ("sos-7", {"name": "acknowledge"}, "tuya/ts0215a_sos (Tuya TS0215A_sos) cannot carry acknowledge"),
    ],
)
def test_what_the_standard_or_the_model_refuses_is_a_422_saying_why(
    client: httpx.Client, accounts: Callable[..., None], device: str, body: dict[str, Any], detail: str
) -> None:
    accounts("k-li")
    r = post(client, login(client, "k-li"), device, **body)
    assert r.status_code == 422
    assert detail in str(r.json()["detail"])


@pytest.mark.usefixtures("lamps")
def test_only_configured_roles_send_and_only_to_their_communities(
    client: httpx.Client, accounts: Callable[..., None], api_key: Callable[..., str]
) -> None:
    accounts("k-li", "d-chen", "s-wang")
    assert post(client, login(client, "d-chen"), LAMP, name="switch", params={"on": True}).status_code == 403
    integrator = {"Authorization": f"Bearer {api_key('c01')}"}
    assert post(client, integrator, LAMP, name="switch", params={"on": True}).status_code == 403
    # k-li is c01's: c02's lamp does not exist for her
    r = post(client, login(client, "k-li"), "861234567890123", name="switch", params={"on": True})
    assert r.status_code == 404
    r = post(client, login(client, "s-wang"), "861234567890123", name="switch", params={"on": True})
    assert r.status_code == 201
    command_id = r.json()["command_id"]
    assert client.get(f"/api/v1/commands/{command_id}", headers=login(client, "k-li")).status_code == 404


@pytest.mark.usefixtures("lamps")
def test_a_queued_command_expires_when_its_time_to_live_passes(
    client: httpx.Client, accounts: Callable[..., None], clock: Clock
) -> None:
    accounts("k-li")
    k_li = login(client, "k-li")
    r = post(client, k_li, LAMP, name="switch", params={"on": False}, ttl_s=60)
    command_id = r.json()["command_id"]
    clock.advance(59)
    assert client.get(f"/api/v1/commands/{command_id}", headers=k_li).json()["state"] == "queued"
    clock.advance(2)
    one = client.get(f"/api/v1/commands/{command_id}", headers=k_li).json()
    assert (one["state"], one["reason"]) == (
        "expired",
        "its time to live passed before it reached the gateway",
    )
    assert [a["state"] for a in one["audit"]] == ["queued", "expired"]


def test_a_device_names_its_commands_and_a_community_its_schedule(
    client: httpx.Client, accounts: Callable[..., None], migrated_url: str, clock: Clock
) -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, lat, lon) VALUES"
            " (%s, 'streetlight', 'generic_lorawan/streetlight', 'c01', 'gw1', 31.2304, 121.4737),"
            " ('sos-7', 'sos_button', 'tuya/ts0215a_sos', 'c01', 'gw1', 31.23, 121.47)",
            (LAMP,),
        )
    accounts("k-li", "w-zhang")
    k_li = login(client, "k-li")
    lamp = client.get(f"/api/v1/devices/{LAMP}", headers=k_li).json()
    assert lamp["profile_info"]["commands"] == ["configure", "dim", "set_schedule", "switch"]
    button = client.get("/api/v1/devices/sos-7", headers=k_li).json()
    assert button["profile_info"]["commands"] == []  # its model has no LED or buzzer
    shanghai = ZoneInfo("Asia/Shanghai")
    clock.now = datetime(2026, 12, 4, 21, 0, tzinfo=shanghai)
    plan = client.get("/api/v1/communities/c01/schedule", headers=k_li)
    assert plan.status_code == 200, plan.text
    body = plan.json()
    got = [
        (datetime.fromisoformat(t["at"]).astimezone(shanghai).strftime("%d %H:%M"), t["on"], t["level_pct"])
        for t in body["transitions"]
    ]
    assert [g[0] for g in got[1:3]] == ["04 23:00", "05 05:00"]
    assert [(on, level) for _, on, level in got] == [(True, 100), (True, 40), (True, 100), (False, 0)]
    assert got[0][0].startswith("04 1")  # dusk: the afternoon before
    assert body["timezone"] == "Asia/Shanghai"
    # c02 has no streetlight with a position: nothing to show; nor does a community the caller lacks
    assert client.get("/api/v1/communities/c02/schedule", headers=k_li).status_code == 404

"""Every operation of the OpenAPI document x every role x two communities: the expected allow,
deny (403 for a role without the permission, 404 for another community's resource, never a hint)
and mask (personal data only for the roles with ``pii``, each such read audited).

The table `PERMISSION` names what each operation needs; an operation missing from it fails the
test, so a new endpoint cannot go without a decision."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import psycopg
import pytest

from cloud.api.access import PERMISSIONS
from cloud.api.config import ApiConfig
from tests.cloud.api.conftest import login
from tests.cloud.incidents.conftest import fire

pytestmark = [pytest.mark.integration]

RESIDENT = "c01-r0007"

#: operation -> the permission it needs (None: any authenticated caller)
PERMISSION: dict[str, str | None] = {
    "GET /api/v1/auth/me": None,
    "GET /api/v1/communities": "devices",
    "GET /api/v1/gateways": "devices",
    "GET /api/v1/gateways/{gateway_id}": "devices",
    "GET /api/v1/devices": "devices",
    "GET /api/v1/devices/{device_id}": "devices",
    "GET /api/v1/devices/{device_id}/events": "devices",
    "GET /api/v1/communities/{community_id}/events": "devices",
    "GET /api/v1/communities/{community_id}/plan": "devices",
    "GET /api/v1/communities/{community_id}/staff": "incidents",
    "GET /api/v1/performance": "incidents",
    "GET /api/v1/devices/{device_id}/readings": "history",
    "GET /api/v1/incidents": "incidents",
    "GET /api/v1/incidents/{incident_id}": "incidents",
    "POST /api/v1/incidents/{incident_id}/transitions": "act",
    "GET /api/v1/live": "incidents",
    "GET /api/v1/audit/pii": "audit",
    "POST /api/v1/devices/{device_id}/commands": "command",
    "GET /api/v1/devices/{device_id}/commands": "devices",
    "GET /api/v1/commands/{command_id}": "devices",
    "GET /api/v1/communities/{community_id}/schedule": "devices",
}
#: who may send commands: configuration (``[api] command_roles``), here its default
COMMAND_ROLES = ApiConfig().command_roles
#: operations outside the matrix: logging in needs no token (tests/cloud/api/test_auth.py)
UNAUTHENTICATED = {"POST /api/v1/auth/token", "POST /api/v1/auth/refresh"}

#: principal -> (roles, communities); "key:*" are integrators' API keys
PRINCIPALS: dict[str, tuple[tuple[str, ...], frozenset[str]]] = {
    "w-zhang": (("grid_worker",), frozenset({"c01"})),
    "w-other": (("grid_worker",), frozenset({"c02"})),
    "k-li": (("committee",), frozenset({"c01"})),
    "s-wang": (("street",), frozenset({"*"})),
    "q-sun": (("district",), frozenset({"*"})),
    "d-chen": (("doctor",), frozenset({"c01"})),
    "a-root": (("admin",), frozenset({"*"})),
    "key:c01": (("integrator",), frozenset({"c01"})),
    "key:c02": (("integrator",), frozenset({"c02"})),
}


def _may(principal: str, permission: str | None) -> bool:
    roles, _ = PRINCIPALS[principal]
    if permission == "command":
        return any(r in COMMAND_ROLES for r in roles)
    return permission is None or any(permission in PERMISSIONS[r] for r in roles)


def _sees_c01(principal: str) -> bool:
    _, communities = PRINCIPALS[principal]
    return "*" in communities or "c01" in communities


@pytest.fixture
def world(migrated_url: str) -> dict[str, str]:
    """An SOS incident of c01 (its button in room 401 of resident c01-r0007), the gateway, a
    reading and an event of the button; the same kind of button in c02."""
    incident = fire(migrated_url, subject="sos-1", community_id="c01", resident_id=RESIDENT)
    fire(migrated_url, subject="sos-2", community_id="c02", resident_id="c02-r0001")
    now = datetime.now(UTC)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "UPDATE devices SET resident_id = %s, living_alone = true WHERE device_id = 'sos-1'", (RESIDENT,)
        )
        conn.execute(
            "INSERT INTO gateways (gateway_id, community_id, state, status, status_at)"
            " VALUES ('gw1', 'c01', 'online', '{}', %s), ('gw2', 'c02', 'online', '{}', %s)",
            (now, now),
        )
        for device in ("sos-1", "sos-2"):
            conn.execute(
                "INSERT INTO readings (time, device_id, metric, value) VALUES (%s, %s, 'battery_pct', 87)",
                (now - timedelta(minutes=5), device),
            )
            conn.execute(
                "INSERT INTO events (time, device_id, event) VALUES (%s, %s, 'sos_pressed')",
                (now - timedelta(minutes=5), device),
            )
        conn.execute(  # a lamp: the community's schedule has a place
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, lat, lon)"
            " VALUES ('lamp-1', 'streetlight', 'generic_nbiot/streetlight', 'c01', 'gw1', 31.23, 121.47)"
        )
        command_id = conn.execute(
            "INSERT INTO commands (command_id, device_id, community_id, gateway_id, name, params, confirm,"
            " state, requested_by, requested_at, expires_at, updated_at) VALUES (gen_random_uuid(), 'sos-1',"
            " 'c01', 'gw1', 'acknowledge', '{}', 'network', 'queued', 'k-li', %s, %s, %s)"
            " RETURNING command_id",
            (now, now + timedelta(days=1), now),
        ).fetchone()
        assert command_id is not None
    return {
        "command_id": str(command_id[0]),
        "device_id": "sos-1",
        "incident_id": str(incident),
        "gateway_id": "gw1",
        "community_id": "c01",
    }


@pytest.fixture
def headers_of(
    client: httpx.Client, accounts: Callable[..., None], api_key: Callable[..., str]
) -> Callable[[str], dict[str, str]]:
    staff = [p for p in PRINCIPALS if not p.startswith("key:")]
    accounts(*staff)
    tokens = {p: login(client, p) for p in staff}
    tokens |= {p: {"X-API-Key": api_key(p.removeprefix("key:"))} for p in PRINCIPALS if p.startswith("key:")}
    return tokens.__getitem__


def _operations(client: httpx.Client) -> Iterator[tuple[str, str, str]]:
    doc = client.get("/openapi.json").json()
    for path, item in doc["paths"].items():
        if not path.startswith("/api/v1/"):
            continue
        for method in item:
            yield f"{method.upper()} {path}", method.upper(), path


def _call(client: httpx.Client, method: str, path: str, headers: dict[str, str]) -> tuple[int, str]:
    params: dict[str, Any] = {"metric": "battery_pct"} if path.endswith("/readings") else {}
    if path.endswith("/performance"):
        now = datetime.now(UTC)
        params = {
            "start": (now - timedelta(days=1)).isoformat(),
            "end": (now + timedelta(hours=1)).isoformat(),
        }
    if method == "POST" and path.endswith("/commands"):
        # a button has no `dim`: refused (422) once the caller got through permission and scoping
        r = client.post(path, headers=headers, json={"name": "dim", "params": {"level_pct": 1}})
        return r.status_code, r.text
    if method == "POST":
        # `rate` is refused from `detected` (409) by the workflow: it proves the caller got through
        # authentication, permission and scoping, and changes nothing
        r = client.post(path, headers=headers, json={"action": "rate", "score": 5, "comment": "x"})
        return r.status_code, r.text
    if path.endswith("/live"):
        with client.stream("GET", path, headers=headers) as r:
            return r.status_code, ""
    r = client.get(path, headers=headers, params=params)
    return r.status_code, r.text


def test_every_operation_for_every_role_and_community(
    client: httpx.Client,
    world: dict[str, str],
    headers_of: Callable[[str], dict[str, str]],
    migrated_url: str,
) -> None:
    seen: set[str] = set()
    problems: list[str] = []
    for label, method, template in _operations(client):
        if label in UNAUTHENTICATED:
            continue
        assert label in PERMISSION, f"{label} has no entry in PERMISSION: decide who may use it"
        seen.add(label)
        path = template.format(**world)
        for principal in PRINCIPALS:
            status, text = _call(client, method, path, headers_of(principal))
            single = "{" in template
            if not _may(principal, PERMISSION[label]):
                expected = {403}
            elif single and not _sees_c01(principal):
                expected = {404}
            elif method == "POST":
                expected = {422} if template.endswith("/commands") else {409}
            else:
                expected = {200}
            if status not in expected:
                problems.append(f"{principal} {label}: {status}, expected {sorted(expected)}: {text[:200]}")
                continue
            if status == 200 and not single and not _sees_c01(principal) and '"sos-1"' in text:
                problems.append(f"{principal} {label}: lists c01's device sos-1")
            pii = _may(principal, "pii")
            if status == 200 and not pii and RESIDENT in text:
                problems.append(f"{principal} {label}: shows the resident {RESIDENT} unmasked")
    assert seen == set(PERMISSION), f"operations in PERMISSION but not in the API: {set(PERMISSION) - seen}"
    assert not problems, "\n".join(problems)
    with psycopg.connect(migrated_url) as conn:
        audited = {
            (r[0], r[1]) for r in conn.execute("SELECT DISTINCT principal, subject FROM api_pii_audit")
        }
    readers = {p for p, _ in audited}
    pii_readers = {p for p in PRINCIPALS if _may(p, "pii")}
    assert readers == pii_readers, (
        f"unmasked reads audited for {sorted(readers)}, expected {sorted(pii_readers)}"
    )
    c01 = {world["device_id"], world["incident_id"]}
    for principal in pii_readers:
        subjects = {s for p, s in audited if p == principal}
        assert (c01 <= subjects) == _sees_c01(principal), f"{principal} audited for {sorted(subjects)}"

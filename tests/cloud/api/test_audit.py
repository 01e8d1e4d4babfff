"""The personal data audit: written by `record_pii_read`, append-only, read by administrators."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import psycopg
import pytest

from cloud.api.access import Principal, record_pii_read
from tests.cloud.api.conftest import login


def test_administrators_read_the_audit_newest_first_page_by_page(
    client: httpx.Client, accounts: Callable[..., None], migrated_url: str
) -> None:
    reader = Principal(
        id="w-zhang", kind="staff", name="张伟", roles=("grid_worker",), communities=frozenset({"c01"})
    )
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for i in range(5):
            record_pii_read(
                conn, reader, resource="device", subject=f"sos-{i}", fields=["room"], address="10.0.0.9"
            )
        record_pii_read(
            conn, reader, resource="device", subject="none", fields=[], address="10.0.0.9"
        )  # nothing shown
        with pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute("DELETE FROM api_pii_audit")
    accounts("a-root", "k-li")
    admin = login(client, "a-root")
    first = client.get("/api/v1/audit/pii", headers=admin, params={"limit": 3}).json()
    assert [i["subject"] for i in first["items"]] == ["sos-4", "sos-3", "sos-2"]
    assert first["items"][0]["principal"] == "w-zhang"
    assert first["items"][0]["fields"] == ["room"]
    assert first["items"][0]["address"] == "10.0.0.9"
    second = client.get(
        "/api/v1/audit/pii", headers=admin, params={"limit": 3, "after": first["next"]}
    ).json()
    assert [i["subject"] for i in second["items"]] == ["sos-1", "sos-0"]
    assert second["next"] is None
    one = client.get("/api/v1/audit/pii", headers=admin, params={"subject": "sos-3"}).json()
    assert [i["subject"] for i in one["items"]] == ["sos-3"]
    refused = client.get("/api/v1/audit/pii", headers=login(client, "k-li"))
    assert refused.status_code == 403
    assert "audit" in refused.json()["detail"]
    naive = client.get("/api/v1/audit/pii", headers=admin, params={"since": "2026-12-03T08:00:00"})
    assert naive.status_code == 422

"""The inventory's facts reach the ``devices`` table: added for devices never heard, changed when
the inventory changes, and what the ingest wrote (status, last seen, battery) left alone."""

from __future__ import annotations

from datetime import UTC, datetime

import psycopg
import pytest

from cloud.store.inventory import DeviceFacts, sync_devices

pytestmark = [pytest.mark.integration]

DOOR = DeviceFacts("door-1", "door_contact", "aqara/mccgq11lm", "c01", "gw1", 31.2, 121.4, "3", "2", "401",
                   "c01-r0007", True)  # fmt: skip
COVER = DeviceFacts("cover-1", "manhole_cover", "nb-cover", "c01", "gw1", 31.21, 121.41, None, None, None,
                    None, None)  # fmt: skip


def test_sync_adds_changes_and_keeps_what_readings_told(migrated_url: str) -> None:
    heard = datetime(2026, 12, 4, 8, tzinfo=UTC)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, status,"
            " last_seen, battery_pct) VALUES ('door-1', 'door_contact', 'aqara/mccgq11lm', 'c01', 'gw1',"
            " 'online', %s, 77)",
            (heard,),
        )
        assert sync_devices(conn, [DOOR, COVER]) == 2
        assert sync_devices(conn, [DOOR, COVER]) == 0  # nothing changed: nothing written
        moved = DOOR._replace(building="4", room="402", living_alone=False)
        assert sync_devices(conn, [moved, COVER]) == 1
        rows = conn.execute(
            "SELECT device_id, building, unit, room, lat, resident_id, living_alone, status, last_seen,"
            " battery_pct FROM devices ORDER BY device_id"
        ).fetchall()
        assert sync_devices(conn, []) == 0
    assert rows == [
        ("cover-1", None, None, None, 31.21, None, None, "unknown", None, None),
        ("door-1", "4", "2", "402", 31.2, "c01-r0007", False, "online", heard, 77.0),
    ]

"""The inventory's facts in the ``devices`` table: where each device is (building, unit, room,
coordinates), whose it is (resident, living alone), its type, profile, community and gateway.

The inventory is the one source of these facts; the ingest writes what readings tell (first and
last seen, status, battery) and never touches them. `sync_devices` is idempotent and leaves what
the ingest wrote alone: devices listed but never heard are added with status ``unknown``, so the
console's map shows them too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import psycopg


class DeviceFacts(NamedTuple):
    device_id: str
    device_type: str
    profile: str
    community_id: str
    gateway_id: str
    lat: float | None
    lon: float | None
    building: str | None
    unit: str | None
    room: str | None
    resident_id: str | None
    living_alone: bool | None


_SYNC = """
INSERT INTO devices AS d (device_id, device_type, profile, community_id, gateway_id, lat, lon, building,
                          unit, room, resident_id, living_alone)
SELECT * FROM unnest(%s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::float8[],
                     %s::float8[], %s::text[], %s::text[], %s::text[], %s::text[], %s::bool[])
ORDER BY 1
ON CONFLICT (device_id) DO UPDATE SET
    device_type = EXCLUDED.device_type, profile = EXCLUDED.profile, community_id = EXCLUDED.community_id,
    gateway_id = EXCLUDED.gateway_id, lat = EXCLUDED.lat, lon = EXCLUDED.lon, building = EXCLUDED.building,
    unit = EXCLUDED.unit, room = EXCLUDED.room, resident_id = EXCLUDED.resident_id,
    living_alone = EXCLUDED.living_alone, updated_at = now()
WHERE (d.device_type, d.profile, d.community_id, d.gateway_id, d.lat, d.lon, d.building, d.unit, d.room,
       d.resident_id, d.living_alone)
      IS DISTINCT FROM
      (EXCLUDED.device_type, EXCLUDED.profile, EXCLUDED.community_id, EXCLUDED.gateway_id, EXCLUDED.lat,
       EXCLUDED.lon, EXCLUDED.building, EXCLUDED.unit, EXCLUDED.room, EXCLUDED.resident_id,
       EXCLUDED.living_alone)
"""


def sync_devices(conn: psycopg.Connection[Any], devices: Sequence[DeviceFacts]) -> int:
    """Write the inventory's facts of `devices` (one statement, in the caller's transaction or
    autocommit); how many rows were added or changed."""
    if not devices:
        return 0
    columns = [list(column) for column in zip(*devices, strict=True)]
    cur = conn.execute(_SYNC, columns)
    return cur.rowcount

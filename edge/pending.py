"""Pending devices: ones the gateway heard or was told of but its inventory does not list.

Two sources, one table in the buffer (written in the same transaction as the readings and the
quarantine of the intake that found them, so a kill -9 neither loses nor doubles one):

- ``field``: a message on the field broker that a profile decodes, from a device id the
  inventory does not know at all (a device the inventory gives to another gateway is that
  gateway's, not pending here). The first payload, its topic and the profile that decoded it are
  kept; later messages only count and move ``last seen``. Its messages stay in the quarantine
  (``unknown_device``) as before.
- ``zigbee2mqtt``: an entry of the coordinator's ``bridge/devices`` list (`device_profiles.zigbee2mqtt`),
  with the profile of its model, its IEEE address, vendor and model.

``linli edge devices pending`` lists them, ``linli edge devices approve ID ...`` writes the
inventory entry; the agent notices the new inventory, reloads it and forgets the pending entries
of every device it now serves. The table keeps at most ``discovery.max_pending`` devices (the
longest unheard dropped first): a flood of made-up ids cannot grow it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Final

import msgspec

SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS pending (
    device_id TEXT PRIMARY KEY, source TEXT NOT NULL, profile TEXT, device_type TEXT, topic TEXT,
    payload BLOB NOT NULL, first_us INTEGER NOT NULL, last_us INTEGER NOT NULL,
    messages INTEGER NOT NULL, details BLOB NOT NULL) WITHOUT ROWID;
"""
#: Bytes of the first payload kept.
PAYLOAD_KEPT: Final = 4096


class PendingDevice(msgspec.Struct, kw_only=True):
    """One device waiting for approval.

    Attributes:
        device_id: the id its messages carry (a Zigbee friendly name, a DevEUI, an IMEI).
        source: ``field`` (heard on the field broker) or ``zigbee2mqtt`` (the bridge's list).
        profile: the profile that decodes it (None: no loaded profile does).
        device_type: that profile's device type.
        topic: the topic of its first message (None when only the bridge named it).
        payload: its first message, at most `PAYLOAD_KEPT` bytes.
        first_us, last_us: gateway time it was first and last heard of (epoch microseconds).
        messages: messages heard from it.
        details: what the source adds (``ieee_address``, ``model``, ``vendor``, ``description``).
    """

    device_id: str
    source: str
    profile: str | None
    device_type: str | None
    topic: str | None = None
    payload: bytes = b""
    first_us: int
    last_us: int
    messages: int = 0
    details: dict[str, str] = msgspec.field(default_factory=dict)

    def absorb(self, later: PendingDevice) -> None:
        """Fold a later sighting of the same device into this one (within one intake)."""
        self.last_us = max(self.last_us, later.last_us)
        self.messages += later.messages
        self.profile = self.profile or later.profile
        self.device_type = self.device_type or later.device_type
        if self.topic is None:
            self.topic, self.payload = later.topic, later.payload
        self.details = later.details or self.details


_details = msgspec.json.Encoder()
_read_details = msgspec.json.Decoder(dict[str, str])

_UPSERT: Final = """
INSERT INTO pending (device_id, source, profile, device_type, topic, payload, first_us, last_us,
                     messages, details)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (device_id) DO UPDATE SET
    last_us = max(last_us, excluded.last_us),
    messages = messages + excluded.messages,
    profile = coalesce(profile, excluded.profile),
    device_type = coalesce(device_type, excluded.device_type),
    payload = CASE WHEN topic IS NULL THEN excluded.payload ELSE payload END,
    topic = coalesce(topic, excluded.topic),
    details = CASE WHEN length(excluded.details) > 2 THEN excluded.details ELSE details END
"""


def upsert(conn: sqlite3.Connection, devices: Iterable[PendingDevice], *, cap: int) -> int:
    """Record sightings (inside the caller's transaction); returns the devices dropped to stay
    within `cap`."""
    conn.executemany(
        _UPSERT,
        [
            (
                d.device_id,
                d.source,
                d.profile,
                d.device_type,
                d.topic,
                d.payload[:PAYLOAD_KEPT],
                d.first_us,
                d.last_us,
                d.messages,
                _details.encode(d.details),
            )
            for d in devices
        ],
    )
    over = int(conn.execute("SELECT count(*) FROM pending").fetchone()[0]) - cap
    if over > 0:
        conn.execute(
            "DELETE FROM pending WHERE device_id IN "
            "(SELECT device_id FROM pending ORDER BY last_us, device_id LIMIT ?)",
            (over,),
        )
    return max(0, over)


def rows(conn: sqlite3.Connection) -> list[PendingDevice]:
    """Every pending device, the most recently heard first (none from a buffer made before
    pending devices existed)."""
    try:
        found = conn.execute(
            "SELECT device_id, source, profile, device_type, topic, payload, first_us, last_us, messages, "
            "details FROM pending ORDER BY last_us DESC, device_id"
        ).fetchall()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return []
        raise
    return [
        PendingDevice(
            device_id=r[0],
            source=r[1],
            profile=r[2],
            device_type=r[3],
            topic=r[4],
            payload=bytes(r[5]),
            first_us=r[6],
            last_us=r[7],
            messages=r[8],
            details=_read_details.decode(r[9]),
        )
        for r in found
    ]


def forget(conn: sqlite3.Connection, device_ids: Iterable[str]) -> int:
    """Drop the pending entries of these devices (the inventory now lists them)."""
    wanted = set(device_ids)
    pending = [r[0] for r in conn.execute("SELECT device_id FROM pending")]
    gone = [(d,) for d in pending if d in wanted]
    conn.executemany("DELETE FROM pending WHERE device_id = ?", gone)
    return len(gone)

"""Stored history as feed rows: what ``linli alerts explain`` replays through the rule engine.

The readings table holds one row per metric value and the events table one row per event; a
reading is put back together from the rows of one device that share a time (the ingest stores a
reading's metrics and events at its time). Device type and profile come from the device
registry (``devices``), the community and gateway too.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any, Final

import psycopg

from cloud.alerts.feed import FeedRow
from cloud.errors import DeviceNotFound, StoreUnavailable
from cloud.ingest.envelope import VERSION, Envelope, WireReading

_READINGS: Final = """
SELECT time, metric, value FROM readings
WHERE device_id = %s AND time >= %s AND time < %s ORDER BY time
"""
_EVENTS: Final = """
SELECT time, event, attributes->>'gateway_id' FROM events
WHERE device_id = %s AND time >= %s AND time < %s ORDER BY time
"""
_DEVICE: Final = "SELECT device_type, profile, community_id, gateway_id FROM devices WHERE device_id = %s"


def _us(t: datetime) -> int:
    return round(t.timestamp() * 1_000_000)


def stored_rows(
    conn: psycopg.Connection[Any], *, device_id: str, start: datetime, end: datetime
) -> Iterator[FeedRow]:
    """The device's stored readings in [start, end) as one-reading feed rows, in time order.

    Raises `DeviceNotFound` and `StoreUnavailable`.
    """
    try:
        device = conn.execute(_DEVICE, (device_id,)).fetchone()
        if device is None:
            raise DeviceNotFound(device_id)
        device_type, profile, community_id, gateway_id = device
        metrics: dict[int, dict[str, float]] = {}
        for t, metric, value in conn.execute(_READINGS, (device_id, start, end)):
            metrics.setdefault(_us(t), {})[metric] = float(value)
        events: dict[int, list[str]] = {}
        for t, event, gw in conn.execute(_EVENTS, (device_id, start, end)):
            events.setdefault(_us(t), []).append(event)
            gateway_id = gateway_id or gw
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while reading history: {exc}") from exc
    community_id = community_id or "unknown"
    gateway_id = gateway_id or "unknown"
    for seq, ts_us in enumerate(sorted(metrics.keys() | events.keys()), start=1):
        reading = WireReading(
            device_id=device_id,
            device_type=device_type,
            ts_us=ts_us,
            received_at_us=ts_us,
            metrics=metrics.get(ts_us, {}),
            events=tuple(events.get(ts_us, ())),
            quality=(),
            profile=profile,
            reading_id="",
        )
        env = Envelope(
            v=VERSION,
            gateway_id=gateway_id,
            community_id=community_id,
            batch_seq=seq,
            batch_class="telemetry",
            created_at_us=ts_us,
            counters={},
            readings=(reading,),
        )
        yield FeedRow(
            feed_seq=seq,
            community_id=community_id,
            committed_at=datetime.fromtimestamp(ts_us / 1e6, tz=UTC),
            envelopes=[env],
            statuses=[],
        )

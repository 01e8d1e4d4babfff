"""The data of ``linli bench api``: a month of readings of a thousand devices, written with binary
COPY from numpy arrays (one fixed-layout block per device and metric), their hourly rollup, the
devices and a few thousand incidents.

A device reports every few minutes with its type's metrics; the report times drift by up to a
fifth of the interval, as radio devices do. About 20 million ``readings`` rows load in a minute or
two on the development machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import numpy as np
import psycopg

from cloud.store import pgcopy

_PG_EPOCH: Final = datetime(2000, 1, 1, tzinfo=UTC)

#: device type -> its metrics (as the shipped profiles report them)
TYPES: Final[dict[str, tuple[str, ...]]] = {
    "door_contact": ("contact_open", "battery_pct", "link_quality"),
    "sos_button": ("battery_pct", "link_quality"),
    "manhole_cover": ("tilt_deg", "water_level_mm", "h2s_ppm", "ch4_pct_lel", "battery_pct"),
    "streetlight": ("power_w", "lamp_on", "energy_kwh"),
}
_MIX: Final = ("door_contact",) * 4 + ("sos_button",) * 2 + ("manhole_cover",) + ("streetlight",) * 3


@dataclass(frozen=True, slots=True)
class Device:
    device_id: str
    device_type: str
    community_id: str
    metrics: tuple[str, ...]


def fleet(devices: int, communities: int) -> list[Device]:
    out = []
    for i in range(devices):
        kind = _MIX[i % len(_MIX)]
        community = f"c{i % communities:02d}"
        out.append(Device(f"{community}-dev-{i:05d}", kind, community, TYPES[kind]))
    return out


def _block(
    device: bytes, metric: bytes, times_us: np.ndarray[Any, Any], values: np.ndarray[Any, Any]
) -> bytes:
    """COPY BINARY rows (time, device_id, metric, value) for one device and metric."""
    layout = np.dtype(
        [
            ("fields", ">i2"),
            ("len_time", ">i4"),
            ("time", ">i8"),
            ("len_device", ">i4"),
            ("device", f"S{len(device)}"),
            ("len_metric", ">i4"),
            ("metric", f"S{len(metric)}"),
            ("len_value", ">i4"),
            ("value", ">f8"),
        ]
    )
    rows = np.empty(len(times_us), dtype=layout)
    rows["fields"] = 4
    rows["len_time"] = 8
    rows["time"] = times_us
    rows["len_device"] = len(device)
    rows["device"] = device
    rows["len_metric"] = len(metric)
    rows["metric"] = metric
    rows["len_value"] = 8
    rows["value"] = values
    return rows.tobytes()


def load_readings(
    url: str, devices: list[Device], *, rows: int, end: datetime, days: int, seed: int = 1
) -> int:
    """COPY about `rows` readings rows over the `days` before `end`; returns the rows written."""
    rng = np.random.default_rng(seed)
    span_us = days * 86_400 * 1_000_000
    end_us = int((end - _PG_EPOCH).total_seconds() * 1_000_000)
    per_device = rows / len(devices)
    written = 0
    with psycopg.connect(url) as conn:
        with conn.cursor().copy(
            "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(pgcopy.SIGNATURE)
            for d in devices:
                n = max(1, int(per_device / len(d.metrics)))
                interval = span_us / n
                times = (
                    end_us
                    - span_us
                    + (np.arange(n) * interval + rng.uniform(0, interval / 5, n)).astype(np.int64)
                )
                for m in d.metrics:
                    values = np.round(rng.normal(50.0, 15.0, n), 2)
                    cp.write(_block(d.device_id.encode(), m.encode(), times, values))
                    written += n
            cp.write(pgcopy.TRAILER)
        conn.commit()
    return written


def load_registry(url: str, devices: list[Device], *, incidents_per_community: int, end: datetime) -> None:
    """The devices, and incidents spread over the month (a tenth of them still open)."""
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, building,"
                " unit, room, status, last_seen) VALUES (%s, %s, %s, %s, %s, %s, '1', '101', 'online', %s)",
                [
                    (
                        d.device_id,
                        d.device_type,
                        f"bench/{d.device_type}",
                        d.community_id,
                        f"{d.community_id}-gw",
                        str(i % 20 + 1),
                        end,
                    )
                    for i, d in enumerate(devices)
                ],
            )
        communities = sorted({d.community_id for d in devices})
        conn.execute(
            "INSERT INTO incidents (rule, subject, subject_kind, severity, state, latched, community_id,"
            " gateway_id, device_id, title_zh, title_en, detail_zh, detail_en, started_at, detected_at,"
            " last_occurrence_at, evidence, feed_seq, closed_at)"
            " SELECT 'bench_rule', c || '-dev-' || i, 'device',"
            " (ARRAY['critical', 'major', 'minor', 'info'])[1 + i %% 4],"
            " CASE WHEN i %% 10 = 0 THEN 'detected' ELSE 'closed' END, false, c, c || '-gw',"
            " c || '-dev-' || i,"
            " '测试', 'bench', '', '', t, t, t, '[]'::jsonb, i,"
            " CASE WHEN i %% 10 = 0 THEN NULL ELSE t + INTERVAL '1 hour' END"
            " FROM unnest(%s::text[]) AS c, generate_series(1, %s) AS i,"
            " LATERAL (SELECT %s::timestamptz - (i * INTERVAL '1 minute') * 43200 / %s AS t) AS times",
            (communities, incidents_per_community, end, incidents_per_community),
        )


def roll_up(url: str, *, now: datetime) -> None:
    """The hourly rollup of everything loaded (the maintenance job's first run), then ANALYZE."""
    from cloud.config import RetentionConfig
    from cloud.store.mode import prepare
    from cloud.store.rollup import refresh_rollup

    with psycopg.connect(url, autocommit=True) as conn:
        info = prepare(conn, RetentionConfig())
        if not info.server_jobs:
            with conn.transaction():
                refresh_rollup(conn, now=now, margin=timedelta(minutes=5))
        else:
            conn.execute("CALL refresh_continuous_aggregate('readings_hourly', NULL, NULL)")
        conn.execute("VACUUM ANALYZE")

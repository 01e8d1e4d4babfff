"""``linli bench alerts --json``: the alert service against the ingest, and SOS to incident.

Private services under a temporary folder (durable PostgreSQL+TimescaleDB, Mosquitto brokers);
every service is the real command as a subprocess.

1. **throughput**: `--readings` readings of a realistic mix (door contacts, SOS buttons, manhole
   covers, streetlights in `--communities` communities; ordinary values) are published to the
   cloud broker as uplink envelopes and drained by one ``linli cloud ingest`` worker
   (``ingest_rows_per_s_same_run``: readings stored per second, from its first transaction's start
   to the last batch seen committed, as ``linli bench cloud`` measures it). Then ``linli cloud
   alerts`` (shipped rules, data clock, default settings) starts on the filled feed, pinned to
   one core: ``rows_evaluated_per_s`` is the readings of the feed divided by the time from its
   partition becoming active (``/healthz``) to its checkpoint reaching the end of the feed, so
   it includes reading, decompressing and decoding the feed and committing incidents and state.
   ``engine_only_readings_per_s`` is the engine alone over the same rows, in this process.
2. **latency**: the whole chain (`simulators.demo.chain`): a field broker, ``linli edge run`` for
   one gateway, the cloud broker, one ingest worker, ``linli cloud alerts`` on the wall clock,
   pinned as deployed (gateway side and cloud side on separate cores). A simulator publishes
   ``--background`` readings/s of ordinary telemetry through the edge agent while one SOS button
   is pressed `--presses` times, each after a random pause; per press, the time from the
   ``publish`` call at the field broker to the ``NOTIFY linli_incident`` of its incident, which
   PostgreSQL delivers at the commit (``sos_to_incident_p50_ms``, ``_p99_ms``).
3. **after an outage**: the cloud broker is stopped, the button pressed ``--outage-s`` / 2 into
   the outage, the broker started again at its end; the time from the restart to the incident
   (``sos_after_outage_ms``, each trial).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import threading
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psycopg

from cloud.bench import run_ingest
from simulators.benchrun import run_in_workdir
from simulators.demo.chain import running_chain, wait_until
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config
from simulators.services import MosquittoBroker, PostgresCluster, free_port

T0_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z
SOS = "tuya/ts0215a_sos"
MANHOLE = "generic_lorawan/manhole_cover"
LAMP = "generic_nbiot/streetlight"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "alerts", help="alert service throughput vs ingest; SOS to incident latency"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument("--readings", type=int, default=400_000, help="readings for the throughput part")
    parser.add_argument("--communities", type=int, default=20)
    parser.add_argument("--background", type=int, default=10_000, help="telemetry readings/s during presses")
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--outages", type=int, default=3, help="outage trials")
    parser.add_argument("--outage-s", type=float, default=10.0)
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run in about a minute")
    parser.add_argument(
        "--workdir", type=Path, help="keep everything (logs, data) here instead of a temporary folder"
    )
    parser.set_defaults(handler=_run)


def mixed_envelopes(
    *, readings: int, communities: int, per_batch: int = 500, seed: int = 1
) -> list[tuple[str, bytes]]:
    """Telemetry envelopes of ordinary life: per community 100 devices (40 % door contacts, 20 %
    SOS buttons, 10 % manhole covers, 30 % streetlights, on at night in Shanghai), each reporting
    every 10 minutes; the communities' batches interleave, each community's clock runs on."""
    rng = random.Random(seed)  # noqa: S311 - load generation
    out: list[tuple[str, bytes]] = []
    step = 600_000_000 // 100  # 100 devices, one report each per 10 minutes
    clocks = [T0_US] * communities
    for b in range(readings // per_batch):
        c = b % communities
        community, gateway = f"c{c:03d}", f"c{c:03d}-gw"
        batch = []
        for _ in range(per_batch):
            clocks[c] += step
            ts = clocks[c]
            d = (ts // step) % 100
            device = f"{community}-d{d:03d}"
            rid = f"{rng.getrandbits(128):032x}"
            kind = d % 10
            if kind < 4:
                m: dict[str, float] = {
                    "contact_open": 0,
                    "open_count": d,
                    "battery_pct": 80,
                    "link_quality": 120,
                }
                batch.append([device, "door_contact", ts, ts, m, [], [], "aqara/mccgq11lm", rid])
            elif kind < 6:
                batch.append([device, "sos_button", ts, ts, {"battery_pct": 90}, ["heartbeat"], [], SOS, rid])
            elif kind < 7:
                m = {
                    "cover_open": 0,
                    "tilt_deg": 0.5,
                    "water_level_mm": 200,
                    "h2s_ppm": 0.2,
                    "ch4_pct_lel": 1.0,
                }
                batch.append([device, "manhole_cover", ts, ts, m | {"battery_pct": 70}, [], [], MANHOLE, rid])
            else:
                hour = (ts // 3_600_000_000 + 8) % 24  # Shanghai, January: dark from 17:00 to 07:00
                on = 1 if hour >= 17 or hour < 7 else 0
                m = {"lamp_on": on, "dim_pct": 100 * on, "voltage_v": 220, "current_a": 0.5 * on}
                m |= {"power_w": 100.0 * on, "energy_kwh": 1000, "lamp_fault": 0}
                batch.append([device, "streetlight", ts, ts, m, [], [], LAMP, rid])
        envelope = {
            "v": 1,
            "gateway_id": gateway,
            "community_id": community,
            "batch_seq": b // communities + 1,
            "class": "telemetry",
            "created_at_us": clocks[c],
            "counters": {},
            "readings": batch,
        }
        out.append((f"linli/v1/{community}/{gateway}/up", msgspec.msgpack.encode(envelope)))
    return out


def _healthz(port: int) -> dict[str, Any]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as resp:
            return dict(json.loads(resp.read()))
    except OSError:
        return {}


def _scalar(conn: psycopg.Connection[Any], query: str) -> Any:
    row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def throughput(root: Path, *, readings: int, communities: int) -> dict[str, Any]:
    envelopes = mixed_envelopes(readings=readings, communities=communities)
    total = len(envelopes) * 500
    with (
        PostgresCluster(datadir=root / "pg", durable=True) as pg,
        MosquittoBroker(workdir=root / "mqtt") as broker,
    ):
        url = pg.dsn()
        from cloud.store.migrate import migrate

        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        rows_per_s = run_ingest(url, broker, root, envelopes, 1)
        with psycopg.connect(url, autocommit=True) as conn:
            rows = int(_scalar(conn, "SELECT count(*) FROM readings"))
            stored = int(_scalar(conn, "SELECT coalesce(sum(readings), 0) FROM alert_feed"))
            horizon = int(_scalar(conn, "SELECT max(feed_seq) FROM alert_feed"))
        ingest_readings_per_s = rows_per_s * stored / rows
        port = free_port("127.0.0.1")
        toml = write_cloud_config(
            root / "alerts.toml",
            database_url=url,
            mqtt_url=broker.url,
            overrides={"alerts": {"clock": "data", "http": {"address": f"127.0.0.1:{port}"}}},
        )
        alerts = Child.python(
            name="alerts",
            module="cloud",
            args=["cloud", "alerts", "--config", str(toml)],
            log=root / "alerts.log",
        )
        alerts.start()
        try:
            pid = alerts.pid
            if pid is not None and hasattr(os, "sched_setaffinity"):
                os.sched_setaffinity(pid, {max(os.sched_getaffinity(0))})
            with psycopg.connect(url, autocommit=True) as conn:
                wait_until(lambda: _healthz(port).get("role") == "active", 60, "the alert service", alerts)
                start = time.perf_counter()
                wait_until(
                    lambda: (
                        (_scalar(conn, "SELECT coalesce(max(feed_seq), 0) FROM alert_checkpoints") or 0)
                        >= horizon
                    ),
                    600,
                    "the alert service to read the feed",
                    alerts,
                )
                elapsed = time.perf_counter() - start
                incidents = int(_scalar(conn, "SELECT count(*) FROM incidents"))
        finally:
            alerts.stop(timeout=30)
    engine_rate = _engine_only(envelopes)
    alerts_rate = stored / elapsed
    return {
        "rows_evaluated_per_s": round(alerts_rate),
        "ingest_rows_per_s_same_run": round(ingest_readings_per_s),
        "alerts_to_ingest_ratio": round(alerts_rate / ingest_readings_per_s, 2),
        "engine_only_readings_per_s": round(engine_rate),
        "throughput_readings": stored,
        "throughput_readings_published": total,
        "throughput_incidents": incidents,
    }


def _engine_only(envelopes: list[tuple[str, bytes]]) -> float:
    """The engine alone over the envelopes (decoded beforehand), one feed row per envelope."""
    from cloud.alerts.engine import Engine
    from cloud.alerts.feed import FeedRow
    from cloud.alerts.model import Directory
    from cloud.alerts.rules import RuleBook
    from cloud.ingest.envelope import decode

    rows = []
    for i, (topic, payload) in enumerate(envelopes, start=1):
        env = decode(topic, payload)
        rows.append(
            FeedRow(
                feed_seq=i,
                community_id=env.community_id,
                committed_at=datetime.now(UTC),
                envelopes=[env],
                statuses=[],
            )
        )
    directory = Directory(devices={}, communities={}, profile_intervals={})
    engine = Engine(rules=RuleBook.load(), directory=directory, clock="data")
    start = time.perf_counter()
    for row in rows:
        engine.step(row, wall_us=0)
    engine.take_dirty()
    return sum(len(r.envelopes[0].readings) for r in rows) / (time.perf_counter() - start)


class IncidentListener:
    """LISTENs on ``linli_incident`` from its own thread and keeps (arrival, payload)."""

    def __init__(self, url: str) -> None:
        self._conn = psycopg.connect(url, autocommit=True)
        self._conn.execute("LISTEN linli_incident")
        self.got: list[tuple[float, dict[str, Any]]] = []
        self._cv = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="bench-listen", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            for n in self._conn.notifies(timeout=0.2):
                with self._cv:
                    self.got.append((time.perf_counter(), json.loads(n.payload)))
                    self._cv.notify_all()

    def wait_for(self, device_id: str, after: int, timeout: float) -> float:
        """Arrival time of the first incident of `device_id` seen after index `after`."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for at, note in self.got[after:]:
                    if note.get("subject") == device_id and note.get("rule") == "sos_pressed":
                        return at
                left = deadline - time.monotonic()
                if left <= 0:
                    raise RuntimeError(f"no incident for {device_id} within {timeout} s")
                self._cv.wait(left)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._conn.close()


def latency(root: Path, *, background: int, presses: int, outages: int, outage_s: float) -> dict[str, Any]:
    with running_chain(root) as chain:
        listener = IncidentListener(chain.url)
        try:
            button = chain.button.device_id

            def press() -> tuple[float, int]:
                mark = len(listener.got)
                return chain.press(), mark

            rng = random.Random(5)  # noqa: S311 - pacing
            samples: list[float] = []
            with chain.background(background, seconds=10 + presses * 1.0):
                time.sleep(3.0)  # let the background reach its pace before the first press
                for _ in range(presses):
                    time.sleep(rng.uniform(0.2, 0.6))  # pacing the presses at random phases
                    start, mark = press()
                    samples.append((listener.wait_for(button, mark, 30) - start) * 1000)
            after: list[float] = []
            for _ in range(outages):
                chain.cloud.stop()
                time.sleep(outage_s / 2)  # the outage itself
                _, mark = press()
                time.sleep(outage_s / 2)
                chain.cloud.start()
                back = time.perf_counter()
                after.append((listener.wait_for(button, mark, 120) - back) * 1000)
            chain.check()
        finally:
            listener.close()
    return {
        "sos_to_incident_p50_ms": round(float(np.percentile(samples, 50)), 1),
        "sos_to_incident_p99_ms": round(float(np.percentile(samples, 99)), 1),
        "sos_to_incident_max_ms": round(max(samples), 1),
        "sos_presses": len(samples),
        "background_readings_per_s": background,
        "sos_after_outage_ms": [round(x, 1) for x in after],
        "outage_s": outage_s,
    }


def _run(args: argparse.Namespace) -> int:
    if args.quick:
        args.readings, args.communities, args.presses, args.outages, args.background = 20_000, 4, 8, 1, 2000
        args.outage_s = 4.0

    def measured(root: Path) -> dict[str, Any]:
        figures = throughput(root, readings=args.readings, communities=args.communities)
        figures |= latency(
            root,
            background=args.background,
            presses=args.presses,
            outages=args.outages,
            outage_s=args.outage_s,
        )
        return figures

    return run_in_workdir(args.workdir, measured, prefix="linli-bench-alerts-")

"""``linli bench cloud --json``: sustained ingest throughput against the raw binary-COPY ceiling.

Starts a private durable PostgreSQL+TimescaleDB and a private Mosquitto, then:

1. **ceiling**: one binary ``COPY readings`` of as many rows in one transaction, packed before
   the clock starts, so it measures the server alone (rows/s);
2. **1 worker** and **2 workers**: ``linli cloud ingest`` processes subscribe once (creating their
   persistent sessions) and stop; the pre-built envelope batches are published to the broker;
   the workers start again and drain the backlog. Throughput is rows stored divided by the time
   from the first transaction's start (``ingested_batches.ingested_at``) to the moment the last
   batch was seen committed.

"readings" in ``readings_per_s_*`` are rows of the ``readings`` table, i.e. data points (time,
device, metric, value), the unit of the ceiling; ``canonical_readings_per_s_*`` count the edge's
readings, of which each door-contact reading here carries three metrics. The workers run the
shipped configuration defaults (``receive_maximum``, ``max_readings_per_txn``, ``txn_max_latency_ms``).
``load_average_1m`` is the machine's load before the ceiling and after the last run.

3. **alarm batches**: one worker with the shipped defaults runs alone; alarm-class envelopes (one
   ``sos_pressed`` reading each) are published one at a time, each after the previous one was
   seen stored, and the time from the ``publish`` call to the moment its ``(gateway_id,
   batch_seq)`` is seen committed in ``ingested_batches`` is taken (polled over one connection
   every 2 ms). Then again with a fresh worker while telemetry flows through it at
   ``--alarm-background`` readings/s (envelopes of 500 readings, paced), each alarm after a random
   pause of up to 250 ms so it meets the telemetry transactions at any phase.
   ``--alarms-only`` runs just this part.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import paho.mqtt.client as mqtt
import psycopg
from paho.mqtt.enums import CallbackAPIVersion

from cloud.store import pgcopy
from cloud.store.migrate import migrate

_T0_US = 1_767_225_600_000_000
_METRICS = ("contact_open", "battery_pct", "link_quality")


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("cloud", help="cloud ingest throughput vs the binary COPY ceiling")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    p.add_argument("--batches", type=int, default=300, help="envelopes per run")
    p.add_argument("--readings-per-batch", type=int, default=1000)
    p.add_argument("--gateways", type=int, default=20)
    p.add_argument("--devices", type=int, default=20_000)
    p.add_argument("--workdir", type=Path, default=None, help="keep services here (default: a temp dir)")
    p.add_argument("--alarm-samples", type=int, default=100, help="alarm batches timed one at a time")
    p.add_argument("--alarms-only", action="store_true", help="only the alarm-batch latency")
    p.add_argument(
        "--alarm-background",
        type=int,
        default=10_000,
        help="telemetry readings/s during the second alarm run",
    )
    p.set_defaults(handler=_run)


def build_envelopes(
    *, batches: int, per_batch: int, gateways: int, devices: int, seed: int
) -> list[tuple[str, bytes]]:
    """Pre-built ``(topic, payload)`` pairs in the documented envelope format."""
    rng = random.Random(seed)  # noqa: S311 - load generation
    out: list[tuple[str, bytes]] = []
    ts = _T0_US
    for b in range(batches):
        gw = f"gw{b % gateways:03d}"
        readings = []
        for _ in range(per_batch):
            ts += 1000
            d = rng.randrange(devices)
            readings.append(
                [
                    f"dev{d:06d}",
                    "door_contact",
                    ts,
                    ts + 500,
                    {"contact_open": d & 1, "battery_pct": 50 + d % 50, "link_quality": 100 + d % 100},
                    [],
                    [],
                    "aqara/mccgq11lm",
                    f"{rng.getrandbits(128):032x}",
                ]
            )
        payload = msgspec.msgpack.encode(
            {
                "v": 1,
                "gateway_id": gw,
                "community_id": "c1",
                "batch_seq": b // gateways + 1,
                "class": "telemetry",
                "created_at_us": ts,
                "counters": {},
                "readings": readings,
            }
        )
        out.append((f"linli/v1/c1/{gw}/up", payload))
    return out


def copy_ceiling(url: str, rows: int) -> float:
    """Rows/s of one binary ``COPY readings`` in one transaction (then truncated).

    The rows are packed into COPY's binary format before the clock starts, so this is what the
    server can take through one connection, with no client-side cost at all.
    """
    text = pgcopy.TextFields()
    parts = [
        b"\x00\x04"
        + pgcopy.timestamp(_T0_US + i * 1000)
        + text[f"dev{i % 20_000:06d}"]
        + text[_METRICS[i % 3]]
        + pgcopy.float8(float(i % 100))
        for i in range(rows)
    ]
    chunks = [b"".join(parts[i : i + 3000]) for i in range(0, rows, 3000)]
    del parts
    with psycopg.connect(url) as conn:
        start = time.perf_counter()
        with conn.cursor().copy(
            "COPY readings (time, device_id, metric, value) FROM STDIN (FORMAT BINARY)"
        ) as cp:
            cp.write(pgcopy.SIGNATURE)
            for chunk in chunks:
                cp.write(chunk)
            cp.write(pgcopy.TRAILER)
        conn.commit()
        elapsed = time.perf_counter() - start
        conn.execute("TRUNCATE readings")
        conn.commit()
    return rows / elapsed


def _config(workdir: Path, url: str, broker_url: str, client_id: str, group: str) -> Path:
    path = workdir / f"{client_id}.toml"
    path.write_text(
        f'database_url = "{url}"\nlog_level = "WARNING"\n'
        f'[mqtt]\nurl = "{broker_url}"\nclient_id = "{client_id}"\n'
        f'share_group = "{group}"\n'
        '[retention]\ninterval_s = 3600\n[http]\naddress = ""\n'
    )
    return path


@contextmanager
def _workers(configs: list[Path]) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs = [
        subprocess.Popen([sys.executable, "-m", "cloud", "cloud", "ingest", "--config", str(c)])  # noqa: S603 - ours
        for c in configs
    ]
    try:
        yield procs
    finally:
        for p in procs:
            p.send_signal(signal.SIGTERM)
        for p in procs:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _scalar(url: str, query: str) -> Any:
    with psycopg.connect(url) as conn:
        row = conn.execute(query.encode()).fetchone()
    return None if row is None else row[0]


def _wait_subscribed(url: str, broker: Any, n: int) -> None:
    """Each worker writes the probe status; n rows of it... (one row per gateway): wait for it."""
    probe = f"probe{os.getpid()}"
    with psycopg.connect(url, autocommit=True) as conn:  # an earlier run's probe row
        conn.execute("DELETE FROM gateways WHERE gateway_id = %s", (probe,))
    pub = _publisher(broker)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        pub.publish(f"linli/v1/c1/{probe}/status", b'{"state": "online"}', qos=1).wait_for_publish(10)
        time.sleep(0.5)
        if _scalar(url, f"SELECT count(*) FROM gateways WHERE gateway_id = '{probe}'") == 1:  # noqa: S608
            time.sleep(1.0 * n)
            break
    else:
        raise RuntimeError("ingest workers did not subscribe within 60 s")
    pub.disconnect()
    pub.loop_stop()


def _publisher(broker: Any, name: str = "bench-pub") -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{name}-{os.getpid()}", protocol=mqtt.MQTTv5)
    client.max_inflight_messages_set(200)
    client.connect(broker.host, broker.port)
    client.loop_start()
    return client


def run_ingest(
    url: str, broker: Any, workdir: Path, envelopes: list[tuple[str, bytes]], n_workers: int
) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("TRUNCATE readings, ingested_batches, reading_ids, devices, gateways")
    # A group per run: a stopped worker's persistent session keeps receiving its share of its group.
    group = f"bench-{n_workers}"
    configs = [_config(workdir, url, broker.url, f"bench-{n_workers}-{i}", group) for i in range(n_workers)]
    with _workers(configs):  # create the persistent sessions and their subscriptions
        _wait_subscribed(url, broker, n_workers)
    pub = _publisher(broker)
    for topic, payload in envelopes:
        pub.publish(topic, payload, qos=1)
    pub.publish("linli/v1/c1/bench/status", b"{}", qos=1).wait_for_publish(60)
    pub.disconnect()
    pub.loop_stop()
    with psycopg.connect(url, autocommit=True) as poll, _workers(configs):
        deadline = time.monotonic() + 600
        while True:  # one connection, polled: a connection per poll would cost the server a fork
            row = poll.execute("SELECT count(*) FROM ingested_batches").fetchone()
            if row is not None and row[0] >= len(envelopes):
                break
            if time.monotonic() > deadline:
                raise RuntimeError("ingest did not finish in 10 minutes")
            time.sleep(0.05)
        done = datetime.now(UTC)
    first: datetime = _scalar(url, "SELECT min(ingested_at) FROM ingested_batches")
    rows = _scalar(url, "SELECT count(*) FROM readings")
    return float(rows) / float((done - first).total_seconds())


def alarm_envelope(seq: int, now_us: int, gateway_id: str) -> bytes:
    """One alarm-class envelope holding one SOS press (the documented envelope format)."""
    reading = [
        "sos0001",
        "sos_button",
        now_us,
        now_us,
        {"battery_pct": 90},
        ["sos_pressed"],
        [],
        "bench/sos",
        uuid.uuid4().hex,
    ]
    return msgspec.msgpack.encode(
        {
            "v": 1,
            "gateway_id": gateway_id,
            "community_id": "c1",
            "batch_seq": seq,
            "class": "alarm",
            "created_at_us": now_us,
            "counters": {},
            "readings": [reading],
        }
    )


class _Telemetry:
    """Publishes telemetry envelopes of `per_batch` readings at `per_s` readings/s from its own
    thread (the only one it starts), from entering the context until leaving it."""

    def __init__(self, broker: Any, *, per_s: int, per_batch: int = 500) -> None:
        self._broker = broker
        self._interval = per_batch / per_s if per_s > 0 else 0.0
        self._per_batch = per_batch
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_loop, name="bench-telemetry", daemon=True)

    def __enter__(self) -> _Telemetry:
        if self._interval > 0:
            self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(30)

    def _publish_loop(self) -> None:
        rng = random.Random(2)  # noqa: S311 - load generation
        pub = _publisher(self._broker, "bench-telemetry")
        next_at = time.monotonic()
        seq = 0
        while not self._stop.is_set():
            seq += 1
            now_us = time.time_ns() // 1000
            readings = []
            for i in range(self._per_batch):
                d = rng.randrange(2000)
                readings.append(
                    [
                        f"dev{d:06d}",
                        "door_contact",
                        now_us + i,
                        now_us + i,
                        {"contact_open": d & 1, "battery_pct": 50 + d % 50, "link_quality": 100 + d % 100},
                        [],
                        [],
                        "aqara/mccgq11lm",
                        f"{rng.getrandbits(128):032x}",
                    ]
                )
            envelope = {
                "v": 1,
                "gateway_id": "gwload",
                "community_id": "c1",
                "batch_seq": seq,
                "class": "telemetry",
                "created_at_us": now_us,
                "counters": {},
                "readings": readings,
            }
            pub.publish("linli/v1/c1/gwload/up", msgspec.msgpack.encode(envelope), qos=1)
            next_at += self._interval
            self._stop.wait(max(0.0, next_at - time.monotonic()))  # pacing the load, not a sync
        pub.disconnect()
        pub.loop_stop()


def alarm_latencies(
    url: str, broker: Any, workdir: Path, samples: int, *, background_per_s: int = 0
) -> list[float]:
    """Milliseconds from each alarm envelope's ``publish`` call to its batch seen committed,
    while `background_per_s` telemetry readings/s flow through the same worker."""
    name = f"bench-alarm-{background_per_s}"
    config = _config(workdir, url, broker.url, f"{name}-0", name)
    gateway = f"gwalarm{background_per_s}"
    rng = random.Random(3)  # noqa: S311 - pacing
    out: list[float] = []
    with _workers([config]):
        _wait_subscribed(url, broker, 1)
        pub = _publisher(broker, name)
        with psycopg.connect(url, autocommit=True) as poll, _Telemetry(broker, per_s=background_per_s):
            for seq in range(1, samples + 1):
                if background_per_s:  # a random phase against the telemetry transactions
                    time.sleep(rng.uniform(0, 0.25))
                payload = alarm_envelope(seq, time.time_ns() // 1000, gateway)
                start = time.perf_counter()
                pub.publish(f"linli/v1/c1/{gateway}/up", payload, qos=1)
                deadline = start + 30
                while (
                    poll.execute(
                        "SELECT 1 FROM ingested_batches WHERE gateway_id = %s AND batch_seq = %s",
                        (gateway, seq),
                    ).fetchone()
                    is None
                ):
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"alarm batch {seq} not stored within 30 s")
                    time.sleep(0.002)
                out.append((time.perf_counter() - start) * 1000)
        pub.disconnect()
        pub.loop_stop()
    return out


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def _alarm_figures(idle: list[float], loaded: list[float], background_per_s: int) -> dict[str, float]:
    return {
        "alarm_publish_to_stored_p50_ms": round(_percentile(idle, 0.5), 1),
        "alarm_publish_to_stored_p99_ms": round(_percentile(idle, 0.99), 1),
        "alarm_publish_to_stored_max_ms": round(max(idle), 1),
        "alarm_under_load_p50_ms": round(_percentile(loaded, 0.5), 1),
        "alarm_under_load_p99_ms": round(_percentile(loaded, 0.99), 1),
        "alarm_under_load_max_ms": round(max(loaded), 1),
        "alarm_background_readings_per_s": background_per_s,
        "alarm_samples": len(idle),
    }


def _run(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        return _measure(args, args.workdir)
    root = Path(tempfile.mkdtemp(prefix="linli-bench-cloud-"))
    try:
        return _measure(args, root)
    finally:
        shutil.rmtree(root, ignore_errors=True)  # the services are stopped by now


def _measure(args: argparse.Namespace, root: Path) -> int:
    from simulators.services import MosquittoBroker, PostgresCluster

    if args.alarms_only:
        with (
            PostgresCluster(datadir=root / "pg", durable=True) as pg,
            MosquittoBroker(workdir=root / "mqtt") as broker,
        ):
            with psycopg.connect(pg.dsn(), autocommit=True) as conn:
                migrate(conn)
            alarms = alarm_latencies(pg.dsn(), broker, root, args.alarm_samples)
            loaded = alarm_latencies(
                pg.dsn(), broker, root, args.alarm_samples, background_per_s=args.alarm_background
            )
        print(json.dumps(_alarm_figures(alarms, loaded, args.alarm_background)))
        return 0
    envelopes = build_envelopes(
        batches=args.batches,
        per_batch=args.readings_per_batch,
        gateways=args.gateways,
        devices=args.devices,
        seed=1,
    )
    rows = args.batches * args.readings_per_batch * len(_METRICS)
    with (
        PostgresCluster(datadir=root / "pg", durable=True) as pg,
        MosquittoBroker(workdir=root / "mqtt") as broker,
    ):
        url = pg.dsn()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        load_before = os.getloadavg()[0]
        ceiling = copy_ceiling(url, rows)
        one = run_ingest(url, broker, root, envelopes, 1)
        two = run_ingest(url, broker, root, envelopes, 2)
        alarms = alarm_latencies(url, broker, root, args.alarm_samples)
        loaded = alarm_latencies(
            url, broker, root, args.alarm_samples, background_per_s=args.alarm_background
        )
        load_after = os.getloadavg()[0]
    figures = {
        "readings_per_s_1_worker": round(one),
        "readings_per_s_2_workers": round(two),
        "copy_ceiling_rows_per_s": round(ceiling),
        "ratio_to_ceiling": round(one / ceiling, 3),
        "canonical_readings_per_s_1_worker": round(one / len(_METRICS)),
        "canonical_readings_per_s_2_workers": round(two / len(_METRICS)),
        "rows": rows,
        "load_average_1m": [round(load_before, 2), round(load_after, 2)],
        **_alarm_figures(alarms, loaded, args.alarm_background),
    }
    if not args.json:
        print(
            f"{args.batches} envelopes x {args.readings_per_batch} readings x {len(_METRICS)} metrics",
            file=sys.stderr,
        )
    print(json.dumps(figures))
    return 0

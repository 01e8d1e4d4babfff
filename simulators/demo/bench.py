"""``linli bench e2e --json``: simulators for 10,000 devices through an edge agent into TimescaleDB.

Private services under a temporary folder: a field broker, the cloud broker as linli ships it
(Mosquitto, mutual TLS, each gateway confined to its topics), a durable PostgreSQL+TimescaleDB.
``linli cloud ingest`` (one worker) and ``linli edge run`` (one gateway serving all devices, default
configuration: ``buffer.durability = "full"``) run as subprocesses; the simulator runs in this
process, publishing at QoS 1 to the field broker, so every publish is time-stamped where it happens.
A watcher thread polls ``reading_ids`` (the cloud's per-reading claim, written in the transaction
that stores the reading) every 10 ms: a reading counts as committed when its id is first seen there,
i.e. after its transaction committed.

1. **throughput** (``readings_per_s``): the agent subscribes once (creating its persistent session
   at the field broker) and stops; the simulator publishes ``--messages`` messages unpaced, which
   the broker queues; the agent starts again and drains them through the ingest into the database.
   Rate = readings committed after the first commit seen / (last commit seen - first commit seen):
   the pipeline's sustained rate without the load generator competing for the two cores. The CPU
   cores each component used over that window are printed too.
2. **live** (``readings_per_s_live``): the simulator publishes ``--live-messages`` unpaced while
   the agent runs; distinct readings committed / (last commit seen - first publish).
3. **latency**: the simulator is paced at ``--latency-rate`` readings/s for ``--latency-seconds``;
   per reading, commit seen - publish call. ``latency_p50_ms`` and ``latency_p99_ms`` are over all
   readings of that phase. The 10 ms polling adds 0-10 ms (5 ms on average) to every sample.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import psycopg

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from simulators.clock import SimClock
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.demo.pki import demo_pki
from simulators.faults import FaultOptions
from simulators.fleet import load_fleet
from simulators.output import MqttSink, Sink
from simulators.rand import RandomStream
from simulators.runner import run_simulation
from simulators.services import MosquittoBroker, PostgresCluster
from simulators.simulation import Simulation
from simulators.truth import TruthWriter, read_truth

POLL_S = 0.01


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "e2e", help="simulators -> edge agent -> ingest -> TimescaleDB: rate and latency"
    )
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    p.add_argument("--devices", type=int, default=10_000)
    p.add_argument("--messages", type=int, default=100_000, help="messages of the backlog (throughput) phase")
    p.add_argument("--live-messages", type=int, default=50_000, help="messages of the live phase")
    p.add_argument("--latency-seconds", type=float, default=20.0)
    p.add_argument(
        "--latency-rate", type=float, default=1000.0, help="readings/s offered in the latency phase"
    )
    p.add_argument("--workdir", type=Path, default=None, help="keep services here (default: a temp dir)")
    p.set_defaults(handler=_run)


class StampingSink:
    """Wraps a sink and records the wall time of every publish call, in publishing order."""

    def __init__(self, inner: Sink) -> None:
        self.inner = inner
        self.target = inner.target
        self.times: list[float] = []

    @property
    def errors(self) -> int:
        return self.inner.errors

    @errors.setter
    def errors(self, value: int) -> None:
        self.inner.errors = value

    def publish(self, topic: str, payload: bytes) -> None:
        self.times.append(time.time())
        self.inner.publish(topic, payload)

    def idle(self, seconds: float) -> None:
        self.inner.idle(seconds)

    def close(self, *, timeout: float = 10.0) -> None:
        self.inner.close(timeout=timeout)


class CommitWatcher:
    """Polls ``reading_ids`` and remembers when each reading id was first seen committed."""

    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self.seen: dict[uuid.UUID, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="commit-watcher", daemon=True)
        self.error: BaseException | None = None

    def __enter__(self) -> CommitWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        try:
            with psycopg.connect(self.database_url, autocommit=True) as conn:
                last = datetime(1970, 1, 1, tzinfo=UTC)
                while not self._stop.is_set():
                    rows = conn.execute(
                        "SELECT reading_id, ingested_at FROM reading_ids WHERE ingested_at > %s", (last,)
                    ).fetchall()
                    now = time.time()
                    for rid, at in rows:
                        self.seen.setdefault(rid, now)
                        last = max(last, at)
                    self._stop.wait(POLL_S)
        except psycopg.Error as exc:  # reported by the caller
            self.error = exc

    def wait_for(self, ids: set[uuid.UUID], *, idle_timeout: float = 30.0) -> None:
        """Until every id is seen, or nothing new arrived for `idle_timeout` seconds."""
        last_n, last_change = -1, time.monotonic()
        while not ids <= self.seen.keys():
            n = len(self.seen)
            if n != last_n:
                last_n, last_change = n, time.monotonic()
            if time.monotonic() - last_change > idle_timeout or self.error is not None:
                return
            time.sleep(0.05)


def _cpu_s(pid: int | None, *, descendants: bool = True) -> float:
    """User + system CPU seconds of a process and its live descendants (0 if it is gone)."""
    if pid is None:
        return 0.0
    try:
        proc = psutil.Process(pid)
        procs = [proc, *(proc.children(recursive=True) if descendants else ())]
    except psutil.Error:
        return 0.0
    total = 0.0
    for p in procs:
        try:
            t = p.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _component_cpu(pid: int | None) -> float:
    """CPU seconds of a component; -1 stands for this process alone (its children are measured apart)."""
    if pid == -1:
        return _cpu_s(os.getpid(), descendants=False)
    return _cpu_s(pid)


def _pg_pid(datadir: Path) -> int | None:
    try:
        return int((datadir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def _as_uuid(reading_id: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(reading_id)
    except ValueError:
        return None


def _phase(
    *,
    inventory: Inventory,
    profiles: ProfileSet,
    seed: int,
    start: datetime,
    speed: float | None,
    count: int,
    broker_url: str,
    truth_path: Path,
) -> tuple[list[tuple[uuid.UUID, float]], float, int]:
    """Publish `count` messages; returns (first-publish time per reading, sim seconds, messages)."""
    rs = RandomStream(np.random.default_rng(seed))
    sim = Simulation(
        inventory=inventory,
        start=start,
        seed=seed,
        profiles=profiles,
        rs=rs,
        scenarios=[],
        faults=FaultOptions(),
    )
    sink = StampingSink(MqttSink(url=broker_url, qos=1, client_id=f"linli-bench-e2e-{seed}"))
    summary = run_simulation(
        sim,
        sink=sink,
        truth=TruthWriter(truth_path),
        clock=SimClock(start_ms=sim.start_ms, speed=speed),
        count=count,
    )
    messages = [r for r in read_truth(truth_path) if r["kind"] == "message"]
    if len(messages) != len(sink.times):
        raise RuntimeError(f"{len(messages)} messages in the ground truth, {len(sink.times)} published")
    first: dict[uuid.UUID, float] = {}
    for rec, at in zip(messages, sink.times, strict=True):
        rid = _as_uuid(rec["reading_id"])
        if rid is not None and rid not in first:
            first[rid] = at
    sim_s = (_parse(summary.sim_end) - _parse(summary.sim_start)).total_seconds()
    return list(first.items()), sim_s, len(messages)


def run_bench(
    *,
    workdir: Path,
    devices: int,
    messages: int,
    live_messages: int,
    latency_seconds: float,
    latency_rate: float,
) -> dict[str, Any]:
    profiles = ProfileSet.shipped()
    fleet = workdir / "fleet.yaml"
    fleet.write_text(
        "communities:\n  - id: bench\n    lat: 31.2304\n    lon: 121.4737\n    gateways: 1\n"
        f"    devices: {{door_contact: {devices * 4 // 10}, sos_button: {devices * 2 // 10}, "
        f"manhole_cover: {devices // 10}, streetlight: {devices - devices * 7 // 10}}}\n"
    )
    inventory = load_fleet(str(fleet), rs=RandomStream(np.random.default_rng(11)), profiles=profiles)
    inv = workdir / "inventory.json"
    inventory.dump(inv)
    gateway = inventory.devices[0].gateway_id
    field = MosquittoBroker(workdir=workdir / "field")
    pki = demo_pki(workdir / "pki", community_id="bench", gateway_ids=[gateway])
    cloud = pki.cloud_broker(workdir / "cloud")
    pg = PostgresCluster(datadir=workdir / "pg", durable=True)
    children: list[Child] = []
    try:
        field.start()
        cloud.start()
        pg.start()
        url = pg.dsn("postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        ingest = Child.python(
            name="ingest",
            module="cloud",
            args=[
                "cloud",
                "ingest",
                "--config",
                str(
                    write_cloud_config(
                        workdir / "cloud.toml",
                        database_url=url,
                        mqtt_url=cloud.url,
                        overrides=pki.ingest_overrides(),
                    )
                ),
            ],
            log=workdir / "ingest.log",
        )
        edge_toml = write_edge_config(
            workdir / "edge.toml",
            gateway_id=gateway,
            community_id="bench",
            inventory=inv,
            field_url=field.url,
            cloud_url=cloud.url,
            buffer=workdir / "buffer.db",
            overrides=pki.gateway_overrides(gateway) | {"status": {"interval_s": 60.0}},
        )
        edge = Child.python(
            name="edge", module="edge", args=["run", "--config", str(edge_toml)], log=workdir / "edge.log"
        )
        children += [ingest, edge]
        ingest.start()
        _wait_until(lambda: _has_table(url), 60, "the ingest to migrate the database", ingest)
        edge.start()
        _wait_until(lambda: "subscribed" in edge.log_tail(1_000_000), 60, "the edge agent to subscribe", edge)
        # The field broker now keeps the agent's persistent session: stop the agent cleanly.
        if edge.stop(timeout=30) != 0:
            raise RuntimeError(f"the edge agent did not stop cleanly:\n{edge.log_tail()}")

        components: dict[str, Callable[[], int | None]] = {
            "bench_process": lambda: -1,
            "edge": lambda: edge.pid,
            "ingest": lambda: ingest.pid,
            "postgres": lambda: _pg_pid(workdir / "pg"),
            "mosquitto_field": lambda: field.pid,
            "mosquitto_cloud": lambda: cloud.pid,
        }
        with CommitWatcher(url) as watcher:
            # 1. Throughput: a backlog queued at the field broker while the agent is down, drained.
            sent, _, n_msgs = _phase(
                inventory=inventory,
                profiles=profiles,
                seed=1,
                start=datetime(2026, 1, 1, tzinfo=UTC),
                speed=None,
                count=messages,
                broker_url=field.url,
                truth_path=workdir / "truth-backlog.jsonl",
            )
            ids = {rid for rid, _ in sent}
            edge.start()
            cpu0 = {name: _component_cpu(pid()) for name, pid in components.items()}
            watcher.wait_for(ids)
            committed = sorted(watcher.seen[rid] for rid in ids if rid in watcher.seen)
            first, last = committed[0], committed[-1]
            rate = sum(1 for t in committed if t > first) / (last - first)
            cores = {
                name: round((_component_cpu(pid()) - cpu0[name]) / (last - first), 2)
                for name, pid in components.items()
            }
            missing = len(ids) - len(committed)

            # 2. Live: the simulator publishes unpaced while the agent runs (same two cores).
            sent_l, sim_s, n_live = _phase(
                inventory=inventory,
                profiles=profiles,
                seed=2,
                start=datetime(2026, 2, 1, tzinfo=UTC),
                speed=None,
                count=live_messages,
                broker_url=field.url,
                truth_path=workdir / "truth-live.jsonl",
            )
            ids_l = {rid for rid, _ in sent_l}
            watcher.wait_for(ids_l)
            committed_l = [watcher.seen[rid] for rid in ids_l if rid in watcher.seen]
            rate_live = len(committed_l) / (max(committed_l) - min(at for _, at in sent_l))
            missing += len(ids_l) - len(committed_l)

            # 3. Latency at a fixed offered rate.
            speed = latency_rate / (n_live / sim_s)
            sent_b, _, _ = _phase(
                inventory=inventory,
                profiles=profiles,
                seed=3,
                start=datetime(2026, 3, 1, tzinfo=UTC),
                speed=speed,
                count=max(1, int(latency_rate * latency_seconds)),
                broker_url=field.url,
                truth_path=workdir / "truth-latency.jsonl",
            )
            ids_b = {rid for rid, _ in sent_b}
            watcher.wait_for(ids_b)
            lat = np.array([(watcher.seen[rid] - at) * 1000 for rid, at in sent_b if rid in watcher.seen])
            missing += len(ids_b) - len(lat)
            t_b = [at for _, at in sent_b]
            offered = len(sent_b) / (max(t_b) - min(t_b)) if len(t_b) > 1 else 0.0
        for child in children:
            if not child.running:
                raise RuntimeError(f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}")
        return {
            "readings_per_s": round(rate),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "latency_p99_ms": round(float(np.percentile(lat, 99)), 1),
            "devices": len(inventory.devices),
            "backlog_messages": n_msgs,
            "backlog_readings": len(ids),
            "readings_per_s_live": round(rate_live),
            "live_readings": len(ids_l),
            "latency_readings": len(ids_b),
            "latency_offered_readings_per_s": round(offered),
            "not_committed": missing,
            "durability": "full",
            "cpu_cores_backlog_drain": cores,
        }
    finally:
        for child in reversed(children):
            child.stop(timeout=30)
        field.stop()
        cloud.stop()
        pg.stop()


def _has_table(url: str) -> bool:
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=2) as conn:
            row = conn.execute("SELECT to_regclass('reading_ids') IS NOT NULL").fetchone()
    except psycopg.Error:
        return False
    return bool(row and row[0])


def _wait_until(cond: Any, timeout: float, what: str, child: Child) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if not child.running:
            raise RuntimeError(f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _run(args: argparse.Namespace) -> int:
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        figures = run_bench(
            workdir=args.workdir.resolve(),
            devices=args.devices,
            messages=args.messages,
            live_messages=args.live_messages,
            latency_seconds=args.latency_seconds,
            latency_rate=args.latency_rate,
        )
    else:
        with tempfile.TemporaryDirectory(prefix="linli-bench-e2e-") as tmp:
            figures = run_bench(
                workdir=Path(tmp),
                devices=args.devices,
                messages=args.messages,
                live_messages=args.live_messages,
                latency_seconds=args.latency_seconds,
                latency_rate=args.latency_rate,
            )
    if not args.json:
        print("linli bench e2e (see docs/benchmarks.md):", file=sys.stderr)
    print(json.dumps(figures))
    return 0

"""``linli chaos``: the whole chain under faults, then an exact comparison with the ground truth.

Two communities of one gateway each, every service the real command as a subprocess: a field
broker and ``linli edge run`` per gateway, the cloud broker locked down as linli ships it (mutual
TLS, an ACL per gateway, persistence on), two ``linli cloud ingest`` workers on one shared
subscription, ``linli cloud alerts`` on the data clock, a durable PostgreSQL+TimescaleDB, and one
simulator per gateway (SOS presses, lifted covers, malformed and duplicate messages). The first
gateway reaches the cloud broker through a `LinkCut` relay.

While the simulators run (`ChaosPlan.minutes`), the faults of `schedule` strike: each edge agent
and each ingest worker is SIGKILLed several times (restarted at once, as systemd would), the cloud
broker restarts, the database stops for `database_outage_s`, and the first gateway's link is cut
for `link_cut_s`. A service that exits by itself is restarted too, and counted. Then the run
drains (every expected row stored, the alert service through the whole feed), stops cleanly, and
compares: `simulators.verify` for readings and events, `simulators.verify_alerts` for incidents.
`ChaosSummary` is the JSON printed; `exact` is the verdict.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psycopg

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from simulators.chaos.linkcut import LinkCut
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.demo.pki import DemoPki, demo_pki
from simulators.errors import ServiceError
from simulators.fleet import load_fleet
from simulators.rand import RandomStream
from simulators.services import MosquittoBroker, PostgresCluster
from simulators.verify import expected_rows, verify
from simulators.verify_alerts import AlertsOptions, verify_alerts

COMMUNITIES = ("chaos-a", "chaos-b")
#: Share of each device type in a gateway's fleet (door contacts, SOS buttons, covers, lamps).
MIX = {"door_contact": 0.4, "sos_button": 0.2, "manhole_cover": 0.1, "streetlight": 0.3}


@dataclass(frozen=True, kw_only=True)
class ChaosPlan:
    """What runs and what strikes it."""

    minutes: float
    seed: int = 1
    #: devices per gateway
    devices: int = 6000
    #: simulated seconds per second: about devices x speed / 1,600 messages per second a gateway.
    #: Kept low: a wall second of delay is `speed` seconds of data time, and at 1,600x the
    #: reordering an outage causes (seconds) spans a device's report interval (tens of minutes)
    speed: float = 60.0
    edge_kills: int = 3
    ingest_kills: int = 3
    database_outage_s: float = 30.0
    link_cut_s: float = 60.0
    drain_timeout_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Fault:
    """One step of the schedule, `at_s` seconds after the simulators start."""

    at_s: float
    action: str
    target: str = ""


def schedule(plan: ChaosPlan, *, gateways: list[str], workers: list[str]) -> list[Fault]:
    """The run's faults in time order: kills spread over the run (one in each of `edge_kills`
    equal spans per agent, at a seeded random moment), the database outage from 15 % of the run,
    the link cut from 45 %, the broker restart at 80 %."""
    rng = random.Random(plan.seed)  # noqa: S311 - a reproducible schedule, not a secret
    span = plan.minutes * 60
    faults = [
        Fault(0.15 * span, "database_stop"),
        Fault(0.15 * span + plan.database_outage_s, "database_start"),
        Fault(0.45 * span, "link_cut", gateways[0]),
        Fault(0.45 * span + plan.link_cut_s, "link_restore", gateways[0]),
        Fault(0.80 * span, "broker_restart"),
    ]
    for kills, names in ((plan.edge_kills, gateways), (plan.ingest_kills, workers)):
        for name in names:
            for k in range(kills):
                lo, hi = span * k / kills, span * (k + 1) / kills
                faults.append(Fault(rng.uniform(lo + 0.05 * (hi - lo), hi - 0.05 * (hi - lo)), "kill", name))
    return sorted(faults, key=lambda f: f.at_s)


class AlertsSummary(msgspec.Struct, omit_defaults=False):
    conditions: int = 0
    detected: int = 0
    missed: int = 0
    doubled: int = 0
    #: incidents no condition of the truth explains (the link cut's ``gateway_offline`` among them)
    false_positives: int = 0


class ChaosSummary(msgspec.Struct, omit_defaults=False):
    """What ``linli chaos`` prints. `exact`: every expected row and event stored once with its
    values, nothing unexpected, and no alert condition missed or detected twice."""

    exact: bool
    minutes: float
    seed: int
    gateways: int
    ingest_workers: int
    kills: dict[str, int]
    broker_restarts: int
    database_down_s: float
    link_cut_s: float
    #: services that exited by themselves and were restarted, by name
    unplanned_restarts: dict[str, int]
    messages: int = 0
    expected: int = 0
    stored: int = 0
    missing: int = 0
    expected_rows: int = 0
    stored_rows: int = 0
    missing_rows: int = 0
    duplicated_rows: int = 0
    wrong: int = 0
    unexpected_rows: int = 0
    missing_events: int = 0
    duplicated_events: int = 0
    alerts: AlertsSummary = msgspec.field(default_factory=AlertsSummary)
    #: seconds from the simulators' end to everything stored and evaluated
    drain_s: float = 0.0
    ingest_rss_max_mb: float = 0.0
    timeline: list[str] = msgspec.field(default_factory=list)
    examples: dict[str, list[str]] = msgspec.field(default_factory=dict)


def load_fleet_text(text: str, *, seed: int) -> Inventory:
    """The inventory of a fleet file's `text`, laid out with `seed`."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "fleet.yaml"
        path.write_text(text)
        return load_fleet(
            str(path), rs=RandomStream(np.random.default_rng(seed)), profiles=ProfileSet.shipped()
        )


def merge_truths(parts: dict[str, Path], out: Path) -> None:
    """One ground truth of the simulators' (one per gateway), condition ids prefixed with the
    gateway's (each simulator numbers its conditions from c1)."""
    with out.open("wb") as sink:
        for gateway, path in parts.items():
            for line in path.read_bytes().splitlines():
                record = msgspec.json.decode(line)
                if record.get("kind") == "condition":
                    record["id"] = f"{gateway}:{record['id']}"
                elif record.get("kind") == "message" and record.get("conditions"):
                    record["conditions"] = [f"{gateway}:{c}" for c in record["conditions"]]
                sink.write(msgspec.json.encode(record) + b"\n")


def _fleet_yaml(devices: int) -> str:
    counts = {kind: max(1, round(devices * share)) for kind, share in MIX.items()}
    body = ", ".join(f"{k}: {v}" for k, v in counts.items())
    return "communities:\n" + "".join(
        f"  - id: {c}\n    lat: {31.2 + i / 100:.4f}\n    lon: 121.4371\n    gateways: 1\n"
        f"    devices: {{{body}}}\n"
        for i, c in enumerate(COMMUNITIES)
    )


def _scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        row = conn.execute(query.encode()).fetchone()
    return None if row is None else row[0]


def _rss_mb(pid: int | None) -> float:
    if pid is None:
        return 0.0
    from edge.bench import memory_kb

    try:
        return memory_kb(pid).get("VmRSS", 0) / 1024
    except OSError:  # gone already
        return 0.0


class ChaosRun:
    """One run under `workdir` (emptied first). Build, then `run()`."""

    def __init__(
        self, *, plan: ChaosPlan, workdir: Path, say: Callable[[str], None] = lambda _: None
    ) -> None:
        self.plan = plan
        self.root = workdir
        self.say = say
        self.inventory = load_fleet_text(_fleet_yaml(plan.devices), seed=plan.seed)
        self.gateways = self.inventory.gateways()
        self.pki = DemoPki(workdir / "pki")
        self.pg = PostgresCluster(datadir=workdir / "pg", durable=True)
        self.url = self.pg.dsn("postgres")
        self.cloud = self.pki.cloud_broker(workdir / "cloud-broker")
        self.fields = {gw: MosquittoBroker(workdir=workdir / f"field-{gw}") for gw in self.gateways}
        self.link = LinkCut(target_host=self.cloud.host, target_port=self.cloud.port)
        self.timeline: list[str] = []
        self.kills: Counter[str] = Counter()
        self.unplanned: Counter[str] = Counter()
        self.broker_restarts = 0
        self.db_down_s = 0.0
        self.cut_s = 0.0
        self.rss_max = 0.0
        self._t0 = time.monotonic()
        self._db_stopped = self._cut_at = 0.0
        self._restarted_at: dict[str, float] = {}
        #: Off once the run stops the services itself (a stopped agent is not restarted).
        self._supervising = True
        self.workers: list[Child] = []
        self.alerts: Child | None = None
        self.edges: dict[str, Child] = {}
        self.sims: dict[str, Child] = {}

    # -- building -----------------------------------------------------------------------------

    def _build(self) -> None:
        """Write the files (the CA, the inventories, the configurations), start the brokers, the
        database and the relay, and make the services (started by `_started`)."""
        root = self.root
        if root.exists():
            shutil.rmtree(root)
        root.mkdir(parents=True)
        inventory = self.inventory
        inventory_file = root / "inventory.json"
        inventory.dump(inventory_file)
        communities = {d.gateway_id: d.community_id for d in inventory.devices}
        for gw in self.gateways:
            demo_pki(self.pki.folder, community_id=communities[gw], gateway_ids=[gw])
        self.pg.start()
        self.cloud.start()
        for broker in self.fields.values():
            broker.start()
        self.link.start()
        self.workers = [
            Child.python(
                name=f"ingest-{i}",
                module="cloud",
                args=["cloud", "ingest", "--config", str(self._cloud_toml(f"chaos-ingest-{i}"))],
                log=root / f"ingest-{i}.log",
            )
            for i in (1, 2)
        ]
        self.alerts = Child.python(
            name="alerts",
            module="cloud",
            args=["cloud", "alerts", "--config", str(self._cloud_toml("chaos-alerts"))],
            log=root / "alerts.log",
        )
        for i, gw in enumerate(self.gateways):
            cloud_url = f"mqtts://{self.link.url_authority}" if i == 0 else self.cloud.url
            edge_toml = write_edge_config(
                root / f"edge-{gw}.toml",
                gateway_id=gw,
                community_id=communities[gw],
                inventory=inventory_file,
                field_url=self.fields[gw].url,
                cloud_url=cloud_url,
                buffer=root / f"buffer-{gw}.db",
                overrides=self.pki.gateway_overrides(gw),
            )
            self.edges[gw] = Child.python(
                name=gw, module="edge", args=["run", "--config", str(edge_toml)], log=root / f"edge-{gw}.log"
            )
            own = root / f"inventory-{gw}.json"
            inventory.for_gateway(gw).dump(own)
            self.sims[gw] = self._sim(gw, own, seed=self.plan.seed + i)

    def _cloud_toml(self, client_id: str) -> Path:
        return write_cloud_config(
            self.root / f"{client_id}.toml",
            database_url=self.url,
            mqtt_url=self.cloud.url,
            client_id=client_id,
            overrides=self.pki.ingest_overrides()
            | {
                "alerts": {
                    "inventory": str(self.root / "inventory.json"),
                    "clock": "data",
                    "tick_interval_s": 0.5,
                },
            },
        )

    def _sim(self, gateway: str, inventory: Path, *, seed: int) -> Child:
        duration = int(self.plan.minutes * 60 * self.plan.speed)
        return Child.python(
            name=f"sim-{gateway}",
            module="device_profiles.console",
            args=[
                "sim",
                "--fleet",
                str(inventory),
                "--seed",
                str(seed),
                "--start",
                "2025-06-01T00:00:00Z",
                "--speed",
                f"{self.plan.speed:g}",
                "--duration",
                f"{duration}s",
                "--broker",
                self.fields[gateway].url,
                "--qos",
                "1",
                "--malformed",
                "0.01",
                "--duplicate",
                "0.01",
                "--scenario",
                "sos-press",
                "--scenario",
                "manhole-lifted",
                "--truth",
                str(self.root / f"truth-{gateway}.jsonl"),
                "--quiet",
            ],
            log=self.root / f"sim-{gateway}.log",
        )

    # -- running ------------------------------------------------------------------------------

    def _note(self, what: str) -> None:
        line = f"{time.monotonic() - self._t0:7.1f}s {what}"
        self.timeline.append(line)
        self.say(line)

    def _services(self) -> list[Child]:
        return [*self.workers, *([self.alerts] if self.alerts else []), *self.edges.values()]

    def _by_name(self, name: str) -> Child:
        return next(c for c in self._services() if c.name == name)

    def _supervise(self) -> None:
        """Restart what exited by itself (as systemd's ``Restart=always`` would) and sample."""
        now = time.monotonic()
        for child in self._services() if self._supervising else ():
            # At most one restart a second: a service that cannot start yet (its database down)
            # is not restarted in a tight loop.
            if not child.running and now - self._restarted_at.get(child.name, 0.0) >= 1.0:
                self._restarted_at[child.name] = now
                self.unplanned[child.name] += 1
                self._note(f"{child.name} exited by itself ({child.returncode()}): restarted")
                child.start()
        for worker in self.workers:
            self.rss_max = max(self.rss_max, _rss_mb(worker.pid))

    def _strike(self, fault: Fault) -> None:
        if fault.action == "kill":
            child = self._by_name(fault.target)
            child.kill()
            child.start()
            self.kills["edge" if fault.target in self.edges else "ingest"] += 1
            self._note(f"kill -9 {fault.target} (restarted)")
        elif fault.action == "database_stop":
            self.pg.stop(mode="fast")
            self._db_stopped = time.monotonic()
            self._note("database stopped")
        elif fault.action == "database_start":
            # down for the whole outage, counted from when the server was gone
            self._wait(lambda: time.monotonic() - self._db_stopped >= self.plan.database_outage_s, 60)
            self.pg.start()
            self.db_down_s += time.monotonic() - self._db_stopped
            self._note("database started")
        elif fault.action == "link_cut":
            self.link.cut()
            self._cut_at = time.monotonic()
            self._note(f"{fault.target}'s cloud link cut")
        elif fault.action == "link_restore":
            self.link.restore()
            self.cut_s += time.monotonic() - self._cut_at
            self._note(f"{fault.target}'s cloud link back")
        elif fault.action == "broker_restart":
            self.cloud.stop()
            self.cloud.start()
            self.broker_restarts += 1
            self._note("cloud broker restarted")

    def _wait(self, cond: Callable[[], bool], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                return False
            self._supervise()
            time.sleep(0.2)  # polling processes and the database, not synchronising
        return True

    def _wait_until(self, at_s: float) -> None:
        """Supervise until `at_s` seconds after the simulators started."""
        while (left := at_s - (time.monotonic() - self._t0)) > 0:
            self._supervise()
            time.sleep(min(0.2, left))  # the schedule's own clock

    def _started(self) -> None:
        for child in self._services():
            child.start()
        up = "subscribed to $share/linli-ingest/linli/v1/+/+/up"
        ok = self._wait(
            lambda: (
                all(up in w.log_tail(200_000) for w in self.workers)
                and all("subscribed" in e.log_tail(200_000) for e in self.edges.values())
            ),
            60,
        )
        if not ok:
            raise ServiceError("the chain did not come up in 60 s", service="chaos")

    def _settled(self, expected: int) -> bool:
        try:
            rows = int(_scalar(self.url, "SELECT count(*) FROM readings"))
            horizon = _scalar(self.url, "SELECT coalesce(max(feed_seq), 0) FROM alert_feed")
            checkpoint = _scalar(self.url, "SELECT coalesce(max(feed_seq), 0) FROM alert_checkpoints")
        except psycopg.Error:
            return False
        return rows >= expected and checkpoint >= horizon

    def _final_statuses(self) -> bool:
        """Each gateway's clean stop published its last status, with the counters verify reads."""
        try:
            with psycopg.connect(self.url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute(
                    "SELECT count(*) FROM gateways WHERE state = 'offline' AND status ? 'counters'"
                    " AND gateway_id = ANY(%s)",
                    (self.gateways,),
                ).fetchone()
            n = row[0] if row else 0
        except psycopg.Error:
            return False
        return int(n) == len(self.gateways)

    def run(self) -> ChaosSummary:
        plan = self.plan
        try:
            self._build()
            migrated = self._migrate()
            if not migrated:
                raise ServiceError("linli db migrate failed", service="chaos")
            self._started()
            faults = schedule(plan, gateways=self.gateways, workers=[w.name for w in self.workers])
            self._t0 = time.monotonic()
            for sim in self.sims.values():
                sim.start()
            self._note(f"simulators started: {len(self.gateways)} gateways, {len(faults)} faults planned")
            for fault in faults:
                self._wait_until(fault.at_s)
                self._strike(fault)
            done = self._wait(lambda: not any(s.running for s in self.sims.values()), plan.drain_timeout_s)
            sims_ok = done and all(s.returncode() == 0 for s in self.sims.values())
            self._note("simulators finished" if sims_ok else "simulators failed or ran late")
            truth = self.root / "truth.jsonl"
            merge_truths({gw: self.root / f"truth-{gw}.jsonl" for gw in self.gateways}, truth)
            drained_at = time.monotonic()
            expected = expected_rows(truth)
            drained = self._wait(lambda: self._settled(expected), plan.drain_timeout_s)
            drain_s = time.monotonic() - drained_at
            self._note(f"drained in {drain_s:.1f} s" if drained else "drain timed out")
            self._supervising = False
            for edge in self.edges.values():
                edge.stop(timeout=30)
            self._wait(self._final_statuses, 30)
            for child in self._services():
                child.stop(timeout=30)
            return self._summary(truth, drain_s, sims_ok=sims_ok)
        finally:
            self._teardown()

    def _migrate(self) -> bool:
        done = subprocess.run(  # noqa: S603 - this interpreter, our own command
            [sys.executable, "-m", "device_profiles.console", "db", "migrate", "--database", self.url],
            capture_output=True,
            timeout=300,
            check=False,
        )
        return done.returncode == 0

    def _summary(self, truth: Path, drain_s: float, *, sims_ok: bool) -> ChaosSummary:
        readings = verify(truth=truth, database_url=self.url, scope="all")
        # A wall second of delay is `speed` seconds of data time: allow the outages' length.
        grace = (self.plan.database_outage_s + self.plan.link_cut_s + 60) * self.plan.speed
        alerts = verify_alerts(truth=truth, database_url=self.url, options=AlertsOptions(extra_late_s=grace))
        return ChaosSummary(
            exact=sims_ok and readings.match and alerts.missed == 0 and alerts.duplicates == 0,
            minutes=self.plan.minutes,
            seed=self.plan.seed,
            gateways=len(self.gateways),
            ingest_workers=len(self.workers),
            kills=dict(self.kills),
            broker_restarts=self.broker_restarts,
            database_down_s=round(self.db_down_s, 1),
            link_cut_s=round(self.cut_s, 1),
            unplanned_restarts=dict(self.unplanned),
            messages=readings.messages,
            expected=readings.expected,
            stored=readings.stored,
            missing=readings.missing,
            expected_rows=readings.expected_rows,
            stored_rows=readings.stored_rows,
            missing_rows=readings.missing_rows,
            duplicated_rows=readings.duplicated_rows,
            wrong=readings.wrong_values,
            unexpected_rows=readings.unexpected_rows,
            missing_events=readings.missing_events,
            duplicated_events=readings.duplicated_events,
            alerts=AlertsSummary(
                conditions=alerts.conditions,
                detected=alerts.detected,
                missed=alerts.missed,
                doubled=alerts.duplicates,
                false_positives=alerts.false_positives,
            ),
            drain_s=round(drain_s, 1),
            ingest_rss_max_mb=round(self.rss_max, 1),
            timeline=self.timeline,
            examples={**readings.examples, **{f"alerts_{k}": v for k, v in alerts.examples.items()}},
        )

    def _teardown(self) -> None:
        for child in (*self.sims.values(), *self._services()):
            child.stop(timeout=10)
        self.link.close()
        self.cloud.stop()
        self.pg.stop()
        for broker in self.fields.values():
            broker.stop()


def encode_summary(summary: ChaosSummary) -> bytes:
    return msgspec.json.format(msgspec.json.encode(summary), indent=2)

"""The whole pipeline under one folder: brokers, database, ingest, alerts, incidents, pushes, edge
agents, simulators.

`DemoPipeline` lays everything out under `root` (``./var/demo`` for ``linli demo``):

```
root/ports.json            ports chosen on the first run, reused while free
root/inventory.json        the fleet (generated once), root/inventory-<gateway>.json per gateway
root/mqtt/cloud, mqtt/<gateway>   Mosquitto config, persistence and log
root/pg/data, pg/data.log  the PostgreSQL cluster (initdb on the first run)
root/edge/<gateway>/       edge.toml, buffer.db
root/cloud.toml, alerts.toml   the ingest's and the alert service's configuration
root/incidents.toml, people.yaml   the escalator's, the push sender's and the API's configuration, the staff
root/api-token.key         the key that signs the API's tokens
root/pki/                  the demo's CA (`linli pki`): the cloud broker's, the ingest's and each
                           gateway's certificate, and the broker's ACL
root/logs/                 every child's log
root/sim/<gateway>/truth.jsonl   ground truth of the latest run
```

The first gateway also hears two Zigbee2MQTT devices nobody listed (`simulators.demo.unlisted`):
they become its pending devices, shown on the screen with the command that approves them.

A second run finds the cluster, the buffers, the broker sessions and the inventory and reuses them.
Pushes go to a local server that behaves like the WeCom, DingTalk and Feishu robots and a webhook
receiver (`simulators.pushes.PushServer`, in this process); the screen shows the latest. The HTTP
API serves the same database; the committee member ``k-li`` logs in with a password made for each
run (`DemoPipeline.api_login`).
`stop()` stops in order: simulators (SIGINT: they flush their ground truth), edge agents (SIGTERM:
they drain), ingest, alerts, incidents, notify, the API, the push server, brokers, database, and checks that
no child is left.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec.yaml
import numpy as np
import psycopg
from psycopg import sql

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.demo.pki import demo_pki
from simulators.demo.unlisted import announce
from simulators.errors import DemoError, SimulatorsError
from simulators.fleet import load_fleet
from simulators.pushes import PushServer
from simulators.rand import RandomStream
from simulators.services import MosquittoBroker, PostgresCluster, free_port

DATABASE = "linli"
DEFAULT_MIX = {"door_contact": 0.4, "sos_button": 0.2, "manhole_cover": 0.1, "streetlight": 0.3}


@dataclass(slots=True)
class GatewayParts:
    gateway_id: str
    field: MosquittoBroker
    edge: Child
    sim: Child
    metrics_port: int
    devices: int
    config: Path


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


@dataclass(slots=True)
class _Ports:
    path: Path
    ports: dict[str, int] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> _Ports:
        try:
            ports = {str(k): int(v) for k, v in json.loads(path.read_text()).items()}
        except (OSError, ValueError):
            ports = {}
        return cls(path, ports)

    def get(self, name: str) -> int:
        port = self.ports.get(name)
        if port is None or not _port_free(port):
            port = free_port("127.0.0.1")
            self.ports[name] = port
        return port

    def save(self) -> None:
        self.path.write_text(json.dumps(self.ports, indent=2, sort_keys=True) + "\n")


def _fleet_yaml(community: str, devices: int, gateways: int) -> str:
    counts = {t: max(1, round(devices * w)) for t, w in DEFAULT_MIX.items()}
    body = ", ".join(f"{t}: {n}" for t, n in counts.items())
    return (
        "communities:\n"
        f"  - id: {community}\n"
        "    lat: 31.2304\n"
        "    lon: 121.4737\n"
        f"    gateways: {gateways}\n"
        f"    devices: {{{body}}}\n"
    )


class DemoPipeline:
    """Everything ``linli demo`` runs. `start()`, then `stop()` (always, also after a failure)."""

    def __init__(
        self,
        *,
        root: Path,
        devices: int = 300,
        gateways: int = 2,
        community: str = "demo",
        speed: float = 600.0,
        scenarios: tuple[str, ...] = ("sos-press", "manhole-lifted", "radio-fading"),
        log: Callable[[str], None] = print,
    ) -> None:
        if devices < gateways:
            raise DemoError(f"need at least one device per gateway ({devices} devices, {gateways} gateways)")
        self.root = root.resolve()
        self.devices = devices
        self.gateways_n = gateways
        self.community = community
        self.speed = speed
        self.scenarios = scenarios
        self.log = log
        self.reused = (self.root / "pg" / "data" / "PG_VERSION").exists()
        self.cloud: MosquittoBroker | None = None
        self.pg: PostgresCluster | None = None
        self.ingest: Child | None = None
        self.alerts: Child | None = None
        self.incidents: Child | None = None
        self.notify: Child | None = None
        self.api: Child | None = None
        self.commands: Child | None = None
        self.api_url = ""
        #: (staff id, password) of the demo's API login, made at start
        self.api_login: tuple[str, str] | None = None
        self.pushes: PushServer | None = None
        self.gateways: list[GatewayParts] = []
        self.inventory: Inventory | None = None
        self.rows_at_start = 0
        self.rows_at_stop: int | None = None

    # -- layout --------------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        if self.pg is None:
            raise DemoError("the database is not started")
        return self.pg.dsn(DATABASE)

    @property
    def devices_total(self) -> int:
        return len(self.inventory.devices) if self.inventory is not None else self.devices

    def psql_command(self) -> str:
        if self.pg is None:
            return ""
        return f"psql {self.pg.dsn(DATABASE)}"

    def _inventory(self) -> Inventory:
        path = self.root / "inventory.json"
        if path.exists():
            inventory = Inventory.load(path)
            self.log(f"reusing the fleet in {path} ({len(inventory.devices)} devices)")
            return inventory
        fleet = self.root / "fleet.yaml"
        fleet.write_text(_fleet_yaml(self.community, self.devices, self.gateways_n))
        inventory = load_fleet(
            str(fleet),
            rs=RandomStream(np.random.default_rng(secrets.randbits(32))),
            profiles=ProfileSet.shipped(),
        )
        inventory.dump(path)
        return inventory

    # -- start ---------------------------------------------------------------------------------

    def start(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        ports = _Ports.load(self.root / "ports.json")
        self.inventory = self._inventory()
        gateway_ids = sorted({d.gateway_id for d in self.inventory.devices})

        self.log("starting PostgreSQL" + (" (reusing its data)" if self.reused else " (first run: initdb)"))
        self.pg = PostgresCluster(datadir=self.root / "pg" / "data", port=ports.get("postgres"))
        self.pg.start()
        self._create_database()
        self._migrate()

        pki = demo_pki(self.root / "pki", community_id=self.community, gateway_ids=gateway_ids)
        self.cloud = pki.cloud_broker(self.root / "mqtt" / "cloud", port=ports.get("mqtt_cloud"))
        self.cloud.start()
        fields = {}
        for gw in gateway_ids:
            fields[gw] = MosquittoBroker(workdir=self.root / "mqtt" / gw, port=ports.get(f"mqtt_{gw}"))
            fields[gw].start()
        self.log(f"brokers: cloud {self.cloud.url}, " + ", ".join(f"{g} {b.url}" for g, b in fields.items()))

        logs = self.root / "logs"
        cloud_toml = write_cloud_config(
            self.root / "cloud.toml",
            database_url=self.database_url,
            mqtt_url=self.cloud.url,
            client_id="linli-demo-ingest-1",
            overrides=pki.ingest_overrides(),
        )
        self.ingest = _cloud_service("ingest", cloud_toml, logs)
        self.ingest.start()
        alerts_port = ports.get("alerts_metrics")
        alerts_toml = write_cloud_config(
            self.root / "alerts.toml",
            database_url=self.database_url,
            mqtt_url=self.cloud.url,
            overrides={
                # simulated time runs faster than the clock: rules run on the devices' time
                "alerts": {
                    "inventory": str(self.root / "inventory.json"),
                    "clock": "data",
                    "http": {"address": f"127.0.0.1:{alerts_port}"},
                }
            },
        )
        self.alerts = _cloud_service("alerts", alerts_toml, logs)
        self.alerts.start()
        self._start_pushes(ports, logs)
        schedules = self.root / "schedules.yaml"
        schedules.write_text(DEMO_SCHEDULES, encoding="utf-8")
        commands_toml = write_cloud_config(
            self.root / "commands.toml",
            database_url=self.database_url,
            mqtt_url=self.cloud.url,
            overrides=pki.ingest_overrides()
            | {
                "commands": pki.ingest_overrides()["commands"]
                | {
                    "client_id": "linli-demo-commands-1",
                    "schedules": str(schedules),
                    "http": {"address": f"127.0.0.1:{ports.get('commands_metrics')}"},
                }
            },
        )
        self.commands = _cloud_service("commands", commands_toml, logs)
        self.commands.start()

        for gw in gateway_ids:
            mine = self.inventory.for_gateway(gw)
            gw_inventory = self.root / f"inventory-{gw}.json"
            mine.dump(gw_inventory)
            metrics_port = ports.get(f"edge_metrics_{gw}")
            edge_toml = write_edge_config(
                self.root / "edge" / gw / "edge.toml",
                gateway_id=gw,
                community_id=self.community,
                inventory=self.root / "inventory.json",
                field_url=fields[gw].url,
                cloud_url=self.cloud.url,
                buffer=self.root / "edge" / gw / "buffer.db",
                http_address=f"127.0.0.1:{metrics_port}",
                overrides=pki.gateway_overrides(gw),
            )
            edge = Child.python(
                name=f"edge {gw}",
                module="edge",
                args=["run", "--config", str(edge_toml)],
                log=logs / f"edge-{gw}.log",
            )
            truth = self.root / "sim" / gw / "truth.jsonl"
            truth.parent.mkdir(parents=True, exist_ok=True)
            scenario_args = [
                arg
                for name in self._scenarios_for(mine, first=gw == gateway_ids[0])
                for arg in ("--scenario", name)
            ]
            sim = Child.python(
                name=f"simulator {gw}",
                module="device_profiles.console",
                args=[
                    "sim",
                    "--fleet",
                    str(gw_inventory),
                    "--seed",
                    str(secrets.randbits(31)),
                    "--start",
                    "now",
                    "--speed",
                    str(self.speed),
                    "--broker",
                    fields[gw].url,
                    "--qos",
                    "1",
                    "--client-id",
                    f"linli-demo-sim-{gw}",
                    "--truth",
                    str(truth),
                    "--quiet",
                    "--obey",  # the lamps and buttons act on the commands the gateway sends them
                    *scenario_args,
                ],
                log=logs / f"sim-{gw}.log",
            )
            self.gateways.append(
                GatewayParts(gw, fields[gw], edge, sim, metrics_port, len(mine.devices), edge_toml)
            )
            edge.start()
        ports.save()
        self._wait_subscribed()
        for parts in self.gateways:
            parts.sim.start()
        first = self.gateways[0]
        try:
            announce(first.field, self.inventory.for_gateway(first.gateway_id), ProfileSet.shipped())
        except OSError as exc:  # the demo goes on; only the pending devices are missing
            self.log(f"could not announce the unlisted devices on {first.gateway_id}: {exc}")
        self.log(f"simulating {len(self.inventory.devices)} devices at {self.speed:g}x real time")

    def _start_pushes(self, ports: _Ports, logs: Path) -> None:
        """The push server, the escalator and the sender, with a ladder of every robot kind."""
        assert self.inventory is not None  # noqa: S101 - loaded first
        pushes = self.pushes = PushServer(port=ports.get("pushes"))
        secret = "SEC" + secrets.token_hex(16)  # the robots' signing secret, new each run
        channels = {
            "grid": {"kind": "wecom", "url": pushes.add_wecom("demo-grid")},
            "committee": {
                "kind": "dingtalk",
                "url": pushes.add_dingtalk("demo-committee", secret, keyword="linli"),
                "secret": secret,
                "keyword": "linli",
            },
            "street": {
                "kind": "feishu",
                "url": pushes.add_feishu("demo-street", secret),
                "secret": secret,
            },
            "district": {
                "kind": "webhook",
                "url": pushes.add_webhook("demo-district", secret),
                "secret": secret,
            },
            "family": {
                "kind": "webhook",
                "url": pushes.add_webhook("demo-family", secret),
                "secret": secret,
            },
        }
        pushes.start()
        people = self.root / "people.yaml"
        people.write_bytes(msgspec.yaml.encode(demo_people(self.community, self.inventory)))
        api_port = ports.get("api")
        toml = write_cloud_config(
            self.root / "incidents.toml",
            database_url=self.database_url,
            mqtt_url=self.cloud.url if self.cloud is not None else "mqtt://127.0.0.1:1",
            overrides={
                "incidents": {
                    "people": str(people),
                    "http": {"address": f"127.0.0.1:{ports.get('incidents_metrics')}"},
                },
                "notify": {
                    "channels": channels,
                    "http": {"address": f"127.0.0.1:{ports.get('notify_metrics')}"},
                },
                "api": {
                    "http": {"address": f"127.0.0.1:{api_port}"},
                    "token_key_file": str(self.root / "api-token.key"),
                },
            },
        )
        self.incidents, self.notify, self.api = (
            _cloud_service(name, toml, logs) for name in ("incidents", "notify", "api")
        )
        self.incidents.start()
        self.notify.start()
        self.api_login = self._demo_login(people)
        self.api.start()
        self.api_url = f"http://127.0.0.1:{api_port}"
        self.log(
            f"console: {self.api_url}/console, log in as {self.api_login[0]} with {self.api_login[1]}"
            f" (API: {self.api_url}/docs)"
        )
        self.log(f"pushes: WeCom, DingTalk, Feishu robots and webhooks emulated at {pushes.url}")

    def _demo_login(self, people: Path) -> tuple[str, str]:
        """A password for the committee member, new each run (set again when the account exists)."""
        from cloud.api.accounts import AccountError, add_user, set_password
        from cloud.incidents.people import load_people

        staff_id, password = "k-li", secrets.token_urlsafe(9)
        with psycopg.connect(self.database_url, autocommit=True) as conn:
            try:
                add_user(conn, load_people(people), staff_id, password)
            except AccountError:  # an earlier run made it
                set_password(conn, staff_id, password)
        return staff_id, password

    def _scenarios_for(self, inventory: Inventory, *, first: bool) -> list[str]:
        """The scenarios run by the first gateway's simulator, when its devices allow them."""
        needs = {
            "sos-press": "sos_button",
            "manhole-lifted": "manhole_cover",
            "lamp-failure": "streetlight",
            "radio-fading": "door_contact",
        }
        types = {d.device_type for d in inventory.devices}
        return [s for s in self.scenarios if first and needs.get(s, "") in types | {""}]

    def _create_database(self) -> None:
        if self.pg is None:
            raise DemoError("the database is not started")
        with psycopg.connect(self.pg.dsn("postgres"), autocommit=True, connect_timeout=10) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,)).fetchone()
            if exists is None:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(DATABASE)))

    def _migrate(self) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "cloud", "db", "migrate"],
            env={**os.environ, "LINLI_CLOUD_DATABASE_URL": self.database_url},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if done.returncode != 0:
            raise DemoError(f"linli db migrate failed: {done.stderr.strip() or done.stdout.strip()}")
        self.rows_at_start = self._count_rows() or 0

    def _count_rows(self) -> int | None:
        """Rows in ``readings`` (None when the database cannot be asked)."""
        if self.pg is None:
            return None
        try:
            with psycopg.connect(self.database_url, autocommit=True, connect_timeout=5) as conn:
                row = conn.execute("SELECT count(*) FROM readings").fetchone()
        except psycopg.Error:
            return None
        return int(row[0]) if row else 0

    def _wait_subscribed(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        waiting = {p.gateway_id: p.edge for p in self.gateways}
        while waiting:
            for gw, edge in list(waiting.items()):
                if not edge.running:
                    raise DemoError(
                        f"the edge agent of {gw} exited ({edge.returncode()}):\n{edge.log_tail()}"
                    )
                if "subscribed" in edge.log_tail(200_000):
                    del waiting[gw]
            if time.monotonic() > deadline:
                raise DemoError(f"edge agents did not subscribe within {timeout:.0f} s: {sorted(waiting)}")
            time.sleep(0.2)

    # -- running -------------------------------------------------------------------------------

    def children(self) -> list[Child]:
        out: list[Child] = [c for p in self.gateways for c in (p.sim, p.edge)]
        if self.ingest is not None:
            out.append(self.ingest)
        out += [
            c for c in (self.alerts, self.incidents, self.notify, self.api, self.commands) if c is not None
        ]
        return out

    def failed(self) -> list[str]:
        """Children that exited while they should be running (a simulator may finish on its own)."""
        out = []
        for child in self.children():
            code = child.returncode()
            if code is not None and not (child.name.startswith("simulator") and code == 0):
                out.append(f"{child.name} exited with status {code}; log {child.log}")
        return out

    # -- stop ----------------------------------------------------------------------------------

    def stop(self) -> list[str]:
        """Stop everything in order; returns problems (empty: clean)."""
        problems: list[str] = []
        for parts in self.gateways:
            code = parts.sim.stop(timeout=20, sig=signal.SIGINT)
            if code not in (None, 0, 130):
                problems.append(f"{parts.sim.name} exited with {code}")
        for parts in self.gateways:
            code = parts.edge.stop(timeout=40)
            if code not in (None, 0):
                problems.append(f"{parts.edge.name} exited with {code}")
        if self.ingest is not None:
            code = self.ingest.stop(timeout=30)
            if code not in (None, 0):
                problems.append(f"ingest exited with {code}")
        for child in (self.alerts, self.incidents, self.notify, self.api, self.commands):
            if child is not None:
                code = child.stop(timeout=30)
                if code not in (None, 0):
                    problems.append(f"{child.name} exited with {code}")
        if self.pushes is not None:
            self.pushes.close()
        self.rows_at_stop = self._count_rows()
        for parts in self.gateways:
            parts.field.stop()
        if self.cloud is not None:
            self.cloud.stop()
        if self.pg is not None:
            try:
                self.pg.stop()
            except SimulatorsError as exc:
                problems.append(str(exc))
        left = [c.name for c in self.children() if c.running]
        left += [f"mosquitto {p.gateway_id}" for p in self.gateways if p.field.running]
        if self.cloud is not None and self.cloud.running:
            left.append("mosquitto cloud")
        if self.pg is not None and self.pg.running:
            left.append("postgres")
        if left:
            problems.append("still running: " + ", ".join(left))
        return problems


#: The demo's streetlight schedule: the photocell's times with offsets, dimmed late at night.
DEMO_SCHEDULES = """\
# linli demo: every community's streetlights (cloud/commands/schedules.py, docs/commands.md)
version: 1
timezone: Asia/Shanghai
communities:
  "*":
    on: {at: dusk, offset_min: 5}
    off: {at: dawn, offset_min: -5}
    dim:
      - {from: "23:00", to: "05:00", level_pct: 50}
"""


def _cloud_service(name: str, config: Path, logs: Path) -> Child:
    """``linli cloud NAME --config CONFIG``, logging to ``logs/NAME.log`` (not started)."""
    return Child.python(
        name=name, module="cloud", args=["cloud", name, "--config", str(config)], log=logs / f"{name}.log"
    )


def demo_people(community: str, inventory: Inventory) -> dict[str, object]:
    """Staff for the demo community: a four-level ladder over the four robot kinds, a doctor, and
    a family contact for every resident living alone."""
    staff = [
        {
            "id": "w-zhang",
            "name": "张伟",
            "roles": ["grid_worker"],
            "communities": [community],
            "mobile": "13800000001",
        },
        {
            "id": "k-li",
            "name": "李强",
            "roles": ["committee"],
            "communities": [community],
            "mobile": "13800000002",
        },
        {"id": "s-wang", "name": "王芳", "roles": ["street"], "communities": ["*"], "mobile": "13800000003"},
        {"id": "q-sun", "name": "孙洁", "roles": ["district"], "communities": ["*"]},
        {
            "id": "d-chen",
            "name": "陈医生",
            "roles": ["doctor"],
            "communities": [community],
            "channel": "family",
        },
    ]
    residents = sorted({d.resident_id for d in inventory.devices if d.resident_id and d.living_alone})
    return {
        "version": 1,
        "staff": staff,
        "communities": {
            community: {
                "name": "阳光小区",
                "ladder": [
                    {"name": "网格员", "staff": ["w-zhang"], "channels": ["grid"]},
                    {"name": "居委会", "staff": ["k-li"], "channels": ["committee"]},
                    {"name": "街道办", "staff": ["s-wang"], "channels": ["street"]},
                    {"name": "区级", "staff": ["q-sun"], "channels": ["district"]},
                ],
                "doctors": ["d-chen"],
            }
        },
        "contacts": {
            r: [{"name": "家属", "relation": "family", "mobile": f"139{i:08d}", "channel": "family"}]
            for i, r in enumerate(residents)
        },
    }

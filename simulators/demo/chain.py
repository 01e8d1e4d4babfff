"""The whole chain for the latency benchmarks, every service the real command as a subprocess:
a field broker, ``linli edge run`` for one gateway of a 2,000-device fleet, the cloud broker as
linli ships it (mutual TLS with a CA made for the run, each gateway confined to its topics), one
ingest worker, ``linli cloud alerts`` on the wall clock, a durable PostgreSQL+TimescaleDB, and
(for pushes) ``linli cloud incidents`` and ``linli cloud notify`` with a local webhook receiver.

`Chain.press()` publishes one SOS press of a button left out of the simulated fleet at the field
broker; `Chain.background(rate)` publishes ordinary telemetry of the rest of the fleet through the
same agent. The gateway side (field broker, edge agent, this process) is pinned to the first core
and the cloud side to the last: deployed, they are separate machines.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psycopg

from device_profiles import ProfileSet
from device_profiles.inventory import Device, Inventory
from device_profiles.reading import Reading
from simulators.demo.bench import _pg_pid, _phase
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.demo.pki import DemoPki, demo_pki
from simulators.fleet import load_fleet
from simulators.pushes import PushServer
from simulators.rand import RandomStream
from simulators.services import MosquittoBroker, PostgresCluster, free_port

#: The benchmark webhook's signing key (a local receiver only).
HOOK_KEY = "bench"


def wait_until(cond: Callable[[], bool], timeout: float, what: str, *children: Child) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for child in children:
            if not child.running:
                raise RuntimeError(f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.02)  # polling a measurement, not synchronising a test


def pin_as_deployed(*, gateway: list[int | None], cloud: list[int | None]) -> None:
    """Gateway side on the first core, cloud side (and its children) on the last."""
    import psutil

    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        return
    for pids, core in ((gateway, cores[0]), (cloud, cores[-1])):
        for pid in pids:
            if pid is None:
                continue
            proc = psutil.Process(pid)
            for p in (proc, *proc.children(recursive=True)):
                try:
                    p.cpu_affinity([core])
                except psutil.NoSuchProcess:
                    continue


class Chain:
    """A running chain; build it with `running_chain`."""

    def __init__(
        self, *, root: Path, profiles: ProfileSet, button: Device, fleet: Inventory, pki: DemoPki
    ) -> None:
        self.root = root
        self.profiles = profiles
        self.button = button
        self.fleet = fleet
        self.field = MosquittoBroker(workdir=root / "field")
        self.pki = pki
        self.cloud = pki.cloud_broker(root / "cloud")
        self.pg = PostgresCluster(datadir=root / "pgchain", durable=True)
        self.pushes: PushServer | None = None
        self.children: dict[str, Child] = {}
        #: with commands: the simulated streetlight that obeys, and the API's port
        self.lamp: Device | None = None
        self.api_port = 0
        self.url = ""
        self._publisher: Any = None

    def press(self) -> float:
        """Publish one SOS press (QoS 1) at the field broker; the ``perf_counter`` just before."""
        now = datetime.now(UTC)
        reading = Reading(
            device_id=self.button.device_id,
            device_type="sos_button",
            ts=now,
            received_at=now,
            metrics={"battery_pct": 90.0},
            events=("sos_pressed",),
            profile=self.button.profile,
            reading_id=str(uuid.uuid4()),
        )
        topic, payload = self.profiles.encode(reading)
        start = time.perf_counter()
        self._publisher.publish(topic, payload, qos=1)
        return start

    @contextmanager
    def background(self, rate: int, seconds: float = 120.0) -> Iterator[None]:
        """Ordinary telemetry of the fleet at `rate` messages/s while inside (at most `seconds`).

        The messages are generated beforehand (the simulation is the devices, not the gateway:
        its CPU must not be charged to the gateway side), then a lean publisher in a process of
        its own, pinned with the gateway side, sends them paced."""
        import multiprocessing as mp

        messages = self.root / "background.msgpack"
        messages.write_bytes(msgspec.msgpack.encode(self._generate(int(rate * seconds))))
        ctx = mp.get_context("spawn")
        stop = ctx.Event()
        started = ctx.Event()
        proc = ctx.Process(
            target=_publish_paced,
            args=(self.field.host, self.field.port, str(messages), rate, stop, started),
            name="bench-background",
        )
        proc.start()
        try:
            if not started.wait(60):
                raise RuntimeError("the background publisher did not start")
            pin_as_deployed(gateway=[proc.pid], cloud=[])
            yield
        finally:
            stop.set()
            proc.join(60)

    def _generate(self, n: int) -> list[tuple[str, bytes]]:
        from simulators.clock import SimClock
        from simulators.faults import FaultOptions
        from simulators.runner import run_simulation
        from simulators.simulation import Simulation
        from simulators.truth import TruthWriter

        sink = _Collect()
        start = datetime.now(UTC)
        sim = Simulation(
            inventory=self.fleet,
            start=start,
            seed=20,
            profiles=self.profiles,
            rs=RandomStream(np.random.default_rng(20)),
            scenarios=[],
            faults=FaultOptions(),
        )
        run_simulation(
            sim, sink=sink, truth=TruthWriter(self.root / "truth-background.jsonl"),
            clock=SimClock(start_ms=sim.start_ms, speed=None), count=n,
        )  # fmt: skip
        return sink.messages

    def backlog(self, messages: int) -> int:
        """Publish `messages` of telemetry as fast as the field broker takes them; the readings."""
        first, _, _ = _phase(
            inventory=self.fleet,
            profiles=self.profiles,
            seed=7,
            start=datetime.now(UTC),
            speed=None,
            count=messages,
            broker_url=self.field.url,
            truth_path=self.root / "truth-backlog.jsonl",
        )
        return len(first)

    def check(self) -> None:
        for child in self.children.values():
            if not child.running:
                raise RuntimeError(f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}")


class _Collect:
    """A simulation sink that keeps the messages."""

    def __init__(self) -> None:
        self.target = "memory"
        self.errors = 0
        self.messages: list[tuple[str, bytes]] = []

    def publish(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))

    def idle(self, seconds: float) -> None:
        """Generation runs as fast as it can: no pacing."""

    def close(self, *, timeout: float = 10.0) -> None:
        """Nothing to deliver."""


def _publish_paced(host: str, port: int, path: str, rate: int, stop: Any, started: Any) -> None:
    """(A process of its own.) Publish the messages in `path` at `rate` a second, QoS 1."""
    from simulators.mqtt import MqttPublisher

    messages = msgspec.msgpack.decode(Path(path).read_bytes(), type=list[tuple[str, bytes]])
    pub = MqttPublisher(host=host, port=port, client_id=f"bench-background-{os.getpid()}", qos=1)
    started.set()
    began = time.monotonic()
    try:
        for i, (topic, payload) in enumerate(messages):
            if stop.is_set():
                break
            ahead = began + i / rate - time.monotonic()
            if ahead > 0.002:
                pub.idle(ahead)  # pacing: the publisher is ahead of the rate
            pub.publish(topic, payload)
        pub.drain(10)
    finally:
        pub.close()


def _child(root: Path, name: str, module: str, args: list[str]) -> Child:
    return Child.python(name=name, module=module, args=args, log=root / f"{name}.log")


@contextmanager
def running_chain(root: Path, *, pushes: bool = False, commands: bool = False) -> Iterator[Chain]:
    """Start the chain (with the escalator, the sender and a webhook receiver when `pushes`; with
    ``linli cloud commands``, the HTTP API and a simulation of `Chain.lamp` and `Chain.button` that
    obeys commands, when `commands`), pin it as deployed, yield it, and stop everything."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    profiles = ProfileSet.shipped()
    fleet_yaml = root / "fleet.yaml"
    fleet_yaml.write_text(
        "communities:\n  - id: bench\n    lat: 31.2304\n    lon: 121.4737\n    gateways: 1\n"
        "    devices: {door_contact: 800, sos_button: 400, manhole_cover: 200, streetlight: 600}\n"
    )
    inventory = load_fleet(str(fleet_yaml), rs=RandomStream(np.random.default_rng(11)), profiles=profiles)
    button = next(d for d in inventory.devices if d.profile == "generic_lorawan/sos_button")
    lamp = next(d for d in inventory.devices if d.profile == "generic_nbiot/streetlight")
    inv = root / "inventory.json"
    inventory.dump(inv)
    gateway = inventory.devices[0].gateway_id
    chain = Chain(
        pki=demo_pki(root / "pki", community_id="bench", gateway_ids=[gateway]),
        root=root,
        profiles=profiles,
        button=button,
        fleet=Inventory(
            [d for d in inventory.devices if d.device_id not in (button.device_id, lamp.device_id)]
        ),
    )
    chain.lamp = lamp
    pub = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-sos", protocol=mqtt.MQTTv5)
    try:
        chain.field.start()
        chain.cloud.start()
        chain.pg.start()
        chain.url = url = chain.pg.dsn("postgres")
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        overrides: dict[str, Any] = chain.pki.ingest_overrides() | {"alerts": {"http": {"address": ""}}}
        if pushes:
            chain.pushes = PushServer()  # its clock checks the webhook's timestamps: the wall clock
            hook = chain.pushes.add_webhook("grid", HOOK_KEY)
            chain.pushes.start()
            people = root / "people.yaml"
            people.write_text(_PEOPLE)
            overrides |= {
                "incidents": {"people": str(people), "http": {"address": ""}},
                "notify": {
                    "channels": {"grid": {"kind": "webhook", "url": hook, "secret": HOOK_KEY}},
                    "http": {"address": ""},
                },
            }
        if commands:
            people = root / "people.yaml"
            people.write_text(_PEOPLE if pushes else _STAFF)
            chain.api_port = free_port("127.0.0.1")
            overrides |= {
                "alerts": overrides["alerts"] | {"inventory": str(inv)},  # the devices table from it
                "commands": overrides["commands"] | {"http": {"address": ""}},
                "incidents": overrides.get("incidents", {}) | {"people": str(people)},
                "api": {
                    "http": {"address": f"127.0.0.1:{chain.api_port}"},
                    "token_key_file": str(root / "api-token.key"),
                },
            }
        toml = write_cloud_config(
            root / "chain.toml", database_url=url, mqtt_url=chain.cloud.url, overrides=overrides
        )
        edge_toml = write_edge_config(
            root / "edge.toml",
            gateway_id=gateway,
            community_id="bench",
            inventory=inv,
            field_url=chain.field.url,
            cloud_url=chain.cloud.url,
            buffer=root / "buffer.db",
            overrides=chain.pki.gateway_overrides(gateway),
        )
        services = ["ingest", "alerts"] + (["incidents", "notify"] if pushes else [])
        services += ["commands", "api"] if commands else []
        for name in services:
            chain.children[name] = _child(root, name, "cloud", ["cloud", name, "--config", str(toml)])
        if commands:  # the lamp and the button obey (the button's presses stay `press()`'s)
            Inventory([lamp, button]).dump(root / "obeying.json")
            chain.children["lamp"] = _child(
                root, "lamp", "device_profiles.console",
                ["sim", "--fleet", str(root / "obeying.json"), "--start", "now", "--speed", "1",
                 "--seed", "3", "--broker", chain.field.url, "--qos", "1", "--obey", "--quiet",
                 "--truth", str(root / "obeying-truth.jsonl")],
            )  # fmt: skip
        chain.children["edge"] = _child(root, "edge", "edge", ["run", "--config", str(edge_toml)])
        ingest, alerts, edge = chain.children["ingest"], chain.children["alerts"], chain.children["edge"]
        ingest.start()
        wait_until(lambda: "subscribed to" in ingest.log_tail(100_000), 60, "the ingest", ingest)
        alerts.start()
        edge.start()
        for name in services[2:]:
            chain.children[name].start()
        wait_until(lambda: "subscribed" in edge.log_tail(1_000_000), 60, "the edge agent", edge)
        wait_until(
            lambda: "active from feed_seq" in alerts.log_tail(100_000), 60, "the alert service", alerts
        )
        if pushes:
            notify = chain.children["notify"]
            wait_until(lambda: "sender running" in notify.log_tail(100_000), 60, "the sender", notify)
        if commands:
            sender = chain.children["commands"]
            wait_until(lambda: "subscribed to" in sender.log_tail(100_000), 60, "the command sender", sender)
            chain.children["lamp"].start()
        pin_as_deployed(
            gateway=[chain.field.pid, edge.pid, os.getpid()]
            + ([chain.children["lamp"].pid] if commands else []),
            cloud=[chain.cloud.pid, _pg_pid(root / "pgchain")] + [chain.children[n].pid for n in services],
        )
        pub.connect(chain.field.host, chain.field.port)
        pub.loop_start()
        chain._publisher = pub
        yield chain
    finally:
        pub.disconnect()
        pub.loop_stop()
        for name, child in reversed(chain.children.items()):
            # the simulation ends on Ctrl-C with its ground truth complete
            child.stop(timeout=30, sig=signal.SIGINT if name == "lamp" else signal.SIGTERM)
        if chain.pushes is not None:
            chain.pushes.close()
        chain.field.stop()
        chain.cloud.stop()
        chain.pg.stop()


#: One community, one grid worker on a webhook: the first step of every incident is one push.
_PEOPLE = """
version: 1
staff:
  - {id: w1, name: 网格员, roles: [grid_worker], communities: [bench]}
  - {id: k1, name: 居委会, roles: [committee], communities: [bench]}
  - {id: s1, name: 街道办, roles: [street], communities: [bench]}
communities:
  bench:
    name: 基准小区
    ladder:
      - {name: 网格员, staff: [w1], channels: [grid]}
      - {name: 居委会, staff: [k1], channels: [grid]}
      - {name: 街道办, staff: [s1], channels: [grid]}
"""

#: The staff alone (no ladder, no channels): who may log in to the API and send commands.
_STAFF = """
version: 1
staff:
  - {id: k1, name: 居委会, roles: [committee], communities: [bench]}
"""

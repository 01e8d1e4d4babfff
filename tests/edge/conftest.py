"""Helpers for the edge agent's tests: a fleet with realistic vendor payloads, configs, a
publisher on the field broker, a collector on the cloud broker, and the agent as a subprocess."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import msgspec
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from device_profiles import ProfileSet, Reading
from device_profiles.command_wire import PROGRESS_FILTER, CommandProgress, decode_progress
from device_profiles.inventory import Device, Inventory, Location
from device_profiles.samples import sample_device_id, sample_reading
from edge.envelope import Envelope, WireReading, decode_envelope
from simulators.services import MosquittoBroker, TlsFiles

ROOT = Path(__file__).resolve().parents[2]
GATEWAY = "gw-test"
COMMUNITY = "c-test"


@dataclass(frozen=True, slots=True)
class Dev:
    device_id: str
    profile: str
    device_type: str


class Fleet:
    """Devices for some shipped profiles, and their payloads via `ProfileSet.encode`."""

    def __init__(self, per_profile: dict[str, int], *, seed: int = 7) -> None:
        self.profiles = ProfileSet.shipped()
        self.rng = random.Random(seed)
        self.devices: list[Dev] = []
        for pid, n in per_profile.items():
            profile = self.profiles.get(pid)
            for _ in range(n):
                did = sample_device_id(profile, self.rng)
                self.devices.append(Dev(did, pid, profile.device_type))

    def of(self, profile: str) -> list[Dev]:
        return [d for d in self.devices if d.profile == profile]

    def inventory(self, path: Path, *, extra: tuple[Dev, ...] = (), extra_gateway: str = "gw-other") -> Path:
        where = Location(lat=31.23, lon=121.47)
        rows = [
            Device(
                device_id=d.device_id,
                device_type=d.device_type,
                profile=d.profile,
                community_id=COMMUNITY,
                gateway_id=GATEWAY,
                location=where,
            )
            for d in self.devices
        ] + [
            Device(
                device_id=d.device_id,
                device_type=d.device_type,
                profile=d.profile,
                community_id=COMMUNITY,
                gateway_id=extra_gateway,
                location=where,
            )
            for d in extra
        ]
        Inventory(rows).dump(path)
        return path

    def reading(
        self,
        dev: Dev,
        *,
        metrics: dict[str, float] | None = None,
        events: tuple[str, ...] | None = None,
        ts: datetime | None = None,
    ) -> Reading:
        now = datetime.now(UTC)
        r = sample_reading(self.profiles.get(dev.profile), self.rng, received_at=now, device_id=dev.device_id)
        changes: dict[str, Any] = {"ts": (ts or now).replace(microsecond=0)}
        if metrics is not None:
            changes["metrics"] = {**r.metrics, **metrics}
        if events is not None:
            changes["events"] = events
        return msgspec.structs.replace(r, **changes)

    def payload(self, dev: Dev, **kwargs: Any) -> tuple[str, bytes, Reading]:
        r = self.reading(dev, **kwargs)
        topic, payload = self.profiles.encode(r)
        return topic, payload, r


def write_config(
    path: Path,
    *,
    inventory: Path,
    field: MosquittoBroker,
    cloud: MosquittoBroker,
    buffer: Path,
    extra: str = "",
    cloud_tls: TlsFiles | None = None,
    client_cert: bool = True,
    sections: dict[str, dict[str, Any]] | None = None,
) -> Path:
    base: dict[str, dict[str, Any]] = {
        "field": {"url": field.url, "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "keepalive_s": 10},
        "cloud": {"url": cloud.url, "backoff_base_s": 0.05, "backoff_cap_s": 0.5, "keepalive_s": 10},
        "buffer": {"path": str(buffer), "commit_interval_ms": 20},
        "uplink": {"batch_max_latency_ms": 100, "drain_timeout_s": 5},
        "liveness": {"startup_grace_s": 3600},
        "status": {"interval_s": 1},
        "http": {"address": ""},
    }
    if cloud_tls is not None:
        base["cloud"]["tls"] = {"ca_cert": str(cloud_tls.ca_cert)}
        if client_cert:
            base["cloud"]["tls"].update(
                client_cert=str(cloud_tls.client_cert), client_key=str(cloud_tls.client_key)
            )
    for name, values in (sections or {}).items():
        base.setdefault(name, {}).update(values)
    lines = [
        f'gateway_id = "{GATEWAY}"',
        f'community_id = "{COMMUNITY}"',
        f'inventory = "{inventory}"',
        extra,
    ]
    for name, values in base.items():
        lines.append(f"[{name}]")
        for k, v in values.items():
            if isinstance(v, dict):
                continue
            lines.append(f"{k} = {_toml(v)}")
        for k, v in values.items():
            if isinstance(v, dict):
                lines.append(f"[{name}.{k}]")
                lines += [f"{kk} = {_toml(vv)}" for kk, vv in v.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _toml(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    return repr(v)


class Publisher:
    """QoS 1 publisher on the field broker (paho, its own network thread)."""

    def __init__(self, broker: MosquittoBroker, *, tls: TlsFiles | None = None) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_cert), certfile=str(tls.client_cert), keyfile=str(tls.client_key)
            )
        self.client.max_inflight_messages_set(1000)
        self.client.max_queued_messages_set(0)
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, *, wait: bool = False) -> mqtt.MQTTMessageInfo:
        info = self.client.publish(topic, payload, qos=1)
        if wait:
            info.wait_for_publish(10)
            assert info.is_published(), f"the field broker did not acknowledge {topic} in 10 s"
        return info

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class Collector:
    """Subscribes to the cloud broker's up and status topics (persistent session) and keeps
    every envelope, in arrival order."""

    def __init__(self, broker: MosquittoBroker, *, tls: TlsFiles | None = None) -> None:
        self.envelopes: list[Envelope] = []
        self.raw: list[bytes] = []
        self.status: list[dict[str, Any]] = []
        self.progress: list[CommandProgress] = []
        self.arrivals: list[float] = []
        self.lock = threading.Lock()
        self.subscribed = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"col-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        if tls is not None:
            self.client.tls_set(
                ca_certs=str(tls.ca_cert), certfile=str(tls.client_cert), keyfile=str(tls.client_key)
            )
        self.client.reconnect_delay_set(1, 1)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_subscribe = lambda *a: self.subscribed.set()
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        self.client.connect(broker.host, broker.port, clean_start=False, properties=props)
        self.client.loop_start()
        assert self.subscribed.wait(10)

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe(
            [
                ("linli/v1/+/+/up", 1),
                ("linli/v1/+/+/alarm", 1),
                ("linli/v1/+/+/status", 1),
                (PROGRESS_FILTER, 1),
            ]
        )

    def _on_message(self, _c: mqtt.Client, _u: Any, msg: mqtt.MQTTMessage) -> None:
        with self.lock:
            if msg.topic.endswith("/commands"):
                self.progress.append(decode_progress(bytes(msg.payload)))
            elif msg.topic.endswith(("/up", "/alarm")):
                self.raw.append(bytes(msg.payload))
                self.envelopes.append(decode_envelope(bytes(msg.payload)))
                self.arrivals.append(time.monotonic())
            else:
                self.status.append(msgspec.json.decode(msg.payload))

    def readings(self) -> list[WireReading]:
        with self.lock:
            return [r for e in self.envelopes for r in e.readings]

    def states(self, command_id: str) -> list[str]:
        """The states the agent reported for a command, in arrival order (repeats included)."""
        with self.lock:
            return [p.state for p in self.progress if p.command_id == command_id]

    def reading_ids(self) -> set[str]:
        return {r.reading_id for r in self.readings()}

    def wait_for(self, predicate: Callable[[Collector], bool], timeout: float = 30.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.05)
        return predicate(self)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@dataclass
class AgentProcess:
    config: Path
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = field(default=0)

    def start(self) -> None:
        self.starts += 1
        env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_EDGE_")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "edge", "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                env=env,
                start_new_session=True,
            )

    def lines(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                out.append(msgspec.json.decode(line))
            except msgspec.DecodeError:
                out.append({"event": "non_json", "line": line})
        return out

    def count(self, event: str) -> int:
        return sum(1 for line in self.lines() if line.get("event") == event)

    def wait_log(self, event: str, *, count: int = 1, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.count(event) >= count:
                return
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"agent exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no {event!r} x{count} in the agent's log:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout: float = 30.0) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


@pytest.fixture
def agent_factory(tmp_path: Path) -> Iterator[Callable[[Path], AgentProcess]]:
    agents: list[AgentProcess] = []

    def make(config: Path) -> AgentProcess:
        agent = AgentProcess(config=config, log=tmp_path / f"agent-{len(agents)}.log")
        agents.append(agent)
        return agent

    yield make
    for agent in agents:
        agent.stop()


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    made: list[Collector] = []
    yield made
    for c in made:
        c.close()


@pytest.fixture
def publishers() -> Iterator[list[Publisher]]:
    made: list[Publisher] = []
    yield made
    for p in made:
        p.close()


class Rig(NamedTuple):
    """An agent running between its own field and cloud brokers, a publisher on the field broker
    and a collector on the cloud broker (subscribed before the agent starts)."""

    field: MosquittoBroker
    cloud: MosquittoBroker
    config: Path
    agent: AgentProcess
    col: Collector
    pub: Publisher


@pytest.fixture
def rig(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> Callable[..., Rig]:
    """``rig(fleet, sections=..., inventory=...)``: start an agent for `fleet` (its inventory, or
    the file given) with the test configuration plus `sections`; returns once it has subscribed."""

    def start(
        fleet: Fleet, *, sections: dict[str, dict[str, Any]] | None = None, inventory: Path | None = None
    ) -> Rig:
        field, cloud = make_broker(), make_broker()
        config = write_config(
            tmp_path / "edge.toml",
            inventory=inventory or fleet.inventory(tmp_path / "inventory.yaml"),
            field=field,
            cloud=cloud,
            buffer=tmp_path / "buffer.db",
            sections=sections,
        )
        col = Collector(cloud)
        collectors.append(col)
        agent = agent_factory(config)
        agent.start()
        agent.wait_log("subscribed")
        pub = Publisher(field)
        publishers.append(pub)
        return Rig(field, cloud, config, agent, col, pub)

    return start

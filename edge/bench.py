"""``linli bench edge``: the agent's memory, throughput, CPU per reading and disk footprint.

Method (docs/benchmarks.md has the figures):

1. Two private Mosquitto brokers (field, cloud) and a device inventory of a realistic mix of the
   shipped profiles. The agent is started the way ``deploy/linli-edge.service`` starts it: the
   ``linli`` command of this installation, ``linli edge run --config FILE``, with the unit's
   environment (`SERVICE_COMMAND`, `SERVICE_ENVIRONMENT`; a test keeps them equal to the unit's
   ``ExecStart`` and ``Environment`` lines), pinned to one core (``sched_setaffinity``), with the
   default durability (``full``: every commit fsynced). Memory is read from the agent's
   ``/proc/PID/status``: ``VmRSS`` (resident now) and ``VmHWM`` (its high-water mark).
2. Idle: once the agent has subscribed, with an empty buffer and no load, ``idle_rss_mb`` is the
   highest ``VmRSS`` sampled over a few seconds.
3. Throughput: a load generator in another process (pinned to another core when there is one)
   publishes vendor payloads made with `ProfileSet.encode` at QoS 1; a subscriber on the cloud
   broker counts readings. ``readings_per_s`` is readings counted at the cloud broker divided by
   the time from the first publish to the last reading's arrival; ``cpu_us_per_reading`` is the
   agent's user+system CPU time over the same span divided by the readings.
4. Footprint: the cloud broker is stopped and ``--buffered`` readings (default 1,000,000) are
   published; once the agent has buffered them all, ``buffer_bytes_per_reading`` is the buffer's
   disk use (database + WAL) divided by the readings. Then the cloud broker is started again and
   the agent drains the buffer (``drain_readings_per_s``: readings sent / time from the restart).
   ``throughput_peak_rss_mb`` is the agent's ``VmHWM`` after the throughput phase; it is then
   reset (``/proc/PID/clear_refs``), so ``buffered_peak_rss_mb`` is the peak while the buffer
   fills with ``--buffered`` readings and drains; ``peak_rss_mb`` is the higher of the two: the
   agent's peak over the whole run.
5. SD-card wear: ``disk_written_bytes_per_reading`` is what the agent caused to be written to
   storage (``write_bytes`` of ``/proc/PID/io``: the SQLite database, its WAL and checkpoints)
   during the throughput phase divided by the readings forwarded, and
   ``disk_written_bytes_per_buffered_reading`` the same while the buffer fills with the cloud
   down. Target: at most 300 bytes per reading at the default settings.
6. A large gateway: the phases again (half the readings, a fifth of the backlog) on a new agent
   whose inventory and load have ``--inventory-devices`` devices (default 10,000):
   ``inventory_idle_rss_mb`` and ``inventory_peak_rss_mb``. Target: peak at most 64 MB in both.
"""

from __future__ import annotations

import argparse
import contextlib
import multiprocessing as mp
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import msgspec

#: The service unit's command line, after the ``linli`` executable (deploy/linli-edge.service).
SERVICE_COMMAND = ("edge", "run", "--config")
#: The steady phase: readings per second (a 2,000-device gateway whose devices report every few
#: minutes sends about 10/s) and how long.
STEADY_RATE: Final = 20
STEADY_S: Final = 15
#: The service unit's ``Environment=`` settings (deploy/linli-edge.service).
SERVICE_ENVIRONMENT = {"PYTHONUNBUFFERED": "1"}

_PROFILE_MIX = {
    "generic_lorawan/door_contact": 40,
    "aqara/mccgq11lm": 20,
    "generic_lorawan/manhole_cover": 10,
    "generic_nbiot/manhole_cover": 5,
    "generic_lorawan/streetlight": 10,
    "generic_nbiot/streetlight": 5,
    "generic_lorawan/sos_button": 5,
    "tuya/ts0215a_sos": 5,
}


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser(
        "edge", help="edge agent: idle and peak RSS, readings/s, CPU per reading, disk per reading"
    )
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    p.add_argument("--readings", type=int, default=200_000, help="readings for the throughput phase")
    p.add_argument(
        "--buffered", type=int, default=1_000_000, help="readings buffered for the footprint phase"
    )
    p.add_argument("--devices", type=int, default=2000)
    p.add_argument(
        "--inventory-devices",
        type=int,
        default=10_000,
        help="then run again with an inventory and load of this many devices (0: skip)",
    )
    p.set_defaults(handler=_handler)


def _fleet(n: int, rng: random.Random) -> list[tuple[str, str, str]]:
    from device_profiles import ProfileSet
    from device_profiles.samples import sample_device_id

    profiles = ProfileSet.shipped()
    total = sum(_PROFILE_MIX.values())
    out = []
    for pid, share in _PROFILE_MIX.items():
        profile = profiles.get(pid)
        for _ in range(max(1, n * share // total)):
            out.append((sample_device_id(profile, rng), pid, profile.device_type))
    return out


def _payloads(fleet: list[tuple[str, str, str]], count: int, seed: int) -> list[tuple[str, bytes]]:
    from device_profiles import Event, ProfileSet
    from device_profiles.samples import sample_reading

    profiles = ProfileSet.shipped()
    rng = random.Random(seed)  # noqa: S311 - load, not secrets
    out = []
    now = datetime.now(UTC)
    for i in range(count):  # every payload distinct: repeats would be dropped as duplicates
        device_id, pid, _ = fleet[i % len(fleet)]
        r = sample_reading(profiles.get(pid), rng, received_at=now, device_id=device_id)
        # Alarms are rare in the field: SOS buttons send heartbeats here (a LoRaWAN frame needs
        # an event; a Zigbee battery report has none).
        events = (
            (Event.HEARTBEAT,) if pid == "generic_lorawan/sos_button" else () if "sos" in pid else r.events
        )
        r = msgspec.structs.replace(r, ts=now.replace(microsecond=0), events=events)
        out.append(profiles.encode(r))
    return out


def _publish_packet(topic: str, payload: bytes, packet_id: int) -> bytes:
    """One MQTT 3.1.1 QoS 1 PUBLISH, encoded."""
    t = topic.encode()
    body = len(t).to_bytes(2, "big") + t + packet_id.to_bytes(2, "big") + payload
    n, length = len(body), bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        length.append(byte | 0x80 if n else byte)
        if not n:
            break
    return b"\x32" + bytes(length) + body


class _RawPublisher:
    """A load generator that cannot be the bottleneck: pre-encoded QoS 1 PUBLISH packets written
    on a plain socket in large writes, PUBACKs counted from the stream, at most `window`
    unacknowledged (packet ids are 16 bits: the window stays far below 65,535)."""

    def __init__(self, host: str, port: int, client_id: str, *, window: int = 20_000) -> None:
        import socket

        self.window = window
        self.sock = socket.create_connection((host, port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        cid = client_id.encode()
        body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(cid).to_bytes(2, "big") + cid
        self.sock.sendall(b"\x10" + bytes((len(body),)) + body)
        connack = self.sock.recv(4)
        if len(connack) < 4 or connack[0] != 0x20 or connack[3] != 0:
            raise RuntimeError(f"the field broker refused the load generator: {connack!r}")
        self.sent = 0
        self.acked = 0
        self._rest = 0  # bytes of a PUBACK split across reads

    def _read_acks(self) -> None:
        data = self.sock.recv(1 << 20)
        if not data:
            raise RuntimeError("the field broker closed the load generator's connection")
        total = self._rest + len(data)
        self.acked += total // 4
        self._rest = total % 4

    def send(self, packets: list[bytes]) -> None:
        for i in range(0, len(packets), 500):
            chunk = packets[i : i + 500]
            while self.sent + len(chunk) - self.acked > self.window:
                self._read_acks()
            self.sock.sendall(b"".join(chunk))
            self.sent += len(chunk)

    def finish(self) -> None:
        while self.acked < self.sent:
            self._read_acks()
        self.sock.sendall(b"\xe0\x00")
        self.sock.close()


def _generator(
    host: str,
    port: int,
    fleet: list[tuple[str, str, str]],
    count: int,
    seed: int,
    cpu: int | None,
    started: Any,
    pre_encode: bool,
) -> None:
    """Publish `count` distinct payloads. With `pre_encode`, every packet is built before
    `started` is set, so the measured span holds nothing but socket writes."""
    if cpu is not None:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(0, {cpu})
    step = count if pre_encode else 5_000
    sent = 0

    def packets(n: int) -> list[bytes]:
        return [
            _publish_packet(topic, payload, (sent + i) % 65535 + 1)
            for i, (topic, payload) in enumerate(_payloads(fleet, n, seed * 1_000_003 + sent))
        ]

    batch = packets(min(step, count))
    pub = _RawPublisher(host, port, f"bench-gen-{seed}")
    started.set()
    while True:
        pub.send(batch)
        sent += len(batch)
        if sent >= count:
            break
        batch = packets(min(step, count - sent))
    pub.finish()


def _paced(
    host: str, port: int, fleet: list[tuple[str, str, str]], rate: float, count: int, seed: int
) -> None:
    """Publish `count` distinct payloads at `rate` per second (ten sends a second)."""
    packets = [
        _publish_packet(topic, payload, i % 65535 + 1)
        for i, (topic, payload) in enumerate(_payloads(fleet, count, seed))
    ]
    pub = _RawPublisher(host, port, f"bench-paced-{seed}")
    per_tick = max(1, round(rate / 10))
    start = time.monotonic()
    for tick, i in enumerate(range(0, count, per_tick)):
        time.sleep(max(0.0, start + tick / 10 - time.monotonic()))  # the load's own pace
        pub.send(packets[i : i + per_tick])
    pub.finish()


class _Counter:
    def __init__(self, host: str, port: int) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.readings = 0
        self.last_at = 0.0
        self.ready = threading.Event()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-cloud", protocol=mqtt.MQTTv5)
        self.client.on_connect = lambda c, *a: c.subscribe(
            [("linli/v1/+/+/up", 1), ("linli/v1/+/+/alarm", 1)]
        )
        self.client.on_subscribe = lambda *a: self.ready.set()
        self.client.on_message = self._on_message
        self.client.connect(host, port)
        self.client.loop_start()
        self.ready.wait(10)

    def _on_message(self, _c: Any, _u: Any, msg: Any) -> None:
        env = msgspec.msgpack.decode(msg.payload, type=dict[str, msgspec.Raw])
        self.readings += len(msgspec.msgpack.decode(env["readings"], type=list[msgspec.Raw]))
        self.last_at = time.monotonic()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _counter(db: Path, name: str) -> int:
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            row = conn.execute("SELECT value FROM counters WHERE name = ?", (name,)).fetchone()
            return int(row[0]) if row else 0
    except sqlite3.Error:
        return 0


def _buffered(db: Path) -> int:
    return _counter(db, "readings_buffered")


def _disk(db: Path) -> int:
    return sum(p.stat().st_size for p in db.parent.glob(db.name + "*") if p.is_file())


def memory_kb(pid: int) -> dict[str, int]:
    """``VmRSS`` and ``VmHWM`` (kB) of a process, from ``/proc/PID/status``."""
    out = {}
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


def reset_peak(pid: int) -> None:
    """Reset a process's ``VmHWM`` to its current RSS (``/proc/PID/clear_refs``, Linux >= 4.0)."""
    with open(f"/proc/{pid}/clear_refs", "w", encoding="ascii") as refs:
        refs.write("5")


def written_bytes(pid: int) -> int:
    """Bytes a process caused to be written to storage (``write_bytes`` of ``/proc/PID/io``:
    what reaches the disk, the page cache's writeback included, not what ``write()`` was asked)."""
    with open(f"/proc/{pid}/io", encoding="ascii") as io:
        for line in io:
            key, _, value = line.partition(":")
            if key == "write_bytes":
                return int(value)
    raise RuntimeError(f"no write_bytes in /proc/{pid}/io")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from ``/proc/PID/stat``."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def linli_command() -> str:
    """The ``linli`` executable of this installation (beside the interpreter in a venv)."""
    beside = Path(sys.executable).with_name("linli")
    found = str(beside) if beside.exists() else shutil.which("linli")
    if found is None:
        raise RuntimeError("the `linli` command is not installed: pip install the project first")
    return found


def _wait_until(done: Any, timeout: float, what: str, agent: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        if agent.poll() is not None:
            raise RuntimeError(f"the agent exited while {what}: " + log.read_text()[-2000:])
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out while {what}")
        time.sleep(0.1)


def run_bench(*, readings: int, buffered: int, devices: int, log: Any) -> dict[str, float]:
    from device_profiles.inventory import Device, Inventory, Location
    from simulators.services import MosquittoBroker, free_port

    cpus = sorted(os.sched_getaffinity(0))
    agent_cpu = cpus[0]
    gen_cpu = cpus[1] if len(cpus) > 1 else None
    rng = random.Random(11)  # noqa: S311 - load, not secrets
    fleet = _fleet(devices, rng)
    linli = linli_command()
    with tempfile.TemporaryDirectory(prefix="linli-bench-edge-") as tmp_name:
        tmp = Path(tmp_name)
        where = Location(lat=31.23, lon=121.47)
        Inventory(
            Device(
                device_id=d,
                device_type=t,
                profile=p,
                community_id="c-bench",
                gateway_id="gw-bench",
                location=where,
            )
            for d, p, t in fleet
        ).dump(tmp / "inventory.json")
        with MosquittoBroker(workdir=tmp / "field") as field, MosquittoBroker(workdir=tmp / "cloud") as cloud:
            db = tmp / "buffer.db"
            (tmp / "edge.toml").write_text(
                'gateway_id = "gw-bench"\ncommunity_id = "c-bench"\ninventory = "inventory.json"\n'
                f'[field]\nurl = "{field.url}"\n[cloud]\nurl = "{cloud.url}"\nbackoff_cap_s = 1.0\n'
                f'[buffer]\npath = "{db}"\nmax_bytes = {4 << 30}\n'
                # The /metrics and /healthz endpoint is on, as in deploy/edge.example.toml.
                f'[http]\naddress = "127.0.0.1:{free_port("127.0.0.1")}"\n'
                "[liveness]\nstartup_grace_s = 3600\n"
            )
            agent_log_path = tmp / "agent.log"
            agent_log = agent_log_path.open("wb")
            agent = subprocess.Popen(  # noqa: S603 - this installation's own command
                [linli, *SERVICE_COMMAND, str(tmp / "edge.toml")],
                stdout=agent_log,
                stderr=subprocess.STDOUT,
                env={**os.environ, **SERVICE_ENVIRONMENT},
                preexec_fn=lambda: os.sched_setaffinity(0, {agent_cpu}),
            )
            counter = _Counter(cloud.host, cloud.port)
            try:
                _wait_until(
                    lambda: b'"subscribed"' in agent_log_path.read_bytes(),
                    30,
                    "starting",
                    agent,
                    agent_log_path,
                )
                time.sleep(2.0)  # start-up settles: the uplink connects, the first status is sent
                idle = 0
                for _ in range(15):
                    idle = max(idle, memory_kb(agent.pid)["VmRSS"])
                    time.sleep(0.2)
                figures: dict[str, float] = {"idle_rss_mb": round(idle / 1024, 1)}
                log(f"idle: {figures}")
                ctx = mp.get_context("spawn")
                log(f"throughput: {readings} readings from {len(fleet)} devices")
                started = ctx.Event()
                gen = ctx.Process(
                    target=_generator,
                    args=(field.host, field.port, fleet, readings, 1, gen_cpu, started, True),
                )
                gen.start()
                started.wait(120)
                t0 = time.monotonic()
                cpu0 = cpu_seconds(agent.pid)
                written0 = written_bytes(agent.pid)
                deadline = t0 + 600
                # Every payload is distinct, but the few whose derived reading ids coincide (same
                # device, same second, same values) are dropped by the agent as repeats: once the
                # generator is done, the target is what the agent did not drop.
                target = readings
                while counter.readings < target and time.monotonic() < deadline:
                    time.sleep(0.05)
                    if not gen.is_alive():
                        target = readings - _counter(db, "duplicates_dropped")
                cpu1 = cpu_seconds(agent.pid)
                written1 = written_bytes(agent.pid)
                elapsed = counter.last_at - t0
                gen.join(60)
                got = counter.readings
                cpu_s = cpu1 - cpu0
                figures["readings_per_s"] = round(got / elapsed, 1)
                figures["cpu_us_per_reading"] = round(cpu_s / got * 1e6, 1)
                figures["disk_written_bytes_per_reading"] = round((written1 - written0) / got, 1)
                throughput_peak = memory_kb(agent.pid)["VmHWM"]
                figures["throughput_peak_rss_mb"] = round(throughput_peak / 1024, 1)
                log(f"throughput: {figures}")
                # A gateway's ordinary day: a few readings a second, each committed on its own.
                base_count = counter.readings
                steady = STEADY_RATE * STEADY_S
                log(f"steady: {steady} readings at {STEADY_RATE}/s")
                written3 = written_bytes(agent.pid)
                dups3 = _counter(db, "duplicates_dropped")
                _paced(field.host, field.port, fleet, STEADY_RATE, steady, 3)
                _wait_until(
                    lambda: (
                        counter.readings - base_count >= steady - (_counter(db, "duplicates_dropped") - dups3)
                    ),
                    60,
                    "the steady load forwarded",
                    agent,
                    agent_log_path,
                )
                time.sleep(2.0)  # the last batch's deletion after its PUBACK, then measure
                figures["steady_disk_written_bytes_per_reading"] = round(
                    (written_bytes(agent.pid) - written3) / max(1, counter.readings - base_count), 1
                )
                log(f"steady: {figures}")
                reset_peak(agent.pid)  # from here, VmHWM is the peak with the buffer filling and draining
                # Footprint: cloud down, buffer everything, then release it.
                cloud.stop()
                base = _buffered(db)
                log(f"footprint: buffering {buffered} readings with the cloud broker down")
                gen = ctx.Process(
                    target=_generator,
                    args=(field.host, field.port, fleet, buffered, 2, gen_cpu, started, False),
                )
                gen.start()
                dups = _counter(db, "duplicates_dropped")
                written2 = written_bytes(agent.pid)

                def taken() -> bool:  # buffered, or dropped as a repeat
                    return _buffered(db) - base + _counter(db, "duplicates_dropped") - dups >= buffered

                _wait_until(taken, 1800, "buffering", agent, agent_log_path)
                gen.join(60)
                time.sleep(1.0)
                n = _buffered(db) - base
                figures["buffer_bytes_per_reading"] = round(_disk(db) / max(1, n), 1)
                figures["disk_written_bytes_per_buffered_reading"] = round(
                    (written_bytes(agent.pid) - written2) / max(1, n), 1
                )
                figures["buffered_readings"] = n
                figures["buffered_rss_mb"] = round(memory_kb(agent.pid)["VmRSS"] / 1024, 1)
                log(f"footprint: {figures}")
                sent = _counter(db, "readings_sent")
                log(f"release: the cloud broker is back, draining {n} readings")
                t1 = time.monotonic()
                cloud.start()
                _wait_until(
                    lambda: _counter(db, "readings_sent") - sent >= n, 1800, "draining", agent, agent_log_path
                )
                figures["drain_readings_per_s"] = round(n / (time.monotonic() - t1), 1)
                buffered_peak = memory_kb(agent.pid)["VmHWM"]
                figures["buffered_peak_rss_mb"] = round(buffered_peak / 1024, 1)
                figures["peak_rss_mb"] = round(max(throughput_peak, buffered_peak) / 1024, 1)
                log(f"release: {figures}")
            finally:
                counter.close()
                agent.terminate()
                try:
                    agent.wait(60)
                except subprocess.TimeoutExpired:
                    agent.kill()
                    agent.wait(10)
                agent_log.close()
    return figures


def _handler(args: argparse.Namespace) -> int:
    def log(msg: str) -> None:
        if not args.json:
            print(msg, file=sys.stderr, flush=True)

    figures = run_bench(readings=args.readings, buffered=args.buffered, devices=args.devices, log=log)
    if args.inventory_devices:
        # The same phases again on an agent whose inventory (and load) has that many devices:
        # what a large gateway holds per device (liveness, states, the inventory itself).
        log(f"again with a {args.inventory_devices}-device inventory")
        large = run_bench(
            readings=args.readings // 2,
            buffered=args.buffered // 5,
            devices=args.inventory_devices,
            log=log,
        )
        figures["inventory_devices"] = args.inventory_devices
        figures["inventory_idle_rss_mb"] = large["idle_rss_mb"]
        figures["inventory_peak_rss_mb"] = large["peak_rss_mb"]
    print(msgspec.json.encode(figures).decode())
    return 0

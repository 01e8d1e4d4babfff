"""The agent as a subprocess between two real Mosquitto brokers: kill -9, cloud outages, priority.

Every test counts readings at the cloud broker by `reading_id` (the LoRaWAN profiles carry the
ChirpStack deduplicationId, so every published message has its own id).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from edge.cli import main
from simulators.services import MosquittoBroker, TlsFiles
from tests.edge.conftest import AgentProcess, Collector, Fleet, Publisher, write_config

pytestmark = pytest.mark.integration

DOOR = "generic_lorawan/door_contact"
SOS = "generic_lorawan/sos_button"


def _setup(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    *,
    fleet: Fleet,
    cloud: MosquittoBroker | None = None,
    **config: object,
) -> tuple[MosquittoBroker, MosquittoBroker, Path]:
    field = make_broker()
    cloud = cloud or make_broker()
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=fleet.inventory(tmp_path / "inventory.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        **config,  # type: ignore[arg-type]
    )
    return field, cloud, cfg


def _buffered_count(db: Path) -> int:
    """The buffer's ``readings_buffered`` counter (0 before the agent made the database)."""
    with (
        contextlib.suppress(sqlite3.Error),
        contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn,
    ):
        row = conn.execute("SELECT value FROM counters WHERE name = 'readings_buffered'").fetchone()
        return int(row[0]) if row else 0
    return 0


def _buffered(db: Path, count: int, timeout: float) -> bool:
    """Wait until the buffer's ``readings_buffered`` counter reaches `count`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with (
            contextlib.suppress(sqlite3.Error),
            contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn,
        ):
            row = conn.execute("SELECT value FROM counters WHERE name = 'readings_buffered'").fetchone()
            if row and row[0] >= count:
                return True
        time.sleep(0.1)
    return False


@pytest.mark.slow
def test_kill9_five_times_mid_stream_loses_nothing(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 20, SOS: 5})
    field, cloud, cfg = _setup(tmp_path, make_broker, fleet=fleet)
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)

    total = 6000
    kills = 5
    segment = total // (kills + 1)
    payloads = [fleet.payload(fleet.devices[i % len(fleet.devices)]) for i in range(total)]
    sent: list[str] = []
    #: released[k]: the agent was killed the (k+1)th time and runs again; the next segment may go.
    released = [threading.Event() for _ in range(kills)]
    done = threading.Event()

    def publish() -> None:
        for i, (topic, payload, reading) in enumerate(payloads):
            if i and i % segment == 0 and not released[i // segment - 1].wait(60):
                return  # the main thread failed; it reports why
            pub.publish(topic, payload)
            sent.append(reading.reading_id)
            if i % 100 == 99:
                time.sleep(0.05)  # pacing: a stream the kills land in, not a burst already taken in
        done.set()

    db = tmp_path / "buffer.db"
    thread = threading.Thread(target=publish)
    rng = random.Random(5)
    base = 0
    thread.start()
    try:
        for k in range(kills):
            # Kill at a random point of the stream: once this run of the agent has taken in a random
            # part of the segment being published (the publisher waits for the restart before the next).
            target = base + rng.randint(100, 400)
            assert _buffered(db, target, 30), f"kill {k + 1}: the agent took in nothing since its start"
            assert not done.is_set()
            agent.kill9()
            agent.start()
            agent.wait_log("subscribed", count=k + 2, timeout=30)
            base = _buffered_count(db)
            released[k].set()
    finally:
        for event in released:
            event.set()
        thread.join()
    assert done.is_set()
    assert len(sent) == total
    assert col.wait_for(lambda c: set(sent) <= c.reading_ids(), 90), (
        f"{len(set(sent) - col.reading_ids())} of {total} readings never reached the cloud broker"
    )
    assert agent.terminate() == 0
    # Repeats are allowed, but batches resent after a restart are byte-identical per batch_seq
    # (kills here rarely catch a batch in flight: the next test makes sure they do).
    by_seq: dict[int, bytes] = {}
    for env, raw in zip(col.envelopes, col.raw, strict=True):
        assert by_seq.setdefault(env.batch_seq, raw) == raw


def _fixed_batches(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
        return int(conn.execute("SELECT count(*) FROM batches").fetchone()[0])


def test_batches_in_flight_at_a_kill_are_resent_byte_identical(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 10})
    field, cloud, cfg = _setup(
        tmp_path, make_broker, fleet=fleet, sections={"uplink": {"batch_max_readings": 50}}
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    # The cloud link must be up before the broker freezes: a CONNECT to a frozen broker never
    # completes, and no batch would be in flight at the kill.
    agent.wait_log("connected", count=2)  # field and cloud
    pub = Publisher(field)
    publishers.append(pub)
    assert cloud.pid is not None
    db = tmp_path / "buffer.db"
    # The cloud broker stops answering (its socket still takes the PUBLISHes): the batches the
    # agent sends stay fixed in its buffer, waiting for their PUBACKs, when it is killed.
    os.kill(cloud.pid, signal.SIGSTOP)
    try:
        sent = []
        for i in range(200):
            topic, payload, r = fleet.payload(fleet.devices[i % len(fleet.devices)])
            pub.publish(topic, payload)
            sent.append(r.reading_id)
        assert _buffered(db, len(sent), 20)
        deadline = time.monotonic() + 20
        while _fixed_batches(db) < 4 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _fixed_batches(db) == 4  # 200 readings, 50 a batch
        agent.kill9()
    finally:
        os.kill(cloud.pid, signal.SIGCONT)
    agent.start()
    agent.wait_log("batches_resent")
    assert col.wait_for(lambda c: set(sent) <= c.reading_ids(), 20)
    assert agent.terminate() == 0
    resent = sum(line.get("count", 0) for line in agent.lines() if line.get("event") == "batches_resent")
    assert resent == 4
    by_seq: dict[int, list[bytes]] = {}
    for env, raw in zip(col.envelopes, col.raw, strict=True):
        by_seq.setdefault(env.batch_seq, []).append(raw)
    # The copies the broker took before the kill, and the resent ones: the same bytes.
    repeated = {seq: copies for seq, copies in by_seq.items() if len(copies) > 1}
    assert repeated
    assert all(len(set(copies)) == 1 for copies in repeated.values())


def test_cloud_outage_everything_arrives_alarms_first(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 10, SOS: 3})
    window = 2
    field, cloud, cfg = _setup(
        tmp_path,
        make_broker,
        fleet=fleet,
        sections={"uplink": {"telemetry_batches_in_flight": window, "batch_max_readings": 100}},
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    agent.wait_log("connected", count=2)  # field and cloud: a link that never came up is not lost
    cloud.stop()
    agent.wait_log("connection_lost")
    doors, soss = fleet.of(DOOR), fleet.of(SOS)
    telemetry_ids, alarm_ids = [], []
    for i in range(2000):
        topic, payload, r = fleet.payload(doors[i % len(doors)], metrics={"contact_open": 0.0})
        pub.publish(topic, payload)
        telemetry_ids.append(r.reading_id)
        if i % 100 == 50:
            topic, payload, r = fleet.payload(soss[i % len(soss)], events=("sos_pressed",))
            pub.publish(topic, payload, wait=True)
            alarm_ids.append(r.reading_id)
    # The outage lasts well past the backoff cap (0.5 s here, reached at attempt 4; 60 s in
    # production): ten attempts at the cap, as a five-minute outage gives in the field.
    broker = f"{cloud.host}:{cloud.port}"

    def attempts() -> int:
        failed = [
            int(line.get("attempt", 0))
            for line in agent.lines()
            if line.get("event") == "connect_failed" and line.get("broker") == broker
        ]
        return max(failed, default=-1)

    deadline = time.monotonic() + 30
    while attempts() < 14 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert attempts() >= 14, agent.lines()[-5:]
    before = len(col.envelopes)
    cloud.start()
    assert col.wait_for(lambda c: set(telemetry_ids + alarm_ids) <= c.reading_ids(), 60)
    after = col.envelopes[before:]
    classes = [
        "alarm" if any(r.reading_id in set(alarm_ids) for r in e.readings) else "telemetry" for e in after
    ]
    last_alarm = max(i for i, c in enumerate(classes) if c == "alarm")
    telemetry_positions = [i for i, c in enumerate(classes) if c == "telemetry"]
    # At most the telemetry batches in flight when the link dropped may go first.
    assert last_alarm < telemetry_positions[window], classes[: window + 5]
    assert all(e.batch_class == "alarm" for e, c in zip(after, classes, strict=True) if c == "alarm")
    assert agent.terminate() == 0


def test_sos_during_long_drain_arrives_within_one_second(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 50, SOS: 1})
    # Telemetry paced at 3,000 readings/s: the 12,000-reading backlog takes 4 s to drain on any
    # machine that can forward that fast (a slower one drains more slowly still), so the SOS is
    # pressed with thousands of readings still buffered. Alarm batches are never paced; default
    # batch size and window, so up to four full telemetry batches may be in flight ahead of it.
    rate = 3000
    field, cloud, cfg = _setup(
        tmp_path,
        make_broker,
        fleet=fleet,
        sections={"uplink": {"telemetry_max_readings_per_s": rate}},
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    agent.wait_log("connected", count=2)  # field and cloud: a link that never came up is not lost
    cloud.stop()
    agent.wait_log("connection_lost")
    doors = fleet.of(DOOR)
    backlog = []
    infos = []
    for i in range(12_000):
        topic, payload, r = fleet.payload(doors[i % len(doors)])
        infos.append(pub.publish(topic, payload))
        backlog.append(r.reading_id)
    for info in infos:
        info.wait_for_publish(30)
    assert _buffered(tmp_path / "buffer.db", len(backlog), 30), "the agent did not buffer the backlog"
    cloud.start()
    assert col.wait_for(lambda c: len(c.envelopes) >= 1, 30)  # the drain has begun
    topic, payload, sos = fleet.payload(fleet.of(SOS)[0], events=("sos_pressed",))
    pressed = time.monotonic()
    pub.publish(topic, payload)
    assert col.wait_for(lambda c: sos.reading_id in c.reading_ids(), 10)
    with col.lock:
        index = next(
            i for i, e in enumerate(col.envelopes) if any(r.reading_id == sos.reading_id for r in e.readings)
        )
        latency = col.arrivals[index] - pressed
    still_draining = len(
        set(backlog) - {r.reading_id for e in col.envelopes[: index + 1] for r in e.readings}
    )
    assert still_draining > 1000, "the SOS must be pressed while the backlog is still draining"
    assert latency < 1.0, f"SOS took {latency:.3f} s to reach the cloud broker"
    assert col.wait_for(lambda c: set(backlog) <= c.reading_ids(), 60)
    # The pacing held: the telemetry batches were formed at most `rate` readings/s apart (by the
    # agent's clock: the collector itself reconnects after the outage and may get a burst).
    tele = [e for e in col.envelopes if e.batch_class == "telemetry"]
    span_s = (tele[-1].created_at_us - tele[0].created_at_us) / 1e6
    assert span_s >= (len(backlog) - len(tele[0].readings)) / rate * 0.95, span_s
    assert agent.terminate() == 0


def test_malformed_and_unknown_input_quarantined_while_forwarding_continues(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 3})
    stranger = Fleet({DOOR: 1}, seed=99)
    field, cloud, cfg = _setup(tmp_path, make_broker, fleet=fleet)
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    good = []
    bad = [
        ("zigbee2mqtt/door-1", b"{not json"),
        ("nbiot/861234567890123/up", b"\xff\xfe\x00"),
        ("zigbee2mqtt/door-2", b"[" * 100 + b"]" * 100),
        ("nbiot/861234567890123/up", b'{"imei": "861234567890123", "type": "manhole", "ts": "soon"}'),
    ]
    for i in range(60):
        topic, payload, r = fleet.payload(fleet.devices[i % 3])
        pub.publish(topic, payload)
        good.append(r.reading_id)
        if i % 15 == 0:
            pub.publish(*bad[i // 15])
            topic, payload, _ = stranger.payload(stranger.devices[0])
            pub.publish(topic, payload)
    assert col.wait_for(lambda c: set(good) <= c.reading_ids(), 20)
    assert len(col.reading_ids()) == len(good)
    assert agent.terminate() == 0
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["quarantine", "list", "--config", str(cfg), "--json", "--limit", "100"]) == 0
    rows = [json.loads(line) for line in out.getvalue().splitlines()]
    reasons = sorted(r["reason"] for r in rows)
    assert reasons.count("unknown_device") == 4
    assert len(rows) == 8
    assert {"malformed_json", "not_utf8"} <= set(reasons)
    unknown = [r for r in rows if r["reason"] == "unknown_device"]
    assert all(stranger.devices[0].device_id in r["message"] for r in unknown)
    assert any(r["topic"] == "zigbee2mqtt/door-1" and r["payload_b64"] for r in rows)


def test_mutual_tls_to_the_cloud_broker(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
    test_pki: TlsFiles,
) -> None:
    fleet = Fleet({DOOR: 2})
    cloud = make_broker(tls=test_pki, require_client_cert=True)
    field, cloud, cfg = _setup(tmp_path, make_broker, fleet=fleet, cloud=cloud, cloud_tls=test_pki)
    col = Collector(cloud, tls=test_pki)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    topic, payload, r = fleet.payload(fleet.devices[0])
    pub.publish(topic, payload)
    assert col.wait_for(lambda c: r.reading_id in c.reading_ids(), 20)
    assert agent.terminate() == 0


def test_cloud_refuses_an_agent_without_client_certificate(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
    test_pki: TlsFiles,
) -> None:
    fleet = Fleet({DOOR: 1})
    cloud = make_broker(tls=test_pki, require_client_cert=True)
    field, cloud, cfg = _setup(
        tmp_path, make_broker, fleet=fleet, cloud=cloud, cloud_tls=test_pki, client_cert=False
    )
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    agent.wait_log("connect_failed", timeout=20)
    assert agent.count("connected") == 2  # the field broker only (intake, and commands to the devices)
    # It still buffers: the field side works while the cloud refuses it.
    pub = Publisher(field)
    publishers.append(pub)
    topic, payload, _ = fleet.payload(fleet.devices[0])
    pub.publish(topic, payload, wait=True)
    assert _buffered(tmp_path / "buffer.db", 1, 10), "the agent did not buffer while the cloud refused it"
    assert agent.terminate() == 0


def test_sigterm_mid_stream_flushes_drains_and_awaits_pubacks_in_order(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    fleet = Fleet({DOOR: 30})
    field, cloud, cfg = _setup(tmp_path, make_broker, fleet=fleet)
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    sent = []
    infos = []
    for i in range(4000):
        topic, payload, r = fleet.payload(fleet.devices[i % len(fleet.devices)])
        infos.append(pub.publish(topic, payload))
        sent.append(r.reading_id)
        if i == 1000:
            assert col.wait_for(lambda c: len(c.envelopes) >= 1, 20)
            agent.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
    assert agent.proc is not None
    assert agent.proc.wait(30) == 0
    events = [line["event"] for line in agent.lines()]
    assert events.index("stopping") < events.index("drained") < events.index("stopped")
    drained = next(line for line in agent.lines() if line["event"] == "drained")
    assert drained["complete"] is True
    # Everything the agent took from the field broker (and acknowledged) was delivered and its
    # PUBACK awaited before the exit: nothing is left in the buffer, and the cloud has it all.
    with contextlib.closing(sqlite3.connect(tmp_path / "buffer.db")) as conn:
        counters = dict(conn.execute("SELECT name, value FROM counters").fetchall())
        left = sum(
            conn.execute(query).fetchone()[0]
            for query in (
                "SELECT count(*) FROM alarm",
                "SELECT count(*) FROM telemetry",
                "SELECT count(*) FROM batches",
            )
        )
    assert left == 0
    assert 0 < counters["readings_buffered"] == counters["readings_sent"] < len(sent)
    assert col.wait_for(lambda c: len(c.reading_ids()) >= counters["readings_sent"], 10)
    assert len(col.reading_ids()) == counters["readings_sent"]
    # The rest waited in the agent's session on the field broker: a restart forwards it.
    for info in infos:
        info.wait_for_publish(30)
    agent.start()
    assert col.wait_for(lambda c: set(sent) <= c.reading_ids(), 60)
    assert agent.terminate() == 0

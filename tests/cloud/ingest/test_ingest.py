"""The ingest worker against a real Mosquitto and PostgreSQL+TimescaleDB: exactly once, shared
subscription, dead letters, endpoint, and a database outage in the middle of a stream."""

from __future__ import annotations

import json
import logging
import random
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

import paho.mqtt.client as mqtt
import psycopg
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from cloud.config import CloudSettings, build_settings
from cloud.endpoint import Endpoint
from cloud.ingest.service import prepare_store
from cloud.ingest.worker import IngestWorker
from cloud.store.migrate import migrate
from cloud.store.mode import StoreMode, prepare
from simulators.services import MosquittoBroker, PostgresCluster
from simulators.services.process import die_with_parent
from tests.cloud.conftest import T0_US, R, count, door_readings, envelope, up_topic

pytestmark = pytest.mark.integration


def settings_for(url: str, broker: MosquittoBroker, client_id: str, **ingest: float) -> CloudSettings:
    return build_settings(
        {
            "database_url": url,
            "mqtt": {"url": broker.url, "client_id": client_id, "receive_maximum": 32},
            "ingest": {"txn_max_latency_ms": 50, "backoff_base_s": 0.1, "backoff_cap_s": 0.5, **ingest},
        }
    )


def wait_until(check: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


class Publisher:
    def __init__(self, broker: MosquittoBroker) -> None:
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"pub-{uuid.uuid4().hex[:6]}", protocol=mqtt.MQTTv5
        )
        self.client.connect(broker.host, broker.port)
        self.client.loop_start()

    def publish(self, topic: str, payload: bytes, *, retain: bool = False) -> None:
        info = self.client.publish(topic, payload, qos=1, retain=retain)
        info.wait_for_publish(10)
        assert info.is_published(), f"the broker did not acknowledge {topic} in 10 s"

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def publisher(make_broker: Callable[..., MosquittoBroker]) -> Iterator[tuple[MosquittoBroker, Publisher]]:
    broker = make_broker()
    pub = Publisher(broker)
    yield broker, pub
    pub.close()


def start_worker(settings: CloudSettings) -> IngestWorker:
    worker = IngestWorker(settings=settings, maintenance=False)
    worker.start()
    wait_until(lambda: all(lane.consumer.subscribed.is_set() for lane in worker.lanes), what="the SUBACKs")
    return worker


def test_ingest_stores_each_batch_once_and_dead_letters_bad_input(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    broker, pub = publisher
    settings = settings_for(migrated_url, broker, "ingest-a")
    worker = start_worker(settings)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        worker.mode = prepare(conn, settings.retention)
    endpoint = Endpoint(host="127.0.0.1", port=0, snapshot=worker.snapshot)
    endpoint.start()
    try:
        payloads = [
            envelope(door_readings(100, start_us=T0_US + s * 10**9), batch_seq=s) for s in range(1, 11)
        ]
        for p in payloads:
            pub.publish(up_topic(), p)
        for p in payloads[:3]:  # resent by the gateway: still stored once
            pub.publish(up_topic(), p)
        pub.publish(up_topic(), b"not an envelope")
        pub.publish(up_topic(), envelope([], batch_seq=1, v=9))
        pub.publish("linli/v1/c1/gw1/status", json.dumps({"v": 1, "state": "online"}).encode())
        wait_until(lambda: worker.counters["messages"] >= 16, what="all messages")
        assert count(migrated_url, "SELECT count(*) FROM readings") == 10 * 100 * 3
        assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 10
        assert count(migrated_url, "SELECT count(*) FROM dead_letters") == 2
        assert (
            count(
                migrated_url,
                "SELECT count(*) FROM dead_letters WHERE reason LIKE 'unknown envelope version%'",
            )
            == 1
        )
        assert count(migrated_url, "SELECT count(*) FROM gateways WHERE state = 'online'") == 1
        assert worker.counters["batches_duplicate"] == 3
        assert worker.counters["acks"] == 16

        health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/healthz").read())
        assert health["mode"] == "apache"
        assert (health["database"], health["broker"], health["healthy"]) == ("up", "up", True)
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics").read().decode()
        assert "linli_cloud_readings_stored_total 1000.0" in metrics
        assert "linli_cloud_dead_letters_total 2.0" in metrics
    finally:
        endpoint.close()
        worker.stop()
    # Everything was acknowledged: the same client id gets nothing back from its session. A
    # message published now is delivered after anything the session still held.
    again = start_worker(settings)
    try:
        pub.publish("linli/v1/c1/gw1/status", json.dumps({"v": 1, "state": "online"}).encode())
        wait_until(lambda: again.counters["messages_received"] >= 1, what="the message published after")
    finally:
        again.stop()
    assert again.counters["messages_received"] == 1


def test_two_workers_share_the_subscription(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    broker, pub = publisher
    workers = [start_worker(settings_for(migrated_url, broker, f"ingest-{i}")) for i in (1, 2)]
    try:
        for seq in range(1, 41):
            gw = f"gw{seq % 4}"
            readings = door_readings(50, start_us=T0_US + seq * 10**9, prefix=gw)
            pub.publish(up_topic("c1", gw), envelope(readings, batch_seq=seq, gateway_id=gw))
        wait_until(lambda: sum(w.counters["messages"] for w in workers) >= 40, what="40 batches")
    finally:
        for w in workers:
            w.stop()
    assert all(w.counters["batches_stored"] > 0 for w in workers), [dict(w.counters) for w in workers]
    assert count(migrated_url, "SELECT count(*) FROM readings") == 40 * 50 * 3
    assert count(migrated_url, "SELECT count(*) FROM devices") == 40


@pytest.mark.slow
def test_database_outage_holds_acks_and_loses_nothing(
    tmp_path: Path, publisher: tuple[MosquittoBroker, Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="linli.cloud")
    broker, pub = publisher
    with PostgresCluster(datadir=tmp_path / "pg", durable=False) as cluster:
        url = cluster.dsn()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        worker = start_worker(settings_for(url, broker, "ingest-outage"))
        try:
            for seq in range(1, 6):
                pub.publish(
                    up_topic(), envelope(door_readings(100, start_us=T0_US + seq * 10**9), batch_seq=seq)
                )
            wait_until(lambda: worker.counters["acks"] == 5, what="first 5 batches acknowledged")
            cluster.stop()
            for seq in range(6, 61):  # more than receive_maximum (32): the broker must hold the rest
                payload = envelope(door_readings(100, start_us=T0_US + seq * 10**9), batch_seq=seq)
                pub.publish(up_topic(), payload)
            wait_until(lambda: worker.db_up is False, what="outage noticed")
            # The broker hands over receive_maximum unacknowledged messages and holds the rest.
            wait_until(lambda: worker.counters["messages_received"] >= 5 + 32, what="32 in flight")
            assert worker.counters["messages_received"] == 5 + 32
            assert worker.queue_depth <= 32
            assert worker.counters["acks"] == 5
            cluster.start()
            wait_until(lambda: worker.counters["batches_stored"] == 60, timeout=60, what="all 60 batches")
            assert worker.db_up is True
        finally:
            worker.stop()
        assert count(url, "SELECT count(*) FROM readings") == 60 * 100 * 3
        assert count(url, "SELECT count(*) FROM ingested_batches") == 60
    downs = [r for r in caplog.records if "database unavailable" in r.message]
    ups = [r for r in caplog.records if "database available again" in r.message]
    assert (len(downs), len(ups)) == (1, 1)


class _LongestWaits(random.Random):
    """Backoff jitter that always draws the longest wait."""

    def uniform(self, a: float, b: float) -> float:
        return max(a, b)


@pytest.mark.slow
def test_a_lane_backing_off_wakes_when_the_other_lane_sees_the_database_back(
    tmp_path: Path, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """The telemetry lane fails and would wait 60 s; the alarm lane's write after the restart
    succeeds, and the telemetry is stored at once instead of a minute later (out of order behind
    newer batches another worker stores meanwhile, as a chaos run showed)."""
    broker, pub = publisher
    with PostgresCluster(datadir=tmp_path / "pg", durable=False) as cluster:
        url = cluster.dsn()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        settings = settings_for(url, broker, "ingest-wake", backoff_base_s=60, backoff_cap_s=60)
        worker = IngestWorker(settings=settings, maintenance=False, rng=_LongestWaits())
        worker.start()
        wait_until(lambda: all(lane.consumer.subscribed.is_set() for lane in worker.lanes), what="SUBACKs")
        try:
            cluster.stop()
            pub.publish(up_topic(), envelope(door_readings(10), batch_seq=1))
            wait_until(lambda: worker.counters["db_errors"] >= 1, what="the telemetry lane failing")
            cluster.start()
            press = R("sos-1", T0_US, {"battery_pct": 80}, ["sos_pressed"], device_type="sos_button")
            sos = envelope(
                [press],
                batch_seq=2,
                batch_class="alarm",
            )
            pub.publish(up_topic().replace("/up", "/alarm"), sos)
            wait_until(
                lambda: worker.counters["batches_stored"] == 2,
                timeout=20,  # a third of the 60 s the telemetry lane would otherwise sleep
                what="the telemetry stored as soon as the alarm lane saw the database back",
            )
            assert worker.counters["db_errors"] == 1
        finally:
            worker.stop()


def test_healthz_reports_a_down_database(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    broker, _ = publisher
    worker = IngestWorker(settings=settings_for(migrated_url, broker, "ingest-h"), maintenance=False)
    worker.db_up = False
    endpoint = Endpoint(host="127.0.0.1", port=0, snapshot=worker.snapshot)
    endpoint.start()
    try:
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/healthz")
        assert info.value.code == 503
        assert json.loads(info.value.read())["database"] == "down"
    finally:
        endpoint.close()


def test_data_the_database_refuses_is_dead_lettered_and_the_rest_stored(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """What envelope validation cannot foresee (here a constraint of the operator's and a status
    document jsonb refuses) costs only the message at fault, never the worker or its group."""
    broker, pub = publisher
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("ALTER TABLE readings ADD CONSTRAINT sane_value CHECK (value < 1e9)")
    worker = start_worker(settings_for(migrated_url, broker, "ingest-refused", txn_max_latency_ms=300))
    bad = envelope([R("dev-bad", T0_US, {"battery_pct": 1e12})], batch_seq=3)
    try:
        for seq in range(1, 7):
            payload = (
                bad if seq == 3 else envelope(door_readings(20, start_us=T0_US + seq * 10**9), batch_seq=seq)
            )
            pub.publish(up_topic(), payload)
        pub.publish("linli/v1/c1/gw1/status", b'{"state": "online", "note": "\\u0000"}')
        wait_until(lambda: worker.counters["messages"] >= 7, what="all messages")
        assert worker.counters["acks"] == 7
        assert worker.counters["db_rejected"] == 2
    finally:
        worker.stop()
    assert count(migrated_url, "SELECT count(*) FROM readings") == 5 * 20 * 3
    assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 5
    with psycopg.connect(migrated_url) as conn:
        rows = conn.execute("SELECT topic, payload, reason FROM dead_letters ORDER BY topic DESC").fetchall()
    assert [(t, bytes(p)) for t, p, _ in rows] == [
        (up_topic(), bad),
        ("linli/v1/c1/gw1/status", b'{"state": "online", "note": "\\u0000"}'),
    ]
    assert all(reason.startswith("rejected by the database") for _, _, reason in rows)
    assert "sane_value" in rows[0][2]


def _ingest_process(config: Path, log: IO[bytes]) -> subprocess.Popen[bytes]:
    # killed with the test run, however it ends (the test kills and restarts it on purpose)
    return subprocess.Popen(
        die_with_parent([sys.executable, "-m", "cloud", "cloud", "ingest", "--config", str(config)]),
        stdout=log,
        stderr=log,
    )


@pytest.mark.slow
def test_a_worker_killed_mid_stream_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """SIGKILL between commit and PUBACK and everywhere else: the broker redelivers what was not
    acknowledged to the restarted worker (same client id), which finds committed batches
    claimed. Small transactions make the kill land among many commits."""
    broker, pub = publisher
    config = tmp_path / "cloud.toml"
    config.write_text(
        f'database_url = "{migrated_url}"\nlog_level = "INFO"\n'
        f'[mqtt]\nurl = "{broker.url}"\nclient_id = "ingest-killed"\nreceive_maximum = 16\n'
        '[ingest]\nmax_readings_per_txn = 200\ntxn_max_latency_ms = 5\n[http]\naddress = ""\n'
    )
    log = (tmp_path / "ingest.log").open("ab")
    proc = _ingest_process(config, log)
    try:
        wait_until(lambda: count(migrated_url, "SELECT count(*) FROM schema_migrations") >= 1, what="start")
        wait_until(
            lambda: (
                "subscribed to $share/linli-ingest/linli/v1/+/+/up" in (tmp_path / "ingest.log").read_text()
            ),
            what="the SUBACK",
        )
        batches = 120
        for seq in range(1, batches + 1):
            pub.client.publish(
                up_topic(),
                envelope(door_readings(100, start_us=T0_US + seq * 10**9), batch_seq=seq),
                qos=1,
            )
        wait_until(
            lambda: count(migrated_url, "SELECT count(*) FROM ingested_batches") >= 20, what="some batches"
        )
        proc.kill()
        proc.wait(10)
        stored_at_kill = count(migrated_url, "SELECT count(*) FROM ingested_batches")
        assert stored_at_kill < batches, "the kill came too late to test anything"
        proc = _ingest_process(config, log)
        wait_until(
            lambda: count(migrated_url, "SELECT count(*) FROM ingested_batches") == batches,
            timeout=60,
            what="every batch after the restart",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
        log.close()
    assert proc.returncode == 0, (tmp_path / "ingest.log").read_text()
    assert count(migrated_url, "SELECT count(*) FROM readings") == batches * 100 * 3
    assert (
        count(
            migrated_url,
            "SELECT count(*) FROM (SELECT device_id, time, metric FROM readings"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        )
        == 0
    )
    assert count(migrated_url, "SELECT count(*) FROM dead_letters") == 0


@pytest.mark.slow
def test_three_workers_on_one_shared_subscription_with_one_killed_store_everything_once(
    tmp_path: Path, migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """docs/scaling.md: N workers share ``$share/linli-ingest/...``. One of three is SIGKILLed
    mid-stream and stays down for a while: the broker keeps what it held unacknowledged in its
    session and hands it over when it returns; the other two carry the rest meanwhile. Every batch
    is stored once."""
    broker, pub = publisher
    logs: list[IO[bytes]] = []
    procs: list[subprocess.Popen[bytes]] = []
    for i in range(3):
        config = tmp_path / f"cloud-{i}.toml"
        config.write_text(
            f'database_url = "{migrated_url}"\nlog_level = "INFO"\n'
            f'[mqtt]\nurl = "{broker.url}"\nclient_id = "ingest-three-{i}"\nreceive_maximum = 16\n'
            '[ingest]\nmax_readings_per_txn = 300\ntxn_max_latency_ms = 5\n[http]\naddress = ""\n'
        )
        logs.append((tmp_path / f"ingest-{i}.log").open("ab"))
        procs.append(_ingest_process(config, logs[i]))
    try:
        for i in range(3):
            wait_until(
                lambda i=i: (
                    "subscribed to $share/linli-ingest/linli/v1/+/+/up"  # type: ignore[misc]
                    in (tmp_path / f"ingest-{i}.log").read_text()
                ),
                what=f"worker {i}'s subscription",
            )
        batches = 240

        def publish(seqs: range) -> None:
            for seq in seqs:
                gateway = f"gw{seq % 4}"
                pub.client.publish(
                    up_topic("c1", gateway),
                    envelope(
                        door_readings(100, start_us=T0_US + seq * 10**9, prefix=gateway),
                        batch_seq=seq,
                        gateway_id=gateway,
                    ),
                    qos=1,
                )

        # Mosquitto assigns a shared subscription's message to a member when it is published. Had
        # every batch been published before the kill, the two others could have finished theirs
        # by then, leaving only the dead one's (a flake under load): half is published after it.
        publish(range(1, batches // 2 + 1))
        wait_until(
            lambda: count(migrated_url, "SELECT count(*) FROM ingested_batches") >= 30, what="some batches"
        )
        procs[1].kill()
        procs[1].wait(10)
        killed_at = count(migrated_url, "SELECT count(*) FROM ingested_batches")
        assert killed_at < batches, "the kill came too late to test anything"
        publish(range(batches // 2 + 1, batches + 1))
        # The two others go on; what the broker held for the dead one waits for its return.
        wait_until(
            lambda: count(migrated_url, "SELECT count(*) FROM ingested_batches") > killed_at + 20,
            what="the other two workers storing on",
        )
        procs[1] = _ingest_process(tmp_path / "cloud-1.toml", logs[1])
        wait_until(
            lambda: count(migrated_url, "SELECT count(*) FROM ingested_batches") == batches,
            timeout=60,
            what="every batch once the killed worker is back",
        )
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(30)
        for log in logs:
            log.close()
    assert [p.returncode for p in procs] == [0, 0, 0]
    assert count(migrated_url, "SELECT count(*) FROM readings") == batches * 100 * 3
    assert (
        count(
            migrated_url,
            "SELECT count(*) FROM (SELECT device_id, time, metric FROM readings"
            " GROUP BY 1, 2, 3 HAVING count(*) > 1) d",
        )
        == 0
    )
    stored_by = count(migrated_url, "SELECT count(DISTINCT gateway_id) FROM ingested_batches")
    assert stored_by == 4


@pytest.mark.slow
def test_plain_postgresql_without_timescaledb_works_with_a_warning(
    tmp_path: Path, publisher: tuple[MosquittoBroker, Publisher], caplog: pytest.LogCaptureFixture
) -> None:
    """A server where the extension cannot be loaded: the service migrates, says so once as a
    WARNING, shows the mode in /healthz, and stores."""
    caplog.set_level(logging.INFO, logger="linli.cloud")
    broker, pub = publisher
    with PostgresCluster(datadir=tmp_path / "pg", durable=False, preload_timescaledb=False) as cluster:
        settings = settings_for(cluster.dsn(), broker, "ingest-plain")
        mode = prepare_store(settings)
        assert mode.mode is StoreMode.POSTGRES
        worker = start_worker(settings)
        worker.mode = mode
        endpoint = Endpoint(host="127.0.0.1", port=0, snapshot=worker.snapshot)
        endpoint.start()
        try:
            for seq in (1, 2, 3):
                pub.publish(
                    up_topic(), envelope(door_readings(10, start_us=T0_US + seq * 10**9), batch_seq=seq)
                )
            wait_until(lambda: worker.counters["batches_stored"] == 3, what="3 batches")
            health = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/healthz").read())
        finally:
            endpoint.close()
            worker.stop()
        assert (health["mode"], health["healthy"]) == ("postgres", True)
        assert "no timescaledb" in health["mode_detail"]
        assert count(cluster.dsn(), "SELECT count(*) FROM readings") == 3 * 10 * 3
        assert count(cluster.dsn(), "SELECT count(*) FROM pg_extension WHERE extname = 'timescaledb'") == 0
    warnings = [
        r for r in caplog.records if r.levelname == "WARNING" and "storage mode: postgres" in r.message
    ]
    assert len(warnings) == 1


def _ingested_at(url: str) -> dict[int, datetime]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT batch_seq, ingested_at FROM ingested_batches").fetchall()
    return {int(seq): at for seq, at in rows}


def test_an_alarm_batch_commits_at_once_then_the_telemetry_gathered_before_it(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """With a linger of a minute, telemetry waits in the open group; the alarm batch that joins it
    closes it at once and commits first, in a transaction of its own, then the telemetry; both
    are acknowledged after both commits."""
    broker, pub = publisher
    worker = start_worker(settings_for(migrated_url, broker, "ingest-alarm", txn_max_latency_ms=60_000))
    sos = envelope(
        [R("sos-1", T0_US + 5 * 10**9, {"battery_pct": 80}, ["sos_pressed"], device_type="sos_button")],
        batch_seq=2,
        batch_class="alarm",
    )
    try:
        pub.publish(up_topic(), envelope(door_readings(20), batch_seq=1))
        wait_until(lambda: worker.gathering == 1, what="the telemetry batch in the open transaction")
        assert worker.counters["transactions"] == 0
        assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 0

        pub.publish(up_topic(), sos)
        wait_until(
            lambda: count(migrated_url, "SELECT count(*) FROM ingested_batches") == 2,
            timeout=10,
            what="the alarm batch stored well before the linger ends",
        )
        wait_until(lambda: worker.counters["acks"] == 2, timeout=10, what="both acknowledged")
        assert (worker.counters["transactions"], worker.counters["alarm_transactions"]) == (2, 1)
        at = _ingested_at(migrated_url)
        assert at[2] < at[1]  # the alarm's transaction first: now() is a transaction's start
        with psycopg.connect(migrated_url) as conn:
            feed = conn.execute("SELECT readings FROM alert_feed ORDER BY feed_seq").fetchall()
        assert [r[0] for r in feed] == [1, 20]  # the alert service reads the alarm first, alone
        assert count(migrated_url, "SELECT count(*) FROM readings") == 20 * 3 + 1
        assert count(migrated_url, "SELECT count(*) FROM events WHERE event = 'sos_pressed'") == 1

        # Resent by the gateway: committed at once again, and stored once.
        pub.publish(up_topic(), sos)
        wait_until(lambda: worker.counters["acks"] == 3, timeout=10, what="the resent alarm acknowledged")
        assert worker.counters["batches_duplicate"] == 1
        assert worker.counters["alarm_transactions"] == 2
        assert count(migrated_url, "SELECT count(*) FROM events WHERE event = 'sos_pressed'") == 1
    finally:
        worker.stop()


def test_an_alarm_on_its_own_topic_commits_while_telemetry_lingers(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """Alarm batches on ``.../alarm`` (what the edge sends) come on a connection and a writer of
    their own: stored and acknowledged while the telemetry transaction stays open."""
    broker, pub = publisher
    worker = start_worker(settings_for(migrated_url, broker, "ingest-lanes", txn_max_latency_ms=60_000))
    sos = envelope(
        [R("sos-1", T0_US + 5 * 10**9, {"battery_pct": 80}, ["sos_pressed"], device_type="sos_button")],
        batch_seq=2,
        batch_class="alarm",
    )
    try:
        pub.publish(up_topic(), envelope(door_readings(20), batch_seq=1))
        wait_until(lambda: worker.lane.gathering == 1, what="the telemetry batch in the open transaction")
        pub.publish(up_topic().replace("/up", "/alarm"), sos)
        wait_until(lambda: worker.counters["acks"] == 1, timeout=10, what="the alarm acknowledged")
        assert count(migrated_url, "SELECT count(*) FROM events WHERE event = 'sos_pressed'") == 1
        assert worker.lane.gathering == 1  # the telemetry transaction is still open
        assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 1
        assert worker.counters["alarm_transactions"] == 1
    finally:
        worker.stop()
    assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 2  # committed at stop


def test_telemetry_keeps_lingering_until_the_size_limit(
    migrated_url: str, publisher: tuple[MosquittoBroker, Publisher]
) -> None:
    """Without an alarm, a transaction closes at the size limit (or the linger, here a minute)."""
    broker, pub = publisher
    settings = settings_for(
        migrated_url, broker, "ingest-linger", txn_max_latency_ms=60_000, max_readings_per_txn=30
    )
    worker = start_worker(settings)
    try:
        for seq in (1, 2):
            pub.publish(up_topic(), envelope(door_readings(10, start_us=T0_US + seq * 10**9), batch_seq=seq))
        pub.publish("linli/v1/c1/gw1/status", json.dumps({"v": 1, "state": "online"}).encode())
        wait_until(lambda: worker.gathering == 3, what="3 messages in the open transaction")
        assert worker.counters["messages_received"] == 3
        assert worker.counters["transactions"] == 0
        assert worker.counters["acks"] == 0
        assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 0

        pub.publish(up_topic(), envelope(door_readings(10, start_us=T0_US + 3 * 10**9), batch_seq=3))
        wait_until(lambda: worker.counters["acks"] == 4, timeout=10, what="the size limit reached")
        assert (worker.counters["transactions"], worker.counters["alarm_transactions"]) == (1, 0)
        assert count(migrated_url, "SELECT count(*) FROM readings") == 3 * 10 * 3
        assert count(migrated_url, "SELECT count(*) FROM gateways") == 1
    finally:
        worker.stop()

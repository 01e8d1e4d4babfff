"""The ingest's memory while the database is down: bounded by Receive Maximum and the decode-ahead
cap, not by how big the waiting batches are, and given back once the backlog is written.

The worker runs as the service does (``linli cloud ingest``), so its resident size is its own.
Before the cap, 256 unacknowledged batches of 500 readings held about 100 MB decoded per lane.
"""

from __future__ import annotations

import signal
import urllib.request
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from cloud.store.migrate import migrate
from edge.bench import memory_kb
from simulators.services import MosquittoBroker, PostgresCluster
from simulators.services.net import free_port
from tests.cloud.conftest import T0_US, count, door_readings, envelope, up_topic
from tests.cloud.ingest.test_ingest import Publisher, _ingest_process, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

RECEIVE_MAXIMUM = 256
TXN_READINGS = 5_000
DECODE_AHEAD = 5_000
BATCH = 500
#: Decoded bytes per reading of these batches, measured (about 685) with room to spare.
DECODED_PER_READING = 1_000


def _metrics(port: int) -> dict[str, float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {
        name.removeprefix("linli_cloud_").removesuffix("_total"): float(value)
        for name, value in (line.split() for line in text.splitlines() if line and not line.startswith("#"))
    }


def _rss(pid: int) -> int:
    return memory_kb(pid)["VmRSS"] * 1024


def test_memory_held_during_a_database_outage_stays_within_its_stated_bound(
    tmp_path: Path, make_broker: Callable[..., MosquittoBroker]
) -> None:
    broker = make_broker()
    pub = Publisher(broker)
    port = free_port()
    payloads = [
        envelope(door_readings(BATCH, devices=BATCH, start_us=T0_US + seq * 10**9), batch_seq=seq)
        for seq in range(1, 2 * RECEIVE_MAXIMUM + 11)
    ]
    payload_bytes = max(len(p) for p in payloads)
    with PostgresCluster(datadir=tmp_path / "pg", durable=False) as cluster:
        url = cluster.dsn()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        config = tmp_path / "cloud.toml"
        config.write_text(
            f'database_url = "{url}"\nlog_level = "INFO"\n'
            f'[mqtt]\nurl = "{broker.url}"\nclient_id = "ingest-mem"\nreceive_maximum = {RECEIVE_MAXIMUM}\n'
            f"[ingest]\nmax_readings_per_txn = {TXN_READINGS}\ndecode_ahead_readings = {DECODE_AHEAD}\n"
            "txn_max_latency_ms = 20\nbackoff_base_s = 0.1\nbackoff_cap_s = 0.5\n"
            f'[retention]\ninterval_s = 3600\n[http]\naddress = "127.0.0.1:{port}"\n'
        )
        log = (tmp_path / "ingest.log").open("ab")
        proc = _ingest_process(config, log)
        try:
            wait_until(
                lambda: (
                    "subscribed to $share/linli-ingest/linli/v1/+/+/up"
                    in (tmp_path / "ingest.log").read_text()
                ),
                what="the SUBACK",
            )
            # Warm up on the same kind of batches, so the baseline holds the code paths' own memory.
            for payload in payloads[:10]:
                pub.publish(up_topic(), payload)
            wait_until(lambda: _metrics(port).get("batches_stored") == 10, what="10 batches stored")
            baseline = _rss(proc.pid)

            cluster.stop()
            for payload in payloads[10:]:  # twice Receive Maximum: the broker holds the rest
                pub.client.publish(up_topic(), payload, qos=1)
            wait_until(
                lambda: _metrics(port).get("messages_received", 0) >= 10 + RECEIVE_MAXIMUM,
                what="Receive Maximum messages in flight",
            )
            held = _metrics(port)
            assert held["database_up"] == 0
            assert held["messages_received"] == 10 + RECEIVE_MAXIMUM  # the broker keeps the rest
            assert held["held_payload_bytes"] <= RECEIVE_MAXIMUM * payload_bytes
            decoded_cap = TXN_READINGS + DECODE_AHEAD + 2 * BATCH
            assert 0 < held["decoded_readings"] <= decoded_cap
            bound = RECEIVE_MAXIMUM * payload_bytes + decoded_cap * DECODED_PER_READING
            grown = _rss(proc.pid) - baseline
            # Uncapped, these batches held RECEIVE_MAXIMUM * BATCH decoded readings: about 100 MB.
            assert 3 * bound < RECEIVE_MAXIMUM * BATCH * DECODED_PER_READING
            assert grown <= bound, f"grew {grown / 2**20:.0f} MB during the outage, bound {bound / 2**20:.0f}"

            cluster.start()
            total = len(payloads)
            wait_until(
                lambda: count(url, "SELECT count(*) FROM ingested_batches") == total,
                timeout=120,
                what="every batch after the outage",
            )
            wait_until(lambda: _metrics(port).get("held_payload_bytes") == 0, what="everything acknowledged")
            after = _rss(proc.pid) - baseline
            assert after <= bound / 2, f"still {after / 2**20:.0f} MB above the baseline after the backlog"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(30)
            log.close()
            pub.close()
        assert proc.returncode == 0
        assert count(url, "SELECT count(*) FROM readings") == len(payloads) * BATCH * 3

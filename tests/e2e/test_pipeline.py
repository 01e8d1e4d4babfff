"""The whole chain, exactly once: simulators -> field broker -> edge agent -> cloud broker (locked
down: mutual TLS, an ACL per gateway) -> ingest -> TimescaleDB, with malformed, duplicate and
reordered messages, the edge agent and the ingest worker each SIGKILLed once along the way, and
`linli sim verify` requiring an exact match.

Every process is the real command run as a subprocess; the brokers and the database are the
private ones of tests/conftest.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
import pytest

from device_profiles import ProfileSet
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.demo.pki import demo_pki
from simulators.fleet import load_fleet
from simulators.rand import RandomStream
from simulators.services import MosquittoBroker
from simulators.verify import expected_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEET = """\
communities:
  - id: e2e
    lat: 31.2154
    lon: 121.4371
    gateways: 1
    devices: {door_contact: 200, sos_button: 100, manhole_cover: 50, streetlight: 150}
"""
MESSAGES = 60_000  # ~2% malformed, ~2% duplicate copies, some identical payloads: > 50,000 readings
SPEED = "4800"  # ~53 simulated hours in ~40 s
DEADLINE_S = 150


def _linli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_profiles.console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _rows(database_url: str) -> int:
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM readings").fetchone()
    assert row is not None
    return int(row[0])


def _wait(cond: Callable[[], bool], timeout: float, what: str, *children: Child) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for child in children:
            assert child.running, f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_whole_chain_exactly_once(
    tmp_path: Path, make_broker: Callable[..., MosquittoBroker], database_url: str
) -> None:
    (tmp_path / "fleet.yaml").write_text(FLEET)
    inventory = load_fleet(
        str(tmp_path / "fleet.yaml"), rs=RandomStream(np.random.default_rng(3)), profiles=ProfileSet.shipped()
    )
    inv = tmp_path / "inventory.json"
    inventory.dump(inv)
    gateway = inventory.devices[0].gateway_id
    assert {d.gateway_id for d in inventory.devices} == {gateway}
    # The cloud broker as linli ships it: mutual TLS, the certificate's name as the user, an ACL.
    pki = demo_pki(tmp_path / "pki", community_id="e2e", gateway_ids=[gateway])
    field = make_broker()
    cloud = make_broker(tls=pki.broker, require_client_cert=True, extra_config=[f"acl_file {pki.acl}"])

    migrated = _linli("db", "migrate", "--database", database_url)
    assert migrated.returncode == 0, migrated.stderr
    ingest = Child.python(
        name="ingest",
        module="cloud",
        args=[
            "cloud",
            "ingest",
            "--config",
            str(
                write_cloud_config(
                    tmp_path / "cloud.toml",
                    database_url=database_url,
                    mqtt_url=cloud.url,
                    client_id="e2e-ingest",
                    overrides={"mqtt": {"tls": pki.client("services", "linli-ingest")}},
                )
            ),
        ],
        log=tmp_path / "ingest.log",
    )
    edge = Child.python(
        name="edge",
        module="edge",
        args=[
            "run",
            "--config",
            str(
                write_edge_config(
                    tmp_path / "edge.toml",
                    gateway_id=gateway,
                    community_id="e2e",
                    inventory=inv,
                    field_url=field.url,
                    cloud_url=cloud.url,
                    buffer=tmp_path / "buffer.db",
                    overrides={"cloud": {"tls": pki.client("gateways", gateway)}},
                )
            ),
        ],
        log=tmp_path / "edge.log",
    )
    truth = tmp_path / "truth.jsonl"
    sim = Child.python(
        name="sim",
        module="device_profiles.console",
        args=[
            "sim",
            "--fleet",
            str(inv),
            "--seed",
            "3",
            "--start",
            "2025-06-01T00:00:00Z",
            "--speed",
            SPEED,
            "--count",
            str(MESSAGES),
            "--broker",
            field.url,
            "--qos",
            "1",
            "--malformed",
            "0.02",
            "--duplicate",
            "0.02",
            "--reordered",
            "0.02",
            "--scenario",
            "sos-press",
            "--scenario",
            "manhole-lifted",
            "--truth",
            str(truth),
            "--quiet",
        ],
        log=tmp_path / "sim.log",
    )
    children = (ingest, edge, sim)
    started = time.monotonic()
    try:
        ingest.start()
        edge.start()
        _wait(
            lambda: "subscribed to $share/linli-ingest/linli/v1/+/+/up" in ingest.log_tail(100_000),
            30,
            "the ingest to subscribe",
            ingest,
        )
        _wait(lambda: "subscribed" in edge.log_tail(100_000), 30, "the edge agent to subscribe", edge)
        sim.start()

        # SIGKILL the edge agent about a quarter of the way (~360,000 rows in all), the ingest
        # worker about half way: the rest is still in the brokers, the buffer or not yet sent.
        _wait(lambda: _rows(database_url) >= 90_000, 90, "90,000 rows", ingest, edge, sim)
        assert sim.running, "the stream ended before the edge agent was killed"
        edge.kill()
        edge.start()
        _wait(lambda: _rows(database_url) >= 180_000, 90, "180,000 rows", ingest, edge)
        ingest.kill()
        at_ingest_kill = _rows(database_url)
        ingest.start()

        assert sim.wait(timeout=DEADLINE_S) == 0, sim.log_tail()
        # Drain: every row the complete ground truth expects is stored. (More would be a
        # duplicate: the clean stops below deliver everything in flight, and verify finds it.)
        expected = expected_rows(truth)
        assert at_ingest_kill < expected, "the ingest worker was killed after it had stored everything"
        left_s = max(1.0, DEADLINE_S - (time.monotonic() - started))
        _wait(lambda: _rows(database_url) >= expected, left_s, f"{expected} rows", ingest, edge)
        # A clean stop publishes the edge's final status (with its quarantine counter).
        assert edge.stop(timeout=30) == 0, edge.log_tail()

        def final_status() -> bool:
            # The clean stop's status carries counters; the Last Will left by the SIGKILL does not.
            with psycopg.connect(database_url, autocommit=True) as conn:
                row = conn.execute(
                    "SELECT state, status ? 'counters' FROM gateways WHERE gateway_id = %s", (gateway,)
                ).fetchone()
            return row is not None and row[0] == "offline" and bool(row[1])

        _wait(final_status, 20, "the edge's final status", ingest)
        assert ingest.stop(timeout=30) == 0, ingest.log_tail()
    finally:
        for child in children:
            child.stop(timeout=10)

    verified = _linli("sim", "verify", "--truth", str(truth), "--database", database_url, timeout=120)
    report = json.loads(verified.stdout)
    print(verified.stdout)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert report["match"] is True
    assert report["expected"] >= 50_000
    assert report["stored"] == report["expected"]
    assert report["malformed"] > 0
    assert report["duplicates_sent"] > 0
    assert report["quarantined"] >= report["expected_quarantined"] > 0

"""Alert rules proved by ground truth through the whole chain: simulators -> field broker -> edge
agent -> cloud broker -> ingest -> TimescaleDB -> alert service -> incidents, every process the
real command, then `linli sim verify --alerts` comparing the incidents with the truth.

1. Every shipped scenario at once, with duplicates, reordered and malformed messages, and the
   alert service SIGKILLed three times along the way: every condition detected, no false
   positive, no duplicate incident.
2. A fleet of 1,000 devices for 7 simulated days of ordinary life (no scenario, no fault): every
   incident is backed by a condition the behaviour itself produced (rare SOS presses, gas, drained
   batteries), and every such condition is found.

The alert service runs on the data clock (``[alerts] clock = "data"``): simulated time passes
thousands of times faster than the wall clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from device_profiles import ProfileSet
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.fleet import load_fleet
from simulators.rand import RandomStream
from simulators.services import MosquittoBroker
from simulators.verify import expected_rows

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = (
    "sos-press",
    "elderly-inactive",
    "manhole-lifted",
    "lamp-failure",
    "flaky-devices",
    "gateway-storm",
)


def _linli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_profiles.console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def _scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def _wait(cond: Callable[[], bool], timeout: float, what: str, *children: Child) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for child in children:
            assert child.running, f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Chain:
    """The processes of one community's chain under `tmp`, on the brokers and database given."""

    def __init__(
        self, tmp: Path, *, fleet: str, field: MosquittoBroker, cloud: MosquittoBroker, database_url: str
    ) -> None:
        self.tmp = tmp
        self.url = database_url
        (tmp / "fleet.yaml").write_text(fleet)
        inventory = load_fleet(
            str(tmp / "fleet.yaml"), rs=RandomStream(np.random.default_rng(5)), profiles=ProfileSet.shipped()
        )
        self.inventory = tmp / "inventory.json"
        inventory.dump(self.inventory)
        gateways = sorted({d.gateway_id for d in inventory.devices})
        assert len(gateways) == 1
        self.gateway = gateways[0]
        community = inventory.devices[0].community_id
        migrated = _linli("db", "migrate", "--database", database_url)
        assert migrated.returncode == 0, migrated.stderr
        cloud_toml = write_cloud_config(
            tmp / "cloud.toml",
            database_url=database_url,
            mqtt_url=cloud.url,
            client_id="e2e-ingest",
            overrides={"alerts": {"inventory": str(self.inventory), "clock": "data", "tick_interval_s": 0.5}},
        )
        self.ingest = Child.python(
            name="ingest",
            module="cloud",
            args=["cloud", "ingest", "--config", str(cloud_toml)],
            log=tmp / "ingest.log",
        )
        self.alerts = Child.python(
            name="alerts",
            module="cloud",
            args=["cloud", "alerts", "--config", str(cloud_toml)],
            log=tmp / "alerts.log",
        )
        edge_toml = write_edge_config(
            tmp / "edge.toml",
            gateway_id=self.gateway,
            community_id=community,
            inventory=self.inventory,
            field_url=field.url,
            cloud_url=cloud.url,
            buffer=tmp / "buffer.db",
        )
        self.edge = Child.python(
            name="edge", module="edge", args=["run", "--config", str(edge_toml)], log=tmp / "edge.log"
        )
        self.field = field
        self.truth = tmp / "truth.jsonl"

    def sim(self, *args: str) -> Child:
        return Child.python(
            name="sim",
            module="device_profiles.console",
            args=[
                "sim",
                "--fleet",
                str(self.inventory),
                "--start",
                "2025-06-01T00:00:00Z",
                "--broker",
                self.field.url,
                "--qos",
                "1",
                "--truth",
                str(self.truth),
                "--quiet",
                *args,
            ],
            log=self.tmp / "sim.log",
        )

    def start(self) -> None:
        self.ingest.start()
        self.alerts.start()
        self.edge.start()
        _wait(lambda: "subscribed to" in self.ingest.log_tail(100_000), 30, "the ingest", self.ingest)
        _wait(lambda: "subscribed" in self.edge.log_tail(100_000), 30, "the edge agent", self.edge)

    def rows(self) -> int:
        return int(_scalar(self.url, "SELECT count(*) FROM readings"))

    def settled(self) -> bool:
        """Everything stored, and the alert service has read the whole feed."""
        horizon = _scalar(self.url, "SELECT coalesce(max(feed_seq), 0) FROM alert_feed")
        checkpoint = _scalar(self.url, "SELECT coalesce(max(feed_seq), 0) FROM alert_checkpoints")
        return bool(self.rows() >= expected_rows(self.truth) and checkpoint >= horizon)

    def verify(self) -> dict[str, Any]:
        done = _linli("sim", "verify", "--alerts", "--truth", str(self.truth), "--database", self.url)
        assert done.stdout, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def stop(self) -> None:
        for child in (self.edge, self.alerts, self.ingest):
            child.stop(timeout=30)

    def children(self) -> Sequence[Child]:
        return (self.ingest, self.alerts, self.edge)


def _summary(report: dict[str, Any]) -> str:
    keys = ("conditions", "detected", "missed", "false_positives", "duplicates", "incidents", "examples")
    return json.dumps({k: report.get(k) for k in keys}, indent=1)


def test_every_scenario_with_faults_and_alert_service_kills(
    tmp_path: Path, make_broker: Callable[..., MosquittoBroker], database_url: str
) -> None:
    fleet = """\
communities:
  - id: alerts-e2e
    lat: 31.2154
    lon: 121.4371
    gateways: 1
    devices: {door_contact: 60, sos_button: 20, manhole_cover: 20, streetlight: 30}
"""
    chain = Chain(tmp_path, fleet=fleet, field=make_broker(), cloud=make_broker(), database_url=database_url)
    scenarios = [a for name in SCENARIOS for a in ("--scenario", name)]
    sim = chain.sim(
        "--seed", "11", "--speed", "5400", "--duration", "40h",
        "--malformed", "0.02", "--duplicate", "0.03", "--reordered", "0.03",
        *scenarios,
    )  # fmt: skip
    try:
        chain.start()
        sim.start()
        # Three SIGKILLs of the alert service while incidents are being written.
        for at_least in (1, 3, 6):

            def enough(n: int = at_least) -> bool:
                return int(_scalar(chain.url, "SELECT count(*) FROM incidents")) >= n

            _wait(enough, 90, f"{at_least} incidents", *chain.children())
            chain.alerts.kill()
            chain.alerts.start()
        assert sim.wait(timeout=120) == 0, sim.log_tail()
        _wait(chain.settled, 120, "the chain to settle", *chain.children())
        report = chain.verify()
    finally:
        sim.stop(timeout=10)
        chain.stop()
    assert report["match"], _summary(report)
    assert report["conditions"] >= 8, _summary(report)
    kinds = {r["condition"] for r in report["results"]}
    assert {
        "sos_pressed",
        "resident_inactive",
        "manhole_open",
        "lamp_failure",
        "lamp_on_daytime",
        "device_silent",
    } <= kinds


def test_a_week_of_ordinary_life_has_no_false_positive(
    tmp_path: Path, make_broker: Callable[..., MosquittoBroker], database_url: str
) -> None:
    fleet = """\
communities:
  - id: week
    lat: 31.2154
    lon: 121.4371
    gateways: 1
    devices: {door_contact: 400, sos_button: 200, manhole_cover: 100, streetlight: 300}
"""
    chain = Chain(tmp_path, fleet=fleet, field=make_broker(), cloud=make_broker(), database_url=database_url)
    sim = chain.sim("--seed", "7", "--speed", "max", "--duration", "7d")
    try:
        chain.start()
        sim.start()
        assert sim.wait(timeout=600) == 0, sim.log_tail()
        _wait(chain.settled, 300, "the chain to settle", *chain.children())
        report = chain.verify()
    finally:
        sim.stop(timeout=10)
        chain.stop()
    assert report["match"], _summary(report)

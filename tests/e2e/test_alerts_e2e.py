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
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from simulators.services import MosquittoBroker
from tests.e2e.chain import Chain, scalar, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

SCENARIOS = (
    "sos-press",
    "elderly-inactive",
    "manhole-lifted",
    "lamp-failure",
    "flaky-devices",
    "gateway-storm",
)


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
    chain = Chain(tmp_path, fleet=fleet, make_broker=make_broker, database_url=database_url)
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
                return int(scalar(chain.url, "SELECT count(*) FROM incidents")) >= n

            wait_for(enough, 90, f"{at_least} incidents", *chain.children())
            chain.alerts.kill()
            chain.alerts.start()
        assert sim.wait(timeout=120) == 0, sim.log_tail()
        wait_for(chain.settled, 120, "the chain to settle", *chain.children())
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
    chain = Chain(tmp_path, fleet=fleet, make_broker=make_broker, database_url=database_url)
    sim = chain.sim("--seed", "7", "--speed", "max", "--duration", "7d")
    try:
        chain.start()
        sim.start()
        assert sim.wait(timeout=600) == 0, sim.log_tail()
        wait_for(chain.settled, 300, "the chain to settle", *chain.children())
        report = chain.verify()
    finally:
        sim.stop(timeout=10)
        chain.stop()
    assert report["match"], _summary(report)

"""One community's chain as its real commands: edge agent, ingest and alert service on the brokers
and database given, and the simulator feeding the field broker."""

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

from device_profiles import ProfileSet
from simulators.demo.children import Child
from simulators.demo.configs import write_cloud_config, write_edge_config
from simulators.demo.pki import demo_pki
from simulators.fleet import load_fleet
from simulators.rand import RandomStream
from simulators.services import MosquittoBroker
from simulators.verify import expected_rows


def linli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device_profiles.console", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query).fetchone()
    return None if row is None else row[0]


def wait_for(cond: Callable[[], bool], timeout: float, what: str, *children: Child) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        for child in children:
            assert child.running, f"{child.name} exited ({child.returncode()}):\n{child.log_tail()}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


class Chain:
    """The processes of one community's chain under `tmp`, on the database given, with a field
    broker and a cloud broker locked down as linli ships it (mutual TLS with certificates of a CA
    of the chain's own, an ACL per gateway: `simulators.demo.pki`)."""

    def __init__(
        self,
        tmp: Path,
        *,
        fleet: str,
        make_broker: Callable[..., MosquittoBroker],
        database_url: str,
        alerts: dict[str, Any] | None = None,
    ) -> None:
        """`alerts`: ``[alerts]`` keys over the defaults here (the data clock, a tick every 0.5 s)."""
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
        pki = demo_pki(tmp / "pki", community_id=community, gateway_ids=gateways)
        field = make_broker()
        cloud = make_broker(tls=pki.broker, require_client_cert=True, extra_config=[f"acl_file {pki.acl}"])
        self.cloud = cloud
        migrated = linli("db", "migrate", "--database", database_url)
        assert migrated.returncode == 0, migrated.stderr
        cloud_toml = write_cloud_config(
            tmp / "cloud.toml",
            database_url=database_url,
            mqtt_url=cloud.url,
            client_id="e2e-ingest",
            overrides={
                "mqtt": {"tls": pki.client("services", "linli-ingest")},
                "alerts": {
                    "inventory": str(self.inventory),
                    "clock": "data",
                    "tick_interval_s": 0.5,
                    **(alerts or {}),
                },
            },
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
            overrides={"cloud": {"tls": pki.client("gateways", self.gateway)}},
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
        wait_for(
            lambda: "subscribed to $share/linli-ingest/linli/v1/+/+/up" in self.ingest.log_tail(100_000),
            30,
            "the ingest",
            self.ingest,
        )
        wait_for(lambda: "subscribed" in self.edge.log_tail(100_000), 30, "the edge agent", self.edge)

    def rows(self) -> int:
        return int(scalar(self.url, "SELECT count(*) FROM readings"))

    def settled(self) -> bool:
        """Everything stored, and the alert service has read the whole feed."""
        horizon = scalar(self.url, "SELECT coalesce(max(feed_seq), 0) FROM alert_feed")
        checkpoint = scalar(self.url, "SELECT coalesce(max(feed_seq), 0) FROM alert_checkpoints")
        return bool(self.rows() >= expected_rows(self.truth) and checkpoint >= horizon)

    def verify(self) -> dict[str, Any]:
        done = linli("sim", "verify", "--alerts", "--truth", str(self.truth), "--database", self.url)
        assert done.stdout, done.stderr
        report: dict[str, Any] = json.loads(done.stdout)
        return report

    def stop(self) -> None:
        for child in (self.edge, self.alerts, self.ingest):
            child.stop(timeout=30)

    def children(self) -> Sequence[Child]:
        return (self.ingest, self.alerts, self.edge)

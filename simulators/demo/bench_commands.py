"""``linli bench commands --json``: from the API to a streetlight's confirmation, through the
whole chain, under background load.

The chain of `simulators.demo.chain` with commands: field broker, ``linli edge run``, the cloud
broker as linli ships it, ingest, alert service, ``linli cloud commands``, ``linli cloud api`` and
one simulated NB-IoT streetlight (``linli sim --obey``) on the field broker. While ``--background``
readings/s of ordinary telemetry go through the same edge agent, ``--commands`` times at random
pauses: ``POST /api/v1/devices/{lamp}/commands`` dims the lamp to a new level, and the time runs
from just before the request to the database showing the command ``confirmed`` (the lamp's report
with the new level came back through the agent). Per command also the stages from the command's
audit trail (stored at the gateway, sent to the device, confirmed: the gateway's clock, the same
machine's). The simulated lamp's reaction (`simulators.runner.OBEY_WAIT_S`) is part of the
figure: the target is p99 under 1 s plus that.
"""

from __future__ import annotations

import argparse
import random
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from simulators.benchrun import run_in_workdir
from simulators.demo.chain import Chain, running_chain
from simulators.runner import OBEY_WAIT_S


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("commands", help="API to a streetlight's confirmation through the chain")
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument("--background", type=int, default=10_000, help="telemetry readings/s meanwhile")
    parser.add_argument("--commands", type=int, default=100, help="commands measured")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    parser.set_defaults(handler=_run)


def _percentile(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 1)


class _Commander:
    """Logs in to the chain's API as the committee member and dims the chain's lamp."""

    def __init__(self, chain: Chain) -> None:
        import httpx

        from cloud.api.accounts import add_user
        from cloud.incidents.people import load_people

        assert chain.lamp is not None  # noqa: S101 - a chain with commands
        self.chain = chain
        self.lamp = chain.lamp.device_id
        self.conn = psycopg.connect(chain.url, autocommit=True)
        password = secrets.token_urlsafe(12)
        add_user(self.conn, load_people(chain.root / "people.yaml"), "k1", password)
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{chain.api_port}", timeout=30)
        deadline = time.monotonic() + 60
        while True:
            try:
                if self.http.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            chain.check()
            time.sleep(0.1)  # the API process starting: nothing to wait on but its port
        r = self.http.post("/api/v1/auth/token", data={"username": "k1", "password": password})
        r.raise_for_status()
        self.http.headers["Authorization"] = f"Bearer {r.json()['access_token']}"
        while (
            self.conn.execute("SELECT 1 FROM devices WHERE device_id = %s", (self.lamp,)).fetchone() is None
        ):
            if time.monotonic() > deadline:
                raise RuntimeError("the lamp is not in the devices table (the alert service syncs it)")
            time.sleep(0.1)

    def dim(self, level: int) -> dict[str, float]:
        """Dim the lamp through the API and wait for the confirmation: milliseconds of each stage."""
        command_id = uuid.uuid4()
        wall0, start = time.time(), time.perf_counter()
        r = self.http.post(
            f"/api/v1/devices/{self.lamp}/commands",
            json={"name": "dim", "params": {"level_pct": level}, "command_id": str(command_id), "ttl_s": 120},
        )
        posted = time.perf_counter()
        if r.status_code != 201:
            raise RuntimeError(f"the API refused the command: {r.status_code} {r.text}")
        deadline = start + 30
        while True:
            row = self.conn.execute(
                "SELECT state, reason FROM commands WHERE command_id = %s", (command_id,)
            ).fetchone()
            if row is not None and row[0] == "confirmed":
                done = time.perf_counter()
                break
            if row is not None and row[0] in ("failed", "expired"):
                raise RuntimeError(f"command {command_id} {row[0]}: {row[1]}")
            if time.perf_counter() > deadline:
                raise RuntimeError(f"command {command_id} not confirmed within 30 s (state {row})")
            time.sleep(0.002)
        stages: dict[str, Any] = dict(
            self.conn.execute(
                "SELECT state, extract(epoch FROM at) FROM command_audit WHERE command_id = %s", (command_id,)
            ).fetchall()
        )
        return {
            "total": (done - start) * 1000,
            "api": (posted - start) * 1000,
            "at_gateway": (float(stages["at_gateway"]) - wall0) * 1000,
            "sent_to_device": (float(stages["sent_to_device"]) - wall0) * 1000,
            "confirmed_at_gateway": (float(stages["confirmed"]) - wall0) * 1000,
        }

    def close(self) -> None:
        self.http.close()
        self.conn.close()


def _stored(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(readings), 0) FROM ingested_batches").fetchone()
    return int(row[0]) if row else 0


def measure(root: Path, *, background: int, commands: int) -> dict[str, Any]:
    with running_chain(root, commands=True) as chain:
        commander = _Commander(chain)
        try:
            rng = random.Random(7)  # noqa: S311 - pacing and levels
            commander.dim(77)  # warm: the first command of the chain loads what it needs
            samples: list[dict[str, float]] = []
            level = 77
            with chain.background(background, seconds=10 + commands * 0.8):
                time.sleep(3.0)  # the background reaches its pace before the first command
                stored, began = _stored(commander.conn), time.perf_counter()
                for _ in range(commands):
                    time.sleep(rng.uniform(0.1, 0.4))  # commands at random phases of the background
                    level = rng.choice([x for x in range(5, 100, 5) if x != level])
                    samples.append(commander.dim(level))
                achieved = (_stored(commander.conn) - stored) / (time.perf_counter() - began)
            chain.check()
        finally:
            commander.close()
    total = [s["total"] for s in samples]
    return {
        "api_to_confirmed_p50_ms": _percentile(total, 50),
        "api_to_confirmed_p99_ms": _percentile(total, 99),
        "api_to_confirmed_max_ms": round(max(total), 1),
        "api_post_p50_ms": _percentile([s["api"] for s in samples], 50),
        "to_gateway_p50_ms": _percentile([s["at_gateway"] for s in samples], 50),
        "to_device_p50_ms": _percentile([s["sent_to_device"] for s in samples], 50),
        "confirmed_at_gateway_p50_ms": _percentile([s["confirmed_at_gateway"] for s in samples], 50),
        "device_reaction_max_ms": round(OBEY_WAIT_S * 1000, 1),
        "commands": len(samples),
        "background_readings_per_s": background,
        "background_stored_readings_per_s": round(achieved),
    }


def _run(args: argparse.Namespace) -> int:
    if args.quick:
        args.background, args.commands = 2000, 10

    def measured(root: Path) -> dict[str, Any]:
        return measure(root, background=args.background, commands=args.commands)

    return run_in_workdir(args.workdir, measured, prefix="linli-bench-commands-")

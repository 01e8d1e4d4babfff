"""``linli bench api --json``: the API's latency and throughput on a month of a thousand devices.

Starts a private durable PostgreSQL+TimescaleDB, loads about 20 million ``readings`` rows (1,000
devices in 10 communities, 30 days, a report every few minutes; `cloud.api.benchdata`) with binary
COPY, rolls them up hourly, adds the devices and 2,000 incidents, then starts the API as
``linli cloud api --config FILE`` and logs in as a district staff member (all communities).

Each query is then run by `--clients` concurrent keep-alive HTTP/1.1 connections for `--seconds`
(after one second of warm-up), each connection sending its next request when the answer arrived:

- ``history_hourly_30d``: one device's 30 days as hourly averages of one metric (720 buckets);
- ``history_raw_24h``: one device's last 24 hours raw, one metric;
- ``incidents_community``: the incident list of a community (the first page of 100).

A random device (or community) per request. The client is a few lines of asyncio on raw sockets
(no HTTP library), so it costs the two cores little. Targets (issue 13): p95 at most 50 ms for
each query, at least 500 requests/s for the hourly history.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

PEOPLE = """\
version: 1
staff:
  - {id: q-sun, name: 孙洁, roles: [district], communities: ["*"]}
"""
PASSWORD = "bench password 1"  # noqa: S105 - a throw-away account of the benchmark's own database


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("api", help="the HTTP API's latency and throughput on 20 million readings")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    p.add_argument("--rows", type=int, default=20_000_000, help="readings rows to load")
    p.add_argument("--devices", type=int, default=1_000)
    p.add_argument("--communities", type=int, default=10)
    p.add_argument("--days", type=int, default=30)
    p.add_argument("--clients", type=int, default=32, help="concurrent connections")
    p.add_argument("--workers", type=int, default=2, help="API processes ([api] workers)")
    p.add_argument(
        "--pool-max", type=int, default=2, help="database connections per API process ([api] pool_max)"
    )
    p.add_argument("--seconds", type=float, default=10.0, help="measured time per query")
    p.add_argument("--quick", action="store_true", help="2 million rows, 3 s per query")
    p.add_argument("--workdir", type=Path, default=None, help="keep the services here (default: a temp dir)")
    p.set_defaults(handler=_run)


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def _connection(
    host: str,
    port: int,
    next_path: Callable[[], str],
    headers: bytes,
    until: float,
    warm: float,
    out: dict[str, Any],
) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while (now := time.perf_counter()) < until:
            request = f"GET {next_path()} HTTP/1.1\r\nHost: {host}\r\n".encode() + headers + b"\r\n"
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"connection":
                    close = value.strip().lower() == b"close"
            await reader.readexactly(length)
            if close:  # as HTTP/1.1 clients do: a new connection for the next request
                writer.close()
                reader, writer = await asyncio.open_connection(host, port)
                out["reconnects"] += 1
            done = time.perf_counter()
            if now >= warm:
                out["latencies"].append(done - now)
                if status != 200:
                    out["errors"] += 1
    finally:
        writer.close()


def measure(
    url: str, next_path: Callable[[], str], *, token: str, clients: int, seconds: float
) -> dict[str, float]:
    """Run `clients` connections for 1 s of warm-up plus `seconds`; latency percentiles and rate."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    headers = f"Authorization: Bearer {token}\r\n".encode()
    out: dict[str, Any] = {"latencies": [], "errors": 0, "reconnects": 0}

    async def run() -> None:
        warm = time.perf_counter() + 1.0
        until = warm + seconds
        await asyncio.gather(
            *(_connection(host, int(port), next_path, headers, until, warm, out) for _ in range(clients))
        )

    asyncio.run(run())
    lat: list[float] = out["latencies"]
    return {
        "p50_ms": round(_percentile(lat, 0.5) * 1000, 1),
        "p95_ms": round(_percentile(lat, 0.95) * 1000, 1),
        "requests_per_s": round(len(lat) / seconds, 1),
        "requests": len(lat),
        "errors": out["errors"],
        #: connections the API asked to reopen (its processes evening out their shares)
        "reconnects": out["reconnects"],
    }


def start_api(
    root: Path, database_url: str, workers: int = 2, pool_max: int = 3
) -> tuple[subprocess.Popen[bytes], str]:
    from simulators.services import free_port

    port = free_port("127.0.0.1")
    (root / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    config = root / "cloud.toml"
    config.write_text(
        f'database_url = "{database_url}"\nlog_level = "warning"\n[incidents]\npeople = "people.yaml"\n'
        f'[api]\ntoken_key_file = "api-token.key"\npool_max = {pool_max}\nworkers = {workers}\n'
        f'[api.http]\naddress = "127.0.0.1:{port}"\n',
        encoding="utf-8",
    )
    log = (root / "api.log").open("wb")
    proc = subprocess.Popen(  # noqa: S603 - this interpreter, fixed arguments
        [sys.executable, "-m", "device_profiles.console", "cloud", "api", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return proc, f"http://127.0.0.1:{port}"


def login(url: str, deadline_s: float = 60.0) -> str:
    """The bench account's access token, once the API at `url` answers."""
    token: str = login_pair(url, deadline_s)["access_token"]
    return token


def login_pair(url: str, deadline_s: float = 60.0) -> dict[str, Any]:
    """The bench account's tokens (access and refresh), once the API at `url` answers."""
    import httpx

    deadline = time.monotonic() + deadline_s
    with httpx.Client(base_url=url, timeout=10) as c:
        while True:
            try:
                if c.get("/healthz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the API did not start")
            time.sleep(0.1)  # the API process starting: nothing to wait on but its port
        r = c.post("/api/v1/auth/token", data={"username": "q-sun", "password": PASSWORD})
        r.raise_for_status()
        pair: dict[str, Any] = r.json()
        return pair


def _measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from cloud.api import benchdata
    from cloud.api.accounts import add_user
    from cloud.incidents.people import People
    from cloud.store.migrate import migrate
    from simulators.services import PostgresCluster

    rows, seconds = (2_000_000, 3.0) if args.quick else (args.rows, args.seconds)
    say: Callable[[str], None] = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(days=args.days)
    devices = benchdata.fleet(args.devices, args.communities)
    with PostgresCluster(datadir=root / "pg", durable=True) as pg:
        url = pg.dsn()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            add_user(
                conn,
                People.model_validate(
                    {
                        "version": 1,
                        "staff": [
                            {"id": "q-sun", "name": "孙洁", "roles": ["district"], "communities": ["*"]}
                        ],
                    }
                ),
                "q-sun",
                PASSWORD,
            )
        t0 = time.perf_counter()
        written = benchdata.load_readings(url, devices, rows=rows, end=now, days=args.days)
        load_s = time.perf_counter() - t0
        say(f"loaded {written:,} rows in {load_s:.1f} s; rolling up")
        benchdata.load_registry(url, devices, incidents_per_community=200, end=now)
        benchdata.roll_up(url, now=now)
        proc, api = start_api(root, url, args.workers, args.pool_max)
        try:
            token = login(api)
            rnd = random.Random(7)  # noqa: S311 - choosing devices, not secrets
            iso = "%Y-%m-%dT%H:%M:%SZ"

            def hourly() -> str:
                d = rnd.choice(devices)
                return (
                    f"/api/v1/devices/{d.device_id}/readings?metric={d.metrics[-1]}"
                    f"&start={start:{iso}}&end={end:{iso}}&interval=1h&agg=avg"
                )

            def raw() -> str:
                d = rnd.choice(devices)
                return (
                    f"/api/v1/devices/{d.device_id}/readings?metric={d.metrics[-1]}"
                    f"&start={now - timedelta(hours=24):{iso}}&end={now:{iso}}"
                )

            communities = sorted({d.community_id for d in devices})

            def incidents() -> str:
                return f"/api/v1/incidents?community_id={rnd.choice(communities)}"

            figures: dict[str, Any] = {
                "rows": written,
                "load_s": round(load_s, 1),
                "clients": args.clients,
                "workers": args.workers,
                "pool_max": args.pool_max,
            }
            for name, path in (
                ("history_hourly_30d", hourly),
                ("history_raw_24h", raw),
                ("incidents_community", incidents),
            ):
                figures[name] = measure(api, path, token=token, clients=args.clients, seconds=seconds)
                say(f"{name}: {figures[name]}")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return figures


def _run(args: argparse.Namespace) -> int:
    from simulators.benchrun import run_in_workdir

    return run_in_workdir(args.workdir, lambda root: _measure(args, root), prefix="linli-bench-api-")

"""``linli bench console --json``: how fast the console draws a busy community in chromium.

Starts a private PostgreSQL+TimescaleDB with one community of `--devices` devices (8 in 10 in
buildings of two units on a grid of coordinates, the rest streetlights and manhole covers
scattered between them) and `--incidents` open incidents of every severity and state, starts the
API as ``linli cloud api --config FILE``, and opens the console in Debian's chromium (playwright)
as a district staff member:

- ``board_ms``: the live board with every open incident drawn;
- ``map_ms``: the site plan with every device drawn.

Each figure is the time from the start of the navigation to the page's own "drawn" mark
(``performance.mark("linli:board")``: the HTML, the scripts, the API's answers and the drawing),
over `--runs` fresh page loads; the median and the slowest are reported. Target (issue 14): under
1 s for 1,000 incidents and 10,000 devices.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

CHROMIUM = "/usr/bin/chromium"
COMMUNITY = "bench"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    p = subparsers.add_parser("console", help="the staff console's drawing time in chromium")
    p.add_argument("--json", action="store_true", help="print only the JSON figures")
    p.add_argument("--devices", type=int, default=10_000, help="devices of the community on the map")
    p.add_argument("--incidents", type=int, default=1_000, help="open incidents on the board")
    p.add_argument("--runs", type=int, default=5, help="page loads per page")
    p.add_argument("--workdir", type=Path, default=None, help="keep the services here (default: a temp dir)")
    p.set_defaults(handler=_run)


def _devices(n: int) -> list[tuple[Any, ...]]:
    """(id, type, building, unit, room, lat, lon, status) of a community on a 0.0006-degree grid."""
    rnd = random.Random(14)  # noqa: S311 - a layout, not a secret
    in_buildings = n * 8 // 10
    per_building = 40
    buildings = max(1, -(-in_buildings // per_building))
    side = max(1, int(buildings**0.5))
    rows: list[tuple[Any, ...]] = []
    for i in range(n):
        status = rnd.choices(["online", "offline", "unknown"], weights=[90, 8, 2])[0]
        if i < in_buildings:
            b = i // per_building
            lat, lon = 31.2 + (b % side) * 0.0006, 121.4 + (b // side) * 0.0007
            kind = "door_contact" if i % 5 else "sos_button"
            unit = 1 + (i % per_building) // (per_building // 2)
            rows.append((f"dev-{i:05d}", kind, str(b + 1), str(unit), f"{unit}0{i % 20}", lat, lon, status))
        else:
            kind = "streetlight" if i % 2 else "manhole_cover"
            lat = 31.2 + rnd.uniform(-0.0003, side * 0.0006)
            lon = 121.4 + rnd.uniform(-0.0003, side * 0.0007)
            rows.append((f"dev-{i:05d}", kind, None, None, None, lat, lon, status))
    return rows


def _load(url: str, devices: int, incidents: int) -> None:
    now = datetime.now(UTC)
    with psycopg.connect(url, autocommit=True) as conn:
        with conn.cursor().copy(
            "COPY devices (device_id, device_type, profile, community_id, gateway_id, building, unit, room,"
            " lat, lon, status, last_seen) FROM STDIN"
        ) as copy:
            for d, kind, b, u, room, lat, lon, status in _devices(devices):
                copy.write_row(
                    (d, kind, f"bench/{kind}", COMMUNITY, "bench-gw", b, u, room, lat, lon, status, now)
                )
        conn.execute(
            "INSERT INTO incidents (rule, subject, subject_kind, severity, state, latched, community_id,"
            " gateway_id, device_id, title_zh, title_en, detail_zh, detail_en, started_at, detected_at,"
            " last_occurrence_at, evidence, feed_seq, handler)"
            " SELECT 'bench_rule', 'dev-' || lpad((i %% %s)::text, 5, '0'), 'device',"
            " (ARRAY['critical', 'major', 'minor', 'info'])[1 + i %% 4],"
            " (ARRAY['detected', 'accepted', 'dispatched', 'handled', 'verified'])[1 + i %% 5], false, %s,"
            " 'bench-gw', 'dev-' || lpad((i %% %s)::text, 5, '0'), '测试事件 ' || i, 'bench incident ' || i,"
            " '', '', t, t, t, '[]'::jsonb, i, CASE WHEN i %% 5 >= 2 THEN 'q-sun' END"
            " FROM generate_series(1, %s) AS i,"
            " LATERAL (SELECT %s::timestamptz - i * INTERVAL '1 minute' AS t) AS times",
            (devices, COMMUNITY, devices, incidents, now),
        )
        conn.execute("ANALYZE")


def _measure(args: argparse.Namespace, root: Path) -> dict[str, Any]:
    from playwright.sync_api import sync_playwright

    from cloud.api.accounts import add_user
    from cloud.api.bench import PASSWORD, login_pair, start_api
    from cloud.incidents.people import People
    from cloud.store.migrate import migrate
    from simulators.services import PostgresCluster

    say: Callable[[str], None] = (lambda _m: None) if args.json else (lambda m: print(m, file=sys.stderr))
    with PostgresCluster(datadir=root / "pg", durable=False) as pg:
        url = pg.dsn()
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            people = {"version": 1, "staff": [{"id": "q-sun", "name": "孙洁", "roles": ["district"],
                                               "communities": ["*"]}]}  # fmt: skip
            add_user(conn, People.model_validate(people), "q-sun", PASSWORD)
        _load(url, args.devices, args.incidents)
        say(f"loaded {args.devices:,} devices and {args.incidents:,} open incidents")
        proc, api = start_api(root, url, 1)
        try:
            pair = login_pair(api)
            session = json.dumps(
                {
                    "access": pair["access_token"],
                    "refresh": pair["refresh_token"],
                    "expires": 4_102_444_800_000,
                }
            )
            figures: dict[str, Any] = {
                "devices": args.devices,
                "incidents": args.incidents,
                "runs": args.runs,
            }
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
                try:
                    for name, path, count in (
                        ("board", "/console/board", "document.querySelectorAll('#incident-rows tr').length"),
                        ("map", f"/console/map?community={COMMUNITY}", "window.linliMap.count()"),
                    ):
                        times: list[float] = []
                        shown = 0
                        for _ in range(args.runs):
                            context = browser.new_context(
                                viewport={"width": 1280, "height": 800}, base_url=api
                            )
                            context.add_init_script(
                                f"localStorage.setItem('linli.session', {json.dumps(session)})"
                            )
                            page = context.new_page()
                            page.goto(path)
                            page.wait_for_selector(
                                f"body[data-rendered~={name}]", state="attached", timeout=60_000
                            )
                            times.append(
                                page.evaluate(f"performance.getEntriesByName('linli:{name}')[0].startTime")
                            )
                            shown = int(page.evaluate(count))
                            context.close()
                        figures[f"{name}_ms"] = {
                            "median": round(statistics.median(times), 1),
                            "max": round(max(times), 1),
                            "shown": shown,
                        }
                        say(f"{name}: {figures[f'{name}_ms']}")
                finally:
                    browser.close()
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    return figures


def _run(args: argparse.Namespace) -> int:
    from simulators.benchrun import run_in_workdir

    return run_in_workdir(args.workdir, lambda root: _measure(args, root), prefix="linli-bench-console-")

"""``linli demo`` (and ``make demo``): the whole pipeline on this machine, with a live summary.

Registered through the ``linli.commands`` entry point; importing this module is cheap.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run the whole pipeline on this machine: a private field broker per gateway and a cloud broker
(Mosquitto), a private PostgreSQL with TimescaleDB, the ingest service, two edge agents (two gateways
of one community) and simulators for a few hundred devices in accelerated time, with a live summary.
Everything lives under --root; a second run reuses the data. Ctrl-C stops everything. See docs/demo.md.
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="run the whole pipeline locally with a live summary (Ctrl-C stops it)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--root", type=Path, default=Path("var/demo"), help="folder for everything (var/demo)"
    )
    parser.add_argument("--devices", type=int, default=300, help="devices on the first run (default 300)")
    parser.add_argument(
        "--speed", type=float, default=600.0, help="simulated seconds per second (default 600)"
    )
    parser.add_argument(
        "--duration", type=float, metavar="SECONDS", help="stop after this many seconds (default: Ctrl-C)"
    )
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from rich.console import Console

    from simulators.demo.app import run_screen
    from simulators.demo.pipeline import DemoPipeline
    from simulators.errors import SimulatorsError

    console = Console()
    if args.devices < 2 or args.speed <= 0 or (args.duration is not None and args.duration <= 0):
        print("linli demo: --devices must be at least 2, --speed and --duration positive", file=sys.stderr)
        return 2
    stop = threading.Event()

    def _signal(_signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _signal) for sig in (signal.SIGINT, signal.SIGTERM)}

    def say(text: str) -> None:
        console.print(f"[dim]demo:[/dim] {text}", soft_wrap=True, highlight=False)

    pipeline = DemoPipeline(root=args.root, devices=args.devices, speed=args.speed, log=say)
    status = 0
    rows = pipeline.rows_at_start
    try:
        pipeline.start()
        if pipeline.reused:
            say(f"reusing the data of earlier runs: {pipeline.rows_at_start:,} rows in readings")
        say(f"connect with: {pipeline.psql_command()}")
        snap = run_screen(pipeline, console=console, stop=stop, duration=args.duration)
        rows = snap.rows
        for problem in pipeline.failed():
            say(f"[red]{problem}[/red]")
            status = 1
    except SimulatorsError as exc:
        say(f"[red]failed: {exc}[/red]")
        status = 1
    finally:
        say("stopping: simulators, edge agents, ingest, brokers, database")
        for problem in pipeline.stop():
            say(f"[red]{problem}[/red]")
            status = 1
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if pipeline.rows_at_stop is not None:
        rows = pipeline.rows_at_stop
    say(
        f"stopped; {rows:,} rows stored ({rows - pipeline.rows_at_start:+,} this run); data kept in "
        f"{pipeline.root} (a second run reuses it; `make clean` removes it)"
    )
    return status

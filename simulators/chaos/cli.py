"""``linli chaos``: the whole chain under kills, outages and a cut link, then an exact comparison.

Registered through the ``linli.commands`` entry point; importing this module is cheap.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

DESCRIPTION = """\
Run the whole chain (two gateways in two communities, the cloud broker locked down, two ingest
workers, the alert service, PostgreSQL+TimescaleDB) for --minutes while each edge agent and each
ingest worker is killed with SIGKILL several times, the cloud broker restarts, the database stops
for 30 s and the first gateway's cloud link is cut for a minute. Then drain, compare with the
simulators' ground truth (readings, events, incidents) and print one JSON summary. Everything lives
under --workdir, emptied first. Exit status 0 on an exact match, 1 otherwise, 2 when the chain could
not run. See docs/reliability.md.
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "chaos",
        help="run the whole chain under faults and verify it stored everything exactly once",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--minutes", type=float, default=30.0, help="how long faults strike (default 30)")
    parser.add_argument(
        "--workdir", type=Path, default=Path("var/chaos"), help="folder for everything, emptied first"
    )
    parser.add_argument("--seed", type=int, default=1, help="seed of the fleet, the traffic and the schedule")
    parser.add_argument("--devices", type=int, default=6000, help="devices per gateway (default 6000)")
    parser.add_argument(
        "--speed",
        type=float,
        default=60.0,
        help="simulated seconds per second (default 60: with 6000 devices about 225 messages/s per gateway)",
    )
    parser.add_argument("--quiet", action="store_true", help="no timeline on stderr")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    from simulators.chaos.run import ChaosPlan, ChaosRun, encode_summary
    from simulators.errors import SimulatorsError

    if args.minutes <= 0 or args.devices < 10 or args.speed <= 0:
        print("linli chaos: --minutes and --speed must be positive, --devices at least 10", file=sys.stderr)
        return 2
    # The database stops for 30 s and the link is cut for 60 s at 15 % and 45 % of the run.
    if args.minutes < 2.5:
        print("linli chaos: --minutes must be at least 2.5 (the outages must fit)", file=sys.stderr)
        return 2

    def say(line: str) -> None:
        if not args.quiet:
            print(f"chaos: {line}", file=sys.stderr, flush=True)

    plan = ChaosPlan(minutes=args.minutes, seed=args.seed, devices=args.devices, speed=args.speed)
    try:
        summary = ChaosRun(plan=plan, workdir=args.workdir, say=say).run()
    except SimulatorsError as exc:
        print(f"linli chaos: {exc}", file=sys.stderr)
        return 2
    sys.stdout.buffer.write(encode_summary(summary) + b"\n")
    return 0 if summary.exact else 1

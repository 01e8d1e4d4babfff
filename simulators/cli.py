"""``linli sim``: simulate a fleet and publish its messages (or write them to a file).

Registered through the ``linli.commands`` entry point. Importing this module is cheap: the
simulator itself is imported when the command runs.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

#: The cloud's database URL variable (the one `linli cloud ingest` and `linli db migrate` read).
DATABASE_URL_VAR = "LINLI_CLOUD_DATABASE_URL"

DESCRIPTION = """\
Simulate community sensors (door contacts, SOS buttons, manhole covers, streetlights) speaking their
vendors' dialects, and publish their messages to an MQTT broker or write them to a file. Writes the
fleet's inventory and a ground-truth log of every message and every condition a pipeline should
detect. Same seed and options (including --start) give byte-identical output. See docs/simulators.md.
"""

EPILOG = """\
examples:
  linli sim --devices 200 --broker mqtt://127.0.0.1:1883 --inventory inventory.yaml --truth truth.jsonl
  linli sim --devices 1000 --speed 3600 --duration 24h --scenario sos-press --broker mqtt://localhost
  linli sim --fleet fleet.yaml --start 2025-06-01T00:00:00Z --duration 2d --output messages.jsonl
  linli sim --list-scenarios
"""


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="simulate device fleets, scenarios and faults, with ground truth",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(handler=handle)
    commands = parser.add_subparsers(dest="sim_command", metavar="COMMAND")
    verify = commands.add_parser(
        "verify",
        help="compare a ground truth with the database; exit 0 only on an exact match",
        description="Compare a simulator ground truth with what the pipeline stored in the database "
        "and print a JSON summary (docs/simulators.md, 'Verifying a run'). With --alerts, compare its "
        "conditions with the incidents instead ('Verifying alerts'). Exit status: 0 exact match "
        "(with --alerts: nothing missed, no false positive, no duplicate), 1 mismatch, 2 unreadable truth "
        "or database.",
    )
    verify.add_argument("--truth", required=True, metavar="FILE", help="ground truth (JSONL) of the run")
    verify.add_argument(
        "--database",
        metavar="URL",
        help=f"postgresql://... of the cloud (default: ${DATABASE_URL_VAR}, which keeps a password out of "
        "the process list)",
    )
    verify.add_argument(
        "--scope",
        choices=("auto", "all", "gateways"),
        default="auto",
        help="compare with every row of the database (all), or only with the rows of the truth's gateways' "
        "devices (gateways: other gateways' rows are another simulator's); auto: gateways when the truth "
        "names one gateway (default)",
    )
    verify.add_argument(
        "--alerts",
        action="store_true",
        help="compare the truth's conditions with the incidents (detected, missed, false positives)",
    )
    verify.add_argument(
        "--absence-intervals",
        type=float,
        default=4.0,
        metavar="N",
        help="with --alerts: report intervals of silence before the absence rule fires (default 4); "
        "shorter silences are counted as undetectable",
    )
    verify.add_argument(
        "--extra-late",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="with --alerts: simulated seconds a detection may come after each condition's own "
        "tolerance and still count (an accelerated run through outages; default 0)",
    )
    verify.set_defaults(handler=handle_verify)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    fleet = parser.add_argument_group("fleet")
    fleet.add_argument(
        "--devices", type=int, default=100, metavar="N", help="devices to generate (default 100)"
    )
    fleet.add_argument(
        "--mix",
        default="door_contact=40,sos_button=20,manhole_cover=10,streetlight=30",
        metavar="TYPE=W,...",
        help="device types and their weights (default %(default)s)",
    )
    fleet.add_argument(
        "--communities", type=int, metavar="N", help="communities (default: one per 1,000 devices)"
    )
    fleet.add_argument("--fleet", metavar="FILE", help="a fleet file (communities) or an inventory to replay")
    fleet.add_argument("--inventory", metavar="OUT", help="write the fleet's inventory here (.yaml or .json)")

    time_ = parser.add_argument_group("time")
    time_.add_argument("--seed", type=int, default=0, help="seed of the run's random generator (default 0)")
    time_.add_argument("--start", default="now", help="simulated start: ISO 8601 or 'now' (default)")
    time_.add_argument(
        "--speed",
        metavar="X|max",
        help="simulated seconds per second: 1 is real time, 3600 an hour per second, 'max' no pacing "
        "(default: 1 to a broker, max to a file)",
    )
    time_.add_argument("--duration", metavar="D", help="simulated time to run (90s, 15m, 24h, 2d)")
    time_.add_argument("--count", type=int, metavar="N", help="stop after N messages")

    scen = parser.add_argument_group("scenarios and faults")
    scen.add_argument(
        "--scenario", action="append", default=[], metavar="NAME|FILE", help="inject a scenario (repeatable)"
    )
    scen.add_argument("--list-scenarios", action="store_true", help="list the shipped scenarios and exit")
    scen.add_argument(
        "--malformed", type=float, default=0.0, metavar="SHARE", help="share of malformed payloads"
    )
    scen.add_argument(
        "--duplicate", type=float, default=0.0, metavar="SHARE", help="share of messages sent twice"
    )
    scen.add_argument("--reordered", type=float, default=0.0, metavar="SHARE", help="share sent out of order")
    scen.add_argument(
        "--clock-skew", type=float, default=0.0, metavar="MIN", help="device clock skew, +-minutes"
    )
    scen.add_argument(
        "--skew-share", type=float, default=0.1, metavar="SHARE", help="share of skewed devices"
    )
    scen.add_argument(
        "--silent", type=float, default=0.0, metavar="SHARE", help="share of devices going silent"
    )

    out = parser.add_argument_group("output")
    out.add_argument("--broker", metavar="URL", help="publish to this broker (default mqtt://127.0.0.1:1883)")
    out.add_argument("--output", metavar="FILE", help="write messages (topic, payload) to FILE instead")
    out.add_argument("--qos", type=int, choices=(0, 1), default=0, help="MQTT QoS (default 0)")
    out.add_argument("--tls-ca", metavar="FILE", help="CA certificate to verify the broker (implies TLS)")
    out.add_argument("--tls-cert", metavar="FILE", help="client certificate (mutual TLS)")
    out.add_argument("--tls-key", metavar="FILE", help="client private key (mutual TLS)")
    out.add_argument("--client-id", metavar="ID", help="MQTT client id (default linli-sim-<pid>)")
    out.add_argument(
        "--obey",
        action="store_true",
        help="the devices obey commands: subscribe to their dialects' command topics on the broker"
        " (a lamp switches, dims and reports; a button acknowledges; in the ground truth)",
    )
    out.add_argument("--truth", metavar="OUT", help="write the ground truth (JSONL) here")
    out.add_argument("--quiet", action="store_true", help="no progress line and no summary")


def handle(args: argparse.Namespace) -> int:
    from simulators.app import main_with_args

    return main_with_args(args, stdout=sys.stdout, stderr=sys.stderr)


def handle_verify(args: argparse.Namespace) -> int:
    from simulators.errors import SimulatorsError
    from simulators.verify import encode_report, verify

    database_url = args.database or os.environ.get(DATABASE_URL_VAR, "")
    if not database_url:
        print(f"linli sim verify: no database: --database URL or {DATABASE_URL_VAR}", file=sys.stderr)
        return 2
    if args.alerts:
        return _verify_alerts(args, database_url)
    try:
        report = verify(truth=args.truth, database_url=database_url, scope=args.scope)
    except SimulatorsError as exc:
        print(f"linli sim verify: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(encode_report(report).decode() + "\n")
    return 0 if report.match else 1


def _verify_alerts(args: argparse.Namespace, database_url: str) -> int:
    from simulators.errors import SimulatorsError
    from simulators.verify_alerts import AlertsOptions, encode_alerts_report, verify_alerts

    if not args.absence_intervals > 0:
        print("linli sim verify: --absence-intervals must be above 0", file=sys.stderr)
        return 2
    if args.extra_late < 0:
        print("linli sim verify: --extra-late must not be negative", file=sys.stderr)
        return 2
    options = AlertsOptions(absence_intervals=args.absence_intervals, extra_late_s=args.extra_late)
    try:
        report = verify_alerts(truth=args.truth, database_url=database_url, options=options)
    except SimulatorsError as exc:
        print(f"linli sim verify --alerts: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(encode_alerts_report(report).decode() + "\n")
    return 0 if report.match else 1

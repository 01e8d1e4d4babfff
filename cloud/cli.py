"""``linli cloud ...``: the cloud services, each until SIGTERM or Ctrl-C, and a configuration check.

``linli cloud ingest --config cloud.toml``: one ingest worker;
``linli cloud alerts --config cloud.toml``: the alert rules (one partition);
``linli cloud incidents --config cloud.toml``: the escalation ladder and auto-close;
``linli cloud notify --config cloud.toml``: the push sender;
``linli cloud api --config cloud.toml``: the HTTP API (docs/api.md);
``linli cloud check-config --config cloud.toml`` validates a configuration and exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from cloud.errors import CloudError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    cloud = subparsers.add_parser(
        "cloud", help="the cloud side: ingest, alerts, incidents, notify, commands, api"
    )
    commands = cloud.add_subparsers(dest="cloud_command", required=True, metavar="COMMAND")
    ingest = commands.add_parser("ingest", help="consume uplink batches into the database until SIGTERM")
    ingest.add_argument(
        "--config", type=Path, required=True, help="TOML; LINLI_CLOUD_* variables override it"
    )
    ingest.set_defaults(handler=_ingest)
    alerts = commands.add_parser("alerts", help="turn the stored readings into incidents until SIGTERM")
    alerts.add_argument(
        "--config", type=Path, required=True, help="TOML; LINLI_CLOUD_* variables override it"
    )
    alerts.add_argument(
        "--partition",
        metavar="K/N",
        help="evaluate the communities whose hash modulo N is K ([alerts] partition)",
    )
    alerts.set_defaults(handler=_alerts)
    incidents = commands.add_parser(
        "incidents", help="run the escalation ladder and auto-close until SIGTERM"
    )
    incidents.add_argument(
        "--config", type=Path, required=True, help="TOML; LINLI_CLOUD_* variables override it"
    )
    incidents.set_defaults(handler=_service, service="incidents")
    notify = commands.add_parser("notify", help="deliver the notification outbox until SIGTERM")
    notify.add_argument(
        "--config", type=Path, required=True, help="TOML; LINLI_CLOUD_* variables override it"
    )
    notify.set_defaults(handler=_service, service="notify")
    sender = commands.add_parser(
        "commands", help="send queued commands to the gateways and follow their progress until SIGTERM"
    )
    sender.add_argument(
        "--config", type=Path, required=True, help="TOML; LINLI_CLOUD_* variables override it"
    )
    sender.set_defaults(handler=_service, service="commands")
    api = commands.add_parser(
        "api",
        help="serve the HTTP API until SIGTERM",
        description="Serve the HTTP API (/api/v1, /docs, /healthz, /metrics) on [api.http] address with"
        " [api] workers processes until SIGTERM. Accounts: linli users, linli apikeys. docs/api.md.",
    )
    api.add_argument("--config", type=Path, required=True, help="TOML; LINLI_CLOUD_* variables override it")
    api.set_defaults(handler=_api)
    check = commands.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(handler=_check)


def _check(args: argparse.Namespace) -> int:
    from cloud.config import load_settings
    from cloud.incidents.main import load_context

    try:
        settings = load_settings(args.config)
        if settings.incidents.people is not None:  # the people file, and its channels configured
            load_context(settings)
        if settings.commands.schedules is not None:  # the streetlight schedules
            from cloud.commands.schedules import load_schedules

            load_schedules(settings.commands.schedules)
    except CloudError as exc:
        print(f"linli cloud: {exc}", file=sys.stderr)
        return 2
    print("configuration ok")
    return 0


def _alerts(args: argparse.Namespace) -> int:
    from cloud.alerts.main import run_alerts
    from cloud.config import load_settings
    from cloud.logs import configure

    try:
        settings = load_settings(args.config)
        if args.partition:
            from cloud.config import AlertsConfig

            alerts = AlertsConfig.model_validate(
                {**settings.alerts.model_dump(), "partition": args.partition}
            )
            settings = settings.model_copy(update={"alerts": alerts})
        configure(settings.log_level, fmt=settings.log_format)
        stop = _stop_on_signals()
        return run_alerts(settings, stop)
    except CloudError as exc:
        print(f"linli cloud: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:  # pydantic's ValidationError: a bad --partition
        print(f"linli cloud: --partition: {exc}", file=sys.stderr)
        return 2


def _service(args: argparse.Namespace) -> int:
    from cloud.config import load_settings
    from cloud.incidents.main import run_incidents, run_notify
    from cloud.logs import configure

    try:
        settings = load_settings(args.config)
        configure(settings.log_level, fmt=settings.log_format)
        stop = _stop_on_signals()
        if args.service == "commands":
            from cloud.commands.service import run_commands

            return run_commands(settings, stop)
        run = run_incidents if args.service == "incidents" else run_notify
        return run(settings, stop)
    except CloudError as exc:
        print(f"linli cloud: {exc}", file=sys.stderr)
        return 2


def _api(args: argparse.Namespace) -> int:
    from cloud.api.cli import serve
    from cloud.config import load_settings
    from cloud.logs import configure

    try:
        settings = load_settings(args.config)
        configure(settings.log_level, fmt=settings.log_format)
        return serve(settings)
    except CloudError as exc:
        print(f"linli cloud: {exc}", file=sys.stderr)
        return 2


def _stop_on_signals() -> threading.Event:
    stop = threading.Event()

    def _signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    return stop


def _ingest(args: argparse.Namespace) -> int:
    from cloud.config import load_settings
    from cloud.ingest.service import run_ingest
    from cloud.logs import configure

    try:
        settings = load_settings(args.config)
    except CloudError as exc:
        print(f"linli cloud: {exc}", file=sys.stderr)
        return 2
    configure(settings.log_level, fmt=settings.log_format)
    stop = threading.Event()

    def _signal(_signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _signal)
    signal.signal(signal.SIGINT, _signal)
    return run_ingest(settings, stop)

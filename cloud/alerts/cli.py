"""``linli alerts ...``: check rule files, and explain a rule over stored history.

``linli alerts check [--rules PATH ...] [--no-shipped]`` validates the shipped rules with the
overrides given and prints every problem with file, rule and key (exit status 2), or a summary.
``linli alerts explain --config cloud.toml --rule R --device D --from T --to T`` replays the
device's stored readings and events through rule R and prints when it would have fired and
cleared, and why (the readings behind each change).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    alerts = subparsers.add_parser(
        "alerts", help="alert rules: check rule files, explain a rule over history"
    )
    commands = alerts.add_subparsers(dest="alerts_command", required=True, metavar="COMMAND")
    check = commands.add_parser("check", help="validate the rules (shipped defaults and overrides)")
    check.add_argument(
        "--rules",
        type=Path,
        action="append",
        default=[],
        metavar="PATH",
        help="a rule file or folder (repeatable)",
    )
    check.add_argument("--no-shipped", action="store_true", help="leave out the shipped defaults")
    check.set_defaults(handler=_check)
    explain = commands.add_parser("explain", help="replay stored history through one rule")
    explain.add_argument(
        "--config", type=Path, required=True, help="the cloud configuration (database, [alerts])"
    )
    explain.add_argument("--rule", required=True, help="rule id, e.g. battery_low")
    explain.add_argument("--device", required=True, help="device id")
    explain.add_argument("--from", dest="start", required=True, type=parse_time, help="ISO 8601 time")
    explain.add_argument("--to", dest="end", required=True, type=parse_time, help="ISO 8601 time")
    explain.add_argument("--community", help="evaluate with this community's rules (default: the device's)")
    explain.set_defaults(handler=_explain)


def parse_time(text: str) -> datetime:
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from exc
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _check(args: argparse.Namespace) -> int:
    from collections import Counter

    from cloud.alerts.rules import RuleBook
    from cloud.errors import AlertRuleError

    try:
        book = RuleBook.load(shipped=not args.no_shipped, paths=args.rules)
    except AlertRuleError as exc:
        for problem in exc.problems:
            print(f"linli alerts: {problem}", file=sys.stderr)
        print(f"linli alerts: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    kinds = Counter(r.kind for r in book.rules)
    print(f"{len(book.rules)} rules ok: " + ", ".join(f"{n} {k}" for k, n in sorted(kinds.items())))
    for community in book.communities:
        print(f"community {community}: {len(book.for_community(community))} rules (with its overrides)")
    return 0


def _explain(args: argparse.Namespace) -> int:
    from cloud.alerts.explain import explain
    from cloud.config import load_settings
    from cloud.errors import CloudError

    try:
        settings = load_settings(args.config)
        lines = explain(
            settings,
            rule_id=args.rule,
            device_id=args.device,
            start=args.start,
            end=args.end,
            community=args.community,
        )
    except CloudError as exc:
        print(f"linli alerts: {exc}", file=sys.stderr)
        return 2
    for line in lines:
        print(line)
    return 0

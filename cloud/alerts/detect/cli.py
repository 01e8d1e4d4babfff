"""``linli detect ...``: what the detectors see in the stored history, without writing incidents.

``linli detect run --config cloud.toml [--community C] [--at T] [--json]`` runs every detector
rule of each community (of the ``[alerts]`` inventory) on its stored history at `T` (default: now)
and prints each finding with its explanation.
``linli detect batteries --config cloud.toml [--community C] [--within 30d] [--at T] [--json]``
prints the weekly maintenance list: per community, every battery that runs out within the
window, soonest first, with building and flat.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec

from cloud.alerts.cli import parse_time


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    detect = subparsers.add_parser("detect", help="the detectors on stored history: findings, batteries")
    commands = detect.add_subparsers(dest="detect_command", required=True, metavar="COMMAND")
    run = commands.add_parser("run", help="every detector on the stored history now (nothing written)")
    batteries = commands.add_parser("batteries", help="the maintenance list: batteries running out")
    for p in (run, batteries):
        p.add_argument("--config", type=Path, required=True, help="the cloud configuration")
        p.add_argument("--community", action="append", default=[], help="only this community (repeatable)")
        p.add_argument("--at", type=parse_time, help="evaluate at this ISO 8601 time (default: now)")
        p.add_argument("--json", action="store_true", help="one JSON object per line")
    batteries.add_argument("--within", default="30d", help="list batteries empty within this (default 30d)")
    run.set_defaults(handler=_run)
    batteries.set_defaults(handler=_batteries)


def _communities(args: argparse.Namespace) -> Any:
    """(settings, directory, rule book, {community: devices}, {community: place}) of the config."""
    from cloud.alerts.detect.finding import Place
    from cloud.alerts.directory import load_directory
    from cloud.alerts.rules import RuleBook
    from cloud.config import load_settings

    settings = load_settings(args.config)
    config = settings.alerts
    directory = load_directory(config)
    book = RuleBook.load(shipped=config.shipped_rules, paths=config.rules)
    members: dict[str, list[Any]] = {}
    for d in sorted(directory.devices.values(), key=lambda d: d.device_id):
        if not args.community or d.community_id in args.community:
            members.setdefault(d.community_id, []).append(d)
    places = {cid: Place.of(directory, cid, devices) for cid, devices in members.items()}
    return settings, book, members, places


def _run(args: argparse.Namespace) -> int:
    import psycopg

    from cloud.alerts.detect.runner import detector_rules, run_detectors
    from cloud.alerts.detect.source import load_history
    from cloud.errors import CloudError

    now = int((args.at or datetime.now(UTC)).timestamp())
    try:
        settings, book, members, places = _communities(args)
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            found = 0
            for cid, devices in sorted(members.items()):
                rules = detector_rules(book.for_community(cid))
                history = load_history(conn, devices=devices, rules=rules, now=now)
                for f in run_detectors(rules, history, now, places[cid]):
                    found += 1
                    if args.json:
                        print(msgspec.json.encode({"community_id": cid, **msgspec.to_builtins(f)}).decode())
                    else:
                        print(f"{cid} {f.rule} {f.device_id}: {f.why_en}")
    except (CloudError, psycopg.Error) as exc:
        print(f"linli detect: {exc}", file=sys.stderr)
        return 2
    if not args.json:
        print(f"{found} finding(s) in {len(members)} communities", file=sys.stderr)
    return 0


def _batteries(args: argparse.Namespace) -> int:
    import psycopg

    from cloud.alerts.detect.battery import outlook
    from cloud.alerts.detect.kinds import BatteryLifeRule
    from cloud.alerts.detect.runner import detector_rules
    from cloud.alerts.detect.source import load_history
    from cloud.alerts.rulebase import parse_duration
    from cloud.errors import CloudError

    now = int((args.at or datetime.now(UTC)).timestamp())
    try:
        within = parse_duration(args.within)
    except ValueError as exc:
        print(f"linli detect: --within: {exc}", file=sys.stderr)
        return 2
    try:
        settings, book, members, _ = _communities(args)
        with psycopg.connect(settings.database_url, autocommit=True, connect_timeout=5) as conn:
            for cid, devices in sorted(members.items()):
                rules = [r for r in detector_rules(book.for_community(cid)) if isinstance(r, BatteryLifeRule)]
                for rule in rules:
                    listed = rule.model_copy(update={"list_within": within})
                    history = load_history(conn, devices=devices, rules=[listed], now=now)
                    rows = outlook(listed, history, now)
                    if args.json:
                        for o in rows:
                            row = {"community_id": cid, **msgspec.to_builtins(o)}
                            print(msgspec.json.encode(row).decode())
                        continue
                    print(f"{cid}: {len(rows)} batteries empty within {args.within}")
                    for o in rows:
                        place = f"building {o.building or '-'} flat {o.unit or '-'}"
                        print(
                            f"  {o.days_left:5.1f} days  {o.level_pct:5.1f} %  {o.per_day:+.2f}/day"
                            f"  {o.device_id} ({o.device_type}, {place})"
                        )
    except (CloudError, psycopg.Error) as exc:
        print(f"linli detect: {exc}", file=sys.stderr)
        return 2
    return 0

"""``linli profiles``: list, check, decode with, and export the schema of the device profiles.

    linli profiles list [--json]
    linli profiles check [DIR ...]                   exit 1 and the errors when a file is invalid
    linli profiles decode --topic T [--payload-file F] [--profile ID] [--received-at ISO]
    linli profiles schema [--profile-format]

``--dir DIR`` (before the subcommand, repeatable) loads profiles from DIR besides the shipped ones.
Heavy imports happen inside the handlers, so ``linli --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device_profiles.engine import ProfileSet


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "profiles", help="device profiles: list, check, decode, schema", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--dir",
        dest="dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also load the profiles under DIR (repeatable)",
    )
    commands = parser.add_subparsers(dest="profiles_command", required=True, metavar="SUBCOMMAND")

    listing = commands.add_parser("list", help="list the loaded profiles")
    listing.add_argument("--json", action="store_true", help="one JSON array of profile summaries")
    listing.set_defaults(handler=_list)

    check = commands.add_parser("check", help="validate profile files; exit 1 with the errors")
    check.add_argument(
        "check_dirs", nargs="*", type=Path, metavar="DIR", help="default: the shipped profiles"
    )
    check.set_defaults(handler=_check)

    decode = commands.add_parser("decode", help="decode one payload into a canonical reading (JSON)")
    decode.add_argument("--topic", required=True, help="the MQTT topic the payload arrived on")
    decode.add_argument("--payload-file", type=Path, help="read the payload from this file (default: stdin)")
    decode.add_argument("--profile", help="force this profile id instead of selecting by topic and payload")
    decode.add_argument("--received-at", help="ISO 8601 receive time with offset (default: now)")
    decode.set_defaults(handler=_decode)

    schema = commands.add_parser("schema", help="print the JSON Schema of the canonical reading")
    schema.add_argument("--profile-format", action="store_true", help="the schema of a profile file instead")
    schema.set_defaults(handler=_schema)


def _load(args: argparse.Namespace) -> ProfileSet:
    from device_profiles.engine import ProfileSet
    from device_profiles.loader import SHIPPED_DIR

    return ProfileSet.load(SHIPPED_DIR, *args.dirs) if args.dirs else ProfileSet.shipped()


def _print_json(value: Any) -> None:
    import msgspec

    sys.stdout.write(msgspec.json.encode(value).decode() + "\n")


def _list(args: argparse.Namespace) -> int:
    from device_profiles.errors import ProfileError

    try:
        profiles = _load(args)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    rows: list[dict[str, Any]] = [
        {
            "id": p.id,
            "device_type": p.device_type,
            "vendor": p.vendor,
            "model": p.model,
            "topics": p.topics,
            "encoding": p.payload.format
            if p.payload.binary is None or p.payload.format != "json"
            else f"json+{p.payload.binary.encoding}",
            "report_interval_s": p.report_interval_s,
        }
        for p in sorted(profiles.profiles.values(), key=lambda p: p.id)
    ]
    if args.json:
        _print_json(rows)
        return 0
    width = max(len(r["id"]) for r in rows)
    for r in rows:
        print(f"{r['id']:<{width}}  {r['device_type']:<14} {r['encoding']:<12} {', '.join(r['topics'])}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from device_profiles.loader import SHIPPED_DIR, check_dirs

    dirs = [*args.check_dirs, *args.dirs] or [SHIPPED_DIR]
    ok, errors = check_dirs(dirs)
    for error in errors:
        print(f"error: {error}")
    print(f"{ok} profile(s) valid, {len(errors)} error(s)")
    return 1 if errors else 0


def _decode(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    from device_profiles.engine import MAX_PAYLOAD_BYTES
    from device_profiles.errors import ProfileError
    from device_profiles.standard import DecodeError

    if args.received_at is not None:
        try:
            received_at = datetime.fromisoformat(args.received_at)
        except ValueError:
            received_at = None
        if received_at is None or received_at.tzinfo is None:
            _print_json({"error": "bad_timestamp", "message": "--received-at needs ISO 8601 with an offset"})
            return 1
    else:
        received_at = datetime.now(UTC)
    try:
        profiles = _load(args)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.payload_file is not None:
        try:
            with args.payload_file.open("rb") as fh:
                payload = fh.read(MAX_PAYLOAD_BYTES + 1)
        except OSError as exc:
            print(f"error: cannot read {args.payload_file}: {exc.strerror}", file=sys.stderr)
            return 1
    else:
        payload = sys.stdin.buffer.read(MAX_PAYLOAD_BYTES + 1)
    result = profiles.decode(args.topic, payload, received_at, profile=args.profile)
    if isinstance(result, DecodeError):
        _print_json({"error": result.reason, "message": result.message, "profile": result.profile})
        return 1
    _print_json(result)
    return 0


def _schema(args: argparse.Namespace) -> int:
    from device_profiles.jsonschema import profile_schema, reading_schema

    _print_json(profile_schema() if args.profile_format else reading_schema())
    return 0

"""``linli profiles``: list, check, decode with, and export the schema of the device profiles.

    linli profiles list [--json]
    linli profiles check [DIR ...]                   exit 1 and the errors when a file is invalid
    linli profiles decode --topic T [--payload-file F] [--profile ID] [--received-at ISO]
    linli profiles schema [--profile-format]
    linli profiles new --from-sample FILE --topic T [--id ID] [--type T] [-o FILE]   a starter profile
    linli profiles test PROFILE --sample FILE [--topic T]   the reading one sample decodes to
    linli profiles command PROFILE DEVICE_ID NAME [KEY=VALUE ...]   a command in the dialect

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

    new = commands.add_parser("new", help="a starter profile from one sample payload (JSON)")
    new.add_argument(
        "--from-sample", type=Path, required=True, metavar="FILE", help="one message the device sent"
    )
    new.add_argument(
        "--topic", required=True, help="its topic, a + level for the device id: 'sensors/+/data'"
    )
    new.add_argument(
        "--id", dest="profile_id", help="profile id, vendor/model (default custom/<first topic level>)"
    )
    new.add_argument("--type", dest="device_type", help="device type (default: guessed from the fields)")
    new.add_argument(
        "--output", "-o", type=Path, help="write the YAML here (default: stdout); never overwritten"
    )
    new.set_defaults(handler=_new)

    test = commands.add_parser("test", help="decode a sample with one profile and show the reading")
    test.add_argument("profile", help="a profile file (.yaml) or the id of a loaded profile")
    test.add_argument(
        "--sample", type=Path, required=True, metavar="FILE", help="one message the device sent"
    )
    test.add_argument("--topic", help="its topic (default: the profile's first, with sample values)")
    test.set_defaults(handler=_test)

    command = commands.add_parser("command", help="what a canonical command becomes in a profile's dialect")
    command.add_argument("profile", help="a profile file (.yaml) or the id of a loaded profile")
    command.add_argument("device_id")
    command.add_argument("name", help="the command: switch, dim, set_schedule, acknowledge, configure")
    command.add_argument("params", nargs="*", metavar="KEY=VALUE", help="on=true, level_pct=40, on_at=18:30")
    command.add_argument(
        "--topic-var", action="append", default=[], metavar="KEY=VALUE", help="a variable of the uplink topic"
    )
    command.set_defaults(handler=_command)

    schema = commands.add_parser("schema", help="print the JSON Schema of the canonical reading")
    schema.add_argument("--profile-format", action="store_true", help="the schema of a profile file instead")
    schema.set_defaults(handler=_schema)


def _load(args: argparse.Namespace) -> ProfileSet:
    from device_profiles.engine import ProfileSet

    return ProfileSet.shipped_and(*args.dirs)


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


def _new(args: argparse.Namespace) -> int:
    from device_profiles.errors import ProfileError
    from device_profiles.scaffold import ScaffoldError, scaffold

    try:
        sample = args.from_sample.read_bytes()
        text, profile = scaffold(
            sample, topic=args.topic, profile_id=args.profile_id, device_type=args.device_type
        )
    except OSError as exc:
        print(f"error: cannot read {args.from_sample}: {exc.strerror}", file=sys.stderr)
        return 1
    except (ScaffoldError, ProfileError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.output is None:
        sys.stdout.write(text)
    else:
        try:
            with args.output.open("x") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"error: cannot write {args.output}: {exc.strerror}", file=sys.stderr)
            return 1
    reviews = text.count("REVIEW")
    print(
        f"{profile.id}: {len(profile.fields)} field(s), device type {profile.device_type}; "
        f"{reviews} line(s) marked REVIEW",
        file=sys.stderr,
    )
    return 0


def _test(args: argparse.Namespace) -> int:
    from datetime import UTC, datetime

    import msgspec

    from device_profiles.engine import MAX_PAYLOAD_BYTES, ProfileSet
    from device_profiles.errors import ProfileError
    from device_profiles.loader import load_file
    from device_profiles.scaffold import fields_not_read
    from device_profiles.standard import METRICS, DecodeError

    try:
        if args.profile.endswith((".yaml", ".yml")):
            profile = load_file(Path(args.profile))
        else:
            profile = _load(args).get(args.profile)
        sample = args.sample.read_bytes()[: MAX_PAYLOAD_BYTES + 1]
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"error: cannot read {args.sample}: {exc.strerror}", file=sys.stderr)
        return 1
    topic = args.topic or "/".join(
        "sample" if level.startswith("{") else level for level in profile.topics[0].split("/")
    )
    result = ProfileSet([profile]).decode(topic, sample, datetime.now(UTC), profile=profile.id)
    if isinstance(result, DecodeError):
        _print_json({"error": result.reason, "message": result.message, "profile": result.profile})
        return 1
    _print_json(result)
    units = {m: d.unit for table in METRICS.values() for m, d in table.items()}
    for metric, value in result.metrics.items():
        unit = units.get(metric, "vendor extension" if metric.startswith("x_") else "?")
        print(f"  {metric} = {value:g} ({unit})", file=sys.stderr)
    for event in result.events:
        print(f"  event {event}", file=sys.stderr)
    if result.quality:
        print(f"  quality: {', '.join(result.quality)}", file=sys.stderr)
    try:
        unread = fields_not_read(profile, msgspec.json.decode(sample))
    except msgspec.DecodeError:
        unread = []
    if unread:
        print(f"  not read by the profile: {', '.join(unread)}", file=sys.stderr)
    return 0


def _value(text: str) -> bool | int | str:
    if text in ("true", "false"):
        return text == "true"
    try:
        return int(text)
    except ValueError:
        return text


def _pairs(items: list[str], what: str) -> dict[str, bool | int | str] | str:
    out: dict[str, bool | int | str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            return f"{what} {item!r} is not KEY=VALUE"
        out[key] = _value(value)
    return out


def _command(args: argparse.Namespace) -> int:
    from device_profiles.command_encode import encode_command
    from device_profiles.commands import CommandError
    from device_profiles.errors import ProfileError
    from device_profiles.loader import load_file

    try:
        if args.profile.endswith((".yaml", ".yml")):
            profile = load_file(Path(args.profile))
        else:
            profile = _load(args).get(args.profile)
    except ProfileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    params, topic_vars = _pairs(args.params, "parameter"), _pairs(args.topic_var, "--topic-var")
    if isinstance(params, str) or isinstance(topic_vars, str):
        print(f"error: {params if isinstance(params, str) else topic_vars}", file=sys.stderr)
        return 2
    try:
        encoded = encode_command(
            profile, args.device_id, args.name, params, topic_vars={k: str(v) for k, v in topic_vars.items()}
        )
    except CommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    _print_json(
        {
            "topic": encoded.topic,
            "payload": encoded.payload.decode(),
            "qos": encoded.qos,
            "confirm": encoded.confirm,
        }
    )
    return 0

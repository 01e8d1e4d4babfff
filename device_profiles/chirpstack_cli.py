"""``linli inventory chirpstack``: add the devices ChirpStack v4 knows to the inventory.

    linli inventory chirpstack --map chirpstack-map.yaml --export devices.json --inventory inventory.yaml ...
    linli inventory chirpstack --map chirpstack-map.yaml --url http://chirpstack:8090 \\
        --application APP_ID --inventory inventory.yaml ...      (the API key in $CHIRPSTACK_API_KEY)

Every device is checked like a spreadsheet row; a device whose ChirpStack profile the map does not
name is a problem too (or is skipped and listed, with ``--skip-unmapped``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any


def register_chirpstack(
    commands: argparse._SubParsersAction[Any],
    *,
    inventory_arg: Callable[[argparse.ArgumentParser], None],
    defaults_args: Callable[[argparse.ArgumentParser], None],
    profiles_arg: Callable[[argparse.ArgumentParser], None],
) -> None:
    parser = commands.add_parser(
        "chirpstack",
        help="add the devices of a ChirpStack v4 server or export",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument(
        "--map", type=Path, required=True, help="ChirpStack device profile -> linli profile (YAML)"
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--export", type=Path, help="a saved /api/devices response (JSON)")
    source.add_argument("--url", help="the ChirpStack REST API, e.g. http://chirpstack:8090")
    parser.add_argument("--application", help="the ChirpStack application id (with --url)")
    parser.add_argument(
        "--token-env", default="CHIRPSTACK_API_KEY", help="environment variable holding the API key"
    )
    parser.add_argument("--skip-unmapped", action="store_true", help="list unmapped devices, import the rest")
    parser.add_argument("--update", action="store_true", help="replace entries that differ (default: refuse)")
    parser.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    inventory_arg(parser)
    defaults_args(parser)
    profiles_arg(parser)
    parser.set_defaults(handler=_chirpstack)


def _fail(message: str) -> int:
    print(f"linli inventory: {message}", file=sys.stderr)
    return 2


def _chirpstack(args: argparse.Namespace) -> int:
    from device_profiles.chirpstack import ChirpStackError, DeviceMap, fetch_devices, load_export, rows
    from device_profiles.errors import ProfileError
    from device_profiles.inventory_cli import add_to_inventory, defaults_of, load_profiles
    from device_profiles.inventory_table import row_device

    try:
        profiles = load_profiles(args.dirs)
        device_map = DeviceMap.load(args.map)
        unknown = sorted({p for p in device_map.device_profiles.values() if p not in profiles.profiles})
        if unknown:
            return _fail(f"{args.map}: unknown linli profile(s) {', '.join(unknown)} (linli profiles list)")
        if args.export is not None:
            items, source = load_export(args.export), str(args.export)
        else:
            token = os.environ.get(args.token_env, "")
            if not token or not args.application:
                return _fail(f"--url needs --application and the API key in ${args.token_env}")
            items, source = fetch_devices(args.url, token=token, application_id=args.application), args.url
    except (ChirpStackError, ProfileError) as exc:
        return _fail(str(exc))
    defaults = defaults_of(args)
    devices = []
    problems: list[str] = []
    skipped: list[str] = []
    for number, (item, cells) in enumerate(rows(items, device_map), start=1):
        where = f"device {number} ({item.dev_eui}, {item.name or 'no name'})"
        if cells is None:
            named = item.device_profile_name or item.device_profile_id
            why = f"no mapping for ChirpStack device profile {named!r}"
            (skipped if args.skip_unmapped else problems).append(f"{where}: {why}")
            continue
        result = row_device(number, cells, defaults, profiles)
        if isinstance(result, list):
            problems.extend(f"{where}: column {p.column}: {p.reason}" for p in result)
        else:
            devices.append(result)
    for line in skipped:
        print(f"linli inventory: skipped {line}", file=sys.stderr)
    if problems:
        for line in problems:
            print(f"{source}: {line}", file=sys.stderr)
        return _fail(f"{len(problems)} problem(s) in {source}: {args.inventory} is unchanged")
    return add_to_inventory(
        args.inventory, devices, profiles, update=args.update, dry_run=args.dry_run, source=source
    )

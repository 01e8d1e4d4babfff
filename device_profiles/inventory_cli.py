"""``linli inventory``: the device inventory from the installer's spreadsheet, and back.

    linli inventory import devices.csv|.xlsx --inventory inventory.yaml --community C --gateway G
    linli inventory import gateway.yaml --inventory cloud.yaml   another inventory's devices
    linli inventory export --inventory inventory.yaml --output devices.csv|.xlsx|-
    linli inventory diff BEFORE AFTER          inventories or tables; exit 1 when they differ
    linli inventory chirpstack ...             devices from a ChirpStack v4 server or its export

An import checks every row (profile known and for the type, ids the profile can decode, numbers in
range, a resident's living-alone flag) and writes nothing unless all pass; then it adds the new
devices to the inventory, atomically. A running edge agent notices the new file and reloads it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device_profiles.engine import ProfileSet
    from device_profiles.inventory import Device, Inventory
    from device_profiles.inventory_table import Defaults


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "inventory", help="device inventory: import, export, diff", description=__doc__.split("\n\n")[0]
    )
    commands = parser.add_subparsers(dest="inventory_command", required=True, metavar="SUBCOMMAND")

    imp = commands.add_parser("import", help="add the devices of a CSV or XLSX file to the inventory")
    imp.add_argument(
        "table",
        type=Path,
        metavar="FILE",
        help="devices.csv, devices.xlsx, or another inventory (.yaml/.json)",
    )
    _inventory_arg(imp)
    _defaults_args(imp)
    imp.add_argument("--sheet", help="the XLSX sheet (default: the first)")
    imp.add_argument("--update", action="store_true", help="replace entries that differ (default: refuse)")
    imp.add_argument("--dry-run", action="store_true", help="check and report, write nothing")
    _profiles_arg(imp)
    imp.set_defaults(handler=_import)

    exp = commands.add_parser("export", help="write the inventory as a CSV or XLSX table")
    _inventory_arg(exp)
    exp.add_argument("--output", "-o", required=True, help="devices.csv, devices.xlsx, or - (CSV on stdout)")
    exp.add_argument("--community", help="only this community's devices")
    exp.add_argument("--gateway", help="only this gateway's devices")
    exp.set_defaults(handler=_export)

    dif = commands.add_parser("diff", help="devices added, removed and changed between two files")
    dif.add_argument("before", type=Path, help="an inventory (.yaml/.json) or a table (.csv/.xlsx)")
    dif.add_argument("after", type=Path)
    _defaults_args(dif)
    _profiles_arg(dif)
    dif.set_defaults(handler=_diff)

    from device_profiles.chirpstack_cli import register_chirpstack

    register_chirpstack(
        commands, inventory_arg=_inventory_arg, defaults_args=_defaults_args, profiles_arg=_profiles_arg
    )


def _inventory_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--inventory", type=Path, required=True, help="the inventory file (created when missing)"
    )


def _defaults_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--community", help="community of rows without a community column")
    parser.add_argument("--gateway", help="gateway of rows without a gateway column")
    parser.add_argument("--lat", type=float, help="latitude of rows without one (the compound's)")
    parser.add_argument("--lon", type=float, help="longitude of rows without one")


def _profiles_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profiles-dir",
        dest="dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also load the profiles under DIR (repeatable)",
    )


def load_profiles(dirs: list[Path]) -> ProfileSet:
    from device_profiles.engine import ProfileSet

    return ProfileSet.shipped_and(*dirs)


def defaults_of(args: argparse.Namespace) -> Defaults:
    from device_profiles.inventory_table import Defaults

    return Defaults(community=args.community, gateway=args.gateway, lat=args.lat, lon=args.lon)


def _fail(message: str) -> int:
    print(f"linli inventory: {message}", file=sys.stderr)
    return 2


def read_inventory(path: Path, *, missing_ok: bool) -> Inventory:
    from device_profiles.inventory import Inventory

    if missing_ok and not path.exists():
        return Inventory(path=path)
    return Inventory.load(path)


def add_to_inventory(
    path: Path, incoming: list[Device], profiles: ProfileSet, *, update: bool, dry_run: bool, source: str
) -> int:
    """Merge `incoming` into the inventory at `path` and write it; print what happened. Exit status."""
    from device_profiles.inventory import Inventory, InventoryError
    from device_profiles.inventory_changes import merge

    try:
        existing = read_inventory(path, missing_ok=True)
    except InventoryError as exc:
        return _fail(str(exc))
    result = merge(existing, incoming, update=update)
    if result.conflicts:
        for change in result.conflicts:
            what = str(change).split(": ", 1)[1]
            print(
                f"linli inventory: {source}: {change.device_id} is already in {path} as a different entry "
                f"({what}); use --update to replace it",
                file=sys.stderr,
            )
        return _fail(f"{len(result.conflicts)} conflict(s): {path} is unchanged")
    try:
        merged = Inventory(result.devices, path=path)
        merged.check_profiles(profiles)
    except InventoryError as exc:
        return _fail(f"{exc}: {path} is unchanged")
    for change in result.updated:
        print(str(change))
    summary = (
        f"{path}: {len(result.added)} added, {len(result.updated)} updated, "
        f"{len(result.unchanged)} unchanged ({len(merged)} devices)"
    )
    if dry_run:
        print(f"{summary}; dry run, nothing written")
        return 0
    if result.added or result.updated or not path.exists():
        merged.dump(path)
    print(summary)
    return 0


def _import(args: argparse.Namespace) -> int:
    from device_profiles.errors import ProfileError
    from device_profiles.inventory import InventoryError
    from device_profiles.inventory_table import TableError, is_table, read_table

    try:
        profiles = load_profiles(args.dirs)
    except ProfileError as exc:
        return _fail(str(exc))
    try:
        if is_table(args.table):
            devices = read_table(args.table, defaults=defaults_of(args), profiles=profiles, sheet=args.sheet)
        else:  # another inventory: a gateway's approvals carried to the cloud's copy
            devices = list(read_inventory(args.table, missing_ok=False))
    except TableError as exc:
        for problem in exc.problems:
            print(f"{args.table}: {problem}", file=sys.stderr)
        return _fail(f"{len(exc.problems)} problem(s) in {args.table}: {args.inventory} is unchanged")
    except InventoryError as exc:
        return _fail(str(exc))
    return add_to_inventory(
        args.inventory, devices, profiles, update=args.update, dry_run=args.dry_run, source=str(args.table)
    )


def _export(args: argparse.Namespace) -> int:
    from device_profiles.inventory import InventoryError
    from device_profiles.inventory_table import table_row, write_csv, write_table

    try:
        inventory = read_inventory(args.inventory, missing_ok=False)
    except InventoryError as exc:
        return _fail(str(exc))
    devices = [
        d
        for d in inventory
        if (args.community is None or d.community_id == args.community)
        and (args.gateway is None or d.gateway_id == args.gateway)
    ]
    if args.output == "-":
        write_csv(sys.stdout, [table_row(d) for d in devices])  # type: ignore[arg-type]
        return 0
    try:
        count = write_table(args.output, devices)
    except (InventoryError, OSError) as exc:
        return _fail(str(exc))
    print(f"{args.output}: {count} devices", file=sys.stderr)
    return 0


def _devices_of(path: Path, args: argparse.Namespace, profiles: ProfileSet) -> list[Device]:
    from device_profiles.inventory_table import is_table, read_table

    if is_table(path):
        return read_table(path, defaults=defaults_of(args), profiles=profiles)
    return list(read_inventory(path, missing_ok=False))


def _diff(args: argparse.Namespace) -> int:
    from device_profiles.errors import ProfileError
    from device_profiles.inventory import InventoryError
    from device_profiles.inventory_changes import diff
    from device_profiles.inventory_table import TableError

    try:
        profiles = load_profiles(args.dirs)
        before = _devices_of(args.before, args, profiles)
        after = _devices_of(args.after, args, profiles)
    except TableError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return _fail(str(exc))
    except (InventoryError, ProfileError) as exc:
        return _fail(str(exc))
    changes = diff(before, after)
    for change in changes:
        print(change)
    counts = {k: sum(c.kind == k for c in changes) for k in ("added", "removed", "changed")}
    print(
        f"{counts['added']} added, {counts['removed']} removed, {counts['changed']} changed", file=sys.stderr
    )
    return 1 if changes else 0

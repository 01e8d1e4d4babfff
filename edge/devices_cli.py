"""``linli edge devices``: the devices this gateway heard or was told of that its inventory lacks.

    linli edge devices pending --config edge.toml [--json]
    linli edge devices approve ID --config edge.toml [--type T] [--profile P] [--building B]
        [--unit U] [--room R] --lat LAT --lon LON [--resident R --living-alone yes|no] [--wait S]

``approve`` writes the inventory entry (checked like a spreadsheet row: the profile decodes the
id, the type is the profile's) into the agent's inventory file, atomically; the running agent
sees the new file within ``discovery.watch_interval_s``, reloads it, and the device's next
message is data. ``--wait`` returns once the agent has taken it up (its pending entry gone).
"""

from __future__ import annotations

import argparse
import base64
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.config import EdgeConfig
    from edge.pending import PendingDevice


def register_devices(commands: argparse._SubParsersAction[Any]) -> None:
    devices = commands.add_parser("devices", help="devices outside the inventory: list and approve")
    sub = devices.add_subparsers(dest="devices_command", required=True, metavar="COMMAND")

    pending = sub.add_parser("pending", help="devices heard or discovered that the inventory lacks")
    pending.add_argument("--config", type=Path, required=True)
    pending.add_argument("--json", action="store_true", help="one JSON object per line, payload in base64")
    pending.set_defaults(handler=_pending)

    approve = sub.add_parser("approve", help="add a pending device to the inventory")
    approve.add_argument("device_id", metavar="ID")
    approve.add_argument("--config", type=Path, required=True)
    approve.add_argument("--type", dest="device_type", help="device type (default: its profile's)")
    approve.add_argument("--profile", help="profile id (default: the one that decoded it)")
    for name in ("building", "unit", "room", "resident"):
        approve.add_argument(f"--{name}")
    approve.add_argument("--living-alone", choices=("yes", "no"), help="given with --resident")
    approve.add_argument("--lat", type=float, help="WGS 84 latitude")
    approve.add_argument("--lon", type=float, help="WGS 84 longitude")
    approve.add_argument("--update", action="store_true", help="replace an inventory entry that differs")
    approve.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="S",
        help="wait up to S seconds for the agent to take it up",
    )
    approve.set_defaults(handler=_approve)


def _fail(message: object) -> int:
    print(f"linli edge: {message}", file=sys.stderr)
    return 2


def _config(path: Path) -> EdgeConfig:
    from edge.config import load_config

    return load_config(path, check_files=False)


def pending_devices(config: EdgeConfig) -> list[PendingDevice]:
    """The pending devices in the agent's buffer (read-only, beside a running agent)."""
    from edge.cli import read_only_store

    store = read_only_store(config)
    try:
        return store.pending_devices()
    finally:
        store.close()


def _when(us: int) -> str:
    return datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")


def _pending(args: argparse.Namespace) -> int:
    import msgspec

    try:
        rows = pending_devices(_config(args.config))
    except EdgeError as exc:
        return _fail(exc)
    if args.json:
        enc = msgspec.json.Encoder()
        for d in rows:
            doc = msgspec.to_builtins(d)
            doc["payload"] = base64.b64encode(d.payload).decode()
            doc["first_seen"], doc["last_seen"] = _when(d.first_us), _when(d.last_us)
            print(enc.encode(doc).decode())
        return 0
    for d in rows:
        what = f"{d.device_type} by {d.profile}" if d.profile else "no loaded profile decodes it"
        print(f"{d.device_id}\t{d.source}\t{what}\t{d.messages} message(s), last {_when(d.last_us)}")
        if d.details:
            shown = ", ".join(f"{k} {v}" for k, v in d.details.items() if v)
            print(f"\t{shown}")
        if d.topic is not None:
            text = d.payload[:120].decode("utf-8", errors="replace")
            preview = "".join(
                c if c.isprintable() else " " for c in text
            )  # a device's bytes, not a terminal's
            print(f"\tfirst message on {d.topic}: {preview}")
    print(
        f"# {len(rows)} pending; add one with: linli edge devices approve ID --config {args.config} "
        "--lat LAT --lon LON [--building B --unit U --room R]",
        file=sys.stderr,
    )
    return 0


def _approve(args: argparse.Namespace) -> int:
    from device_profiles.errors import ProfileError
    from device_profiles.inventory_cli import add_to_inventory
    from device_profiles.inventory_table import Defaults, row_device
    from edge.preflight import load_profiles

    try:
        config = _config(args.config)
        profiles = load_profiles(config)
        known = {d.device_id: d for d in pending_devices(config)} if config.buffer.path.exists() else {}
    except (EdgeError, ProfileError) as exc:
        return _fail(exc)
    entry = known.get(args.device_id)
    if entry is None and args.profile is None:
        return _fail(
            f"{args.device_id!r} is not pending here (linli edge devices pending); "
            "give --profile to add it anyway"
        )
    cells = {
        "id": args.device_id,
        "profile": args.profile or (entry.profile if entry else None) or "",
        "type": args.device_type or "",
        "building": args.building or "",
        "unit": args.unit or "",
        "room": args.room or "",
        "lat": "" if args.lat is None else repr(args.lat),
        "lon": "" if args.lon is None else repr(args.lon),
        "resident": args.resident or "",
        "living_alone": args.living_alone or "",
    }
    if not cells["profile"]:
        return _fail(f"no loaded profile decodes {args.device_id!r}: give --profile (linli profiles list)")
    result = row_device(
        0, cells, Defaults(community=config.community_id, gateway=config.gateway_id), profiles
    )
    if isinstance(result, list):
        for problem in result:
            print(f"linli edge: --{problem.column.replace('_', '-')}: {problem.reason}", file=sys.stderr)
        return 2
    code = add_to_inventory(
        config.inventory, [result], profiles, update=args.update, dry_run=False, source="approve"
    )
    if code or not args.wait:
        return code
    deadline = time.monotonic() + args.wait
    while time.monotonic() < deadline:
        try:
            if not any(d.device_id == args.device_id for d in pending_devices(config)):
                print(f"the agent serves {args.device_id} now")
                return 0
        except EdgeError as exc:
            return _fail(exc)
        time.sleep(0.2)
    return _fail(f"the agent has not taken {args.device_id} up within {args.wait:g} s: is it running?")

"""``linli edge commands``: the commands the cloud sent this gateway and what became of them.

    linli edge commands --config edge.toml [--limit N] [--json]

Read from the agent's buffer (read-only, beside a running agent): newest first, each with its
device, parameters, state at the gateway, the reason of a failure, and whether the cloud has
heard its latest state yet (docs/commands.md).
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from edge.errors import EdgeError


def register_commands(commands: argparse._SubParsersAction[Any]) -> None:
    parser = commands.add_parser("commands", help="commands from the cloud and their states at this gateway")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=50, help="the newest N (default 50)")
    parser.add_argument("--json", action="store_true", help="one JSON object per line")
    parser.set_defaults(handler=_list)


def _when(us: int | None) -> str:
    return "-" if us is None else datetime.fromtimestamp(us / 1e6, UTC).isoformat(timespec="seconds")


def _list(args: argparse.Namespace) -> int:
    import msgspec

    from edge import command_queue
    from edge.cli import read_only_store
    from edge.config import load_config

    try:
        store = read_only_store(load_config(args.config, check_files=False))
        try:
            rows = store.read("reading the commands failed", command_queue.recent, max(1, args.limit))
            unheard = {
                r.command_id
                for r in store.read("reading the reports failed", command_queue.unreported, 1_000_000)
            }
        finally:
            store.close()
    except EdgeError as exc:
        print(f"linli edge: {exc}", file=sys.stderr)
        return 2
    if args.json:
        enc = msgspec.json.Encoder()
        for c in rows:
            doc = msgspec.to_builtins(c) | {"reported": c.command_id not in unheard}
            print(enc.encode(doc).decode())
        return 0
    for c in rows:
        params = " ".join(f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in c.params.items())
        told = "" if c.command_id not in unheard else "  (not yet reported to the cloud)"
        print(f"{_when(c.state_at_us)}  {c.device_id}  {c.name} {params}".rstrip() + f"  {c.state}{told}")
        if c.reason:
            print(f"\t{c.reason}")
    print(f"# {len(rows)} command(s), newest first", file=sys.stderr)
    return 0

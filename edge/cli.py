"""``linli edge ...``: run the agent, check a configuration, list the quarantine, approve devices.

Registered with the root ``linli`` command through the ``linli.commands`` entry point; also
runnable as ``python -m edge ...``.
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgspec

from edge.errors import EdgeError

if TYPE_CHECKING:
    from edge.buffer import Store
    from edge.config import EdgeConfig


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    edge = subparsers.add_parser("edge", help="the gateway's edge agent")
    commands = edge.add_subparsers(dest="edge_command", required=True, metavar="COMMAND")

    run = commands.add_parser("run", help="run the agent until SIGTERM")
    run.add_argument("--config", type=Path, required=True, help="the agent's TOML configuration")
    run.set_defaults(handler=_run)

    check = commands.add_parser("check-config", help="validate a configuration and exit")
    check.add_argument("--config", type=Path, required=True)
    check.set_defaults(handler=_check)

    quarantine = commands.add_parser("quarantine", help="inspect quarantined input")
    qcommands = quarantine.add_subparsers(dest="quarantine_command", required=True, metavar="COMMAND")
    qlist = qcommands.add_parser("list", help="the newest quarantined messages")
    qlist.add_argument("--config", type=Path, required=True)
    qlist.add_argument("--limit", type=int, default=50)
    qlist.add_argument("--json", action="store_true", help="one JSON object per line, payload in base64")
    qlist.set_defaults(handler=_quarantine_list)

    from edge.commands_cli import register_commands
    from edge.devices_cli import register_devices

    register_devices(commands)
    register_commands(commands)


def _fail(exc: Exception) -> int:
    print(f"linli edge: {exc}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.errors import PreflightError
    from edge.handoff import exec_agent
    from edge.logs import configure, get_logger
    from edge.preflight import preflight

    try:
        config = load_config(args.config)
    except EdgeError as exc:
        return _fail(exc)
    configure(config.log_level, fmt=config.log_format)
    try:
        loaded = preflight(config)
    except PreflightError as exc:  # what check-config refuses, run refuses: exit as it does
        get_logger("edge.agent").error("refused", problems=len(exc.problems), error=str(exc))
        return _fail(exc)
    try:
        return exec_agent(config, loaded)  # the agent, without the validating models (edge.handoff)
    except EdgeError as exc:
        get_logger("edge.agent").error("fatal", error=str(exc))
        return 1


def _check(args: argparse.Namespace) -> int:
    from edge.config import load_config
    from edge.preflight import preflight

    try:
        config = load_config(args.config)
        loaded = preflight(config)
    except EdgeError as exc:
        return _fail(exc)
    for warning in loaded.warnings:
        print(f"linli edge: warning: {warning}", file=sys.stderr)
    print(
        f"ok: gateway {config.gateway_id} in {config.community_id}; {len(loaded.inventory)} devices, "
        f"{len(loaded.profiles)} profiles; subscriptions {', '.join(loaded.filters)}; "
        f"field {config.field.url}; cloud {config.cloud.url}; "
        f"buffer {config.buffer.path} (cap {config.buffer.max_bytes} bytes)"
    )
    return 0


def read_only_store(config: EdgeConfig) -> Store:
    """The agent's buffer opened read-only (beside a running agent); `EdgeError` when it cannot be."""
    from edge.buffer import Store

    if not config.buffer.path.exists():
        raise EdgeError(f"no buffer at {config.buffer.path}")
    return Store(
        config.buffer.path,
        max_bytes=config.buffer.max_bytes,
        telemetry_max_age_s=config.buffer.telemetry_max_age_s,
        durability=config.buffer.durability,
        chunk_max=config.uplink.batch_max_readings,
        quarantine_max_rows=config.buffer.quarantine_max_rows,
        quarantine_max_payload_bytes=config.buffer.quarantine_max_payload_bytes,
        wall=lambda: 0.0,
        read_only=True,
    )


def _quarantine_list(args: argparse.Namespace) -> int:
    from edge.config import load_config

    try:
        config = load_config(args.config, check_files=False)
    except EdgeError as exc:
        return _fail(exc)
    try:
        store = read_only_store(config)
        try:
            rows = store.quarantine_rows(args.limit)
            total = store.counters().get("quarantined", 0)
        finally:
            store.close()
    except EdgeError as exc:  # a buffer that cannot be read: SQLite's reason, not a traceback
        return _fail(exc)
    enc = msgspec.json.Encoder()
    for rid, entry, size in rows:
        at = datetime.fromtimestamp(entry.at_us / 1e6, UTC).isoformat(timespec="milliseconds")
        if args.json:
            doc = {
                "id": rid,
                "at": at,
                "topic": entry.topic,
                "reason": entry.reason,
                "message": entry.message,
                "size": size,
                "payload_b64": base64.b64encode(entry.payload).decode(),
            }
            print(enc.encode(doc).decode())
        else:
            preview = entry.payload[:80].decode("utf-8", errors="replace").replace("\n", " ")
            print(f"{rid}\t{at}\t{entry.reason}\t{entry.topic}\t{entry.message}\t{size}B\t{preview}")
    if not args.json:
        print(f"# {len(rows)} shown, {total} quarantined since the buffer was created", file=sys.stderr)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m edge")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(["edge", *(sys.argv[1:] if argv is None else argv)])
    code: int = args.handler(args)
    return code

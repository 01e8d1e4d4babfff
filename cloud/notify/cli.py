"""``linli notify test --config cloud.toml --channel NAME``: send a test message through one
channel and print the API's answer (exit status 0 when it was accepted, 1 when not, 2 for a
configuration problem)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    notify = subparsers.add_parser("notify", help="push channels: send a test message")
    commands = notify.add_subparsers(dest="notify_command", required=True, metavar="COMMAND")
    test = commands.add_parser("test", help="send a test message through a channel and print the answer")
    test.add_argument(
        "--config", type=Path, required=True, help="the cloud configuration ([notify.channels])"
    )
    test.add_argument("--channel", required=True, help="a channel name of [notify.channels]")
    test.add_argument("--mobile", action="append", default=[], help="a mobile number to mention (repeatable)")
    test.set_defaults(handler=_test)


def _test(args: argparse.Namespace) -> int:
    from datetime import datetime

    from cloud.config import load_settings
    from cloud.errors import CloudError
    from cloud.notify.channels import build_channel
    from cloud.notify.message import Message

    try:
        settings = load_settings(args.config)
    except CloudError as exc:
        print(f"linli notify: {exc}", file=sys.stderr)
        return 2
    config = settings.notify.channels.get(args.channel)
    if config is None:
        known = ", ".join(sorted(settings.notify.channels)) or "none"
        print(
            f"linli notify: no channel {args.channel!r} in [notify.channels] (configured: {known})",
            file=sys.stderr,
        )
        return 2
    message = Message(
        reason="test",
        severity="info",
        title_zh="linli 推送测试",
        title_en="linli push test",
        time=datetime.now().astimezone().isoformat(timespec="seconds"),
        link=settings.incidents.console_url,
    )
    channel = build_channel(args.channel, config)
    try:
        outcome = channel.send(message, [{"name": m, "mobile": m} for m in args.mobile], key=0)
    finally:
        channel.close()
    answer = f"{outcome.status} code={outcome.code or '-'} {outcome.message}".rstrip()
    print(f"{args.channel} ({config.kind}): {answer}")
    return 0 if outcome.status == "sent" else 1

"""The `linli` command line.

One root parser. Each package contributes its own subcommands through entry points, so this
module never imports `edge`, `cloud` or `simulators`:

- group ``linli.commands``: ``register(subparsers)`` adds a top-level command (``profiles``,
  ``sim``, ``edge``, ``cloud``, ``db``, ``demo``);
- group ``linli.bench``: ``register(subparsers)`` adds a ``linli bench <name>`` benchmark.

A registered parser sets ``handler`` (``Callable[[argparse.Namespace], int]``) with
``set_defaults``; the handler's return value is the exit status.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import entry_points
from typing import Any

Handler = Callable[[argparse.Namespace], int]
Registrar = Callable[["argparse._SubParsersAction[Any]"], None]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="linli", description="linli: edge-to-cloud pipeline for community sensors."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    bench = commands.add_parser("bench", help="run a benchmark and print its figures as JSON")
    benches = bench.add_subparsers(dest="bench", required=True, metavar="BENCHMARK")
    for group, target in (("linli.commands", commands), ("linli.bench", benches)):
        for entry in sorted(entry_points(group=group), key=lambda e: e.name):
            register: Registrar = entry.load()
            register(target)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # Output piped into `head` and the like: not an error of ours.
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    raise SystemExit(main())

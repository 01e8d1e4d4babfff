"""``python -m cloud ...``: the same commands as ``linli cloud`` / ``linli db``."""

from __future__ import annotations

import argparse
import sys

from cloud import cli, cli_db


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m cloud")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    cli.register(commands)
    cli_db.register(commands)
    args = parser.parse_args()
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())

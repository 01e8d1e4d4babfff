"""``linli db migrate --database URL``: apply the schema migrations."""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

from cloud.errors import CloudError


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    db = subparsers.add_parser("db", help="the cloud database: migrations")
    commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    mig = commands.add_parser("migrate", help="apply pending migrations (idempotent)")
    mig.add_argument("--database", required=True, help="postgresql://user@host:port/dbname")
    mig.add_argument(
        "--no-timescaledb", action="store_true", help="do not create the timescaledb extension (plain tables)"
    )
    mig.set_defaults(handler=_migrate)


def _migrate(args: argparse.Namespace) -> int:
    from cloud.store.migrate import migrate_url

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        applied = migrate_url(args.database, timescaledb=not args.no_timescaledb)
    except CloudError as exc:
        print(f"linli db migrate: {exc}", file=sys.stderr)
        return 2
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0

"""``linli db migrate``: apply the schema migrations.

The database comes from ``--config cloud.toml`` (its ``database_url``, which
``LINLI_CLOUD_DATABASE_URL`` overrides, as for ``linli cloud ingest``), or from
``LINLI_CLOUD_DATABASE_URL`` alone. ``--database URL`` still works, but a password in it is
visible to every user of the machine in the process list.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cloud.errors import CloudError, ConfigError
from device_profiles.config_view import ConfigProblem

#: The variable `linli cloud ingest` reads for ``database_url`` too.
DATABASE_URL_VAR = "LINLI_CLOUD_DATABASE_URL"


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    db = subparsers.add_parser("db", help="the cloud database: migrations")
    commands = db.add_subparsers(dest="db_command", required=True, metavar="COMMAND")
    mig = commands.add_parser(
        "migrate",
        help="apply pending migrations (idempotent)",
        description=f"Apply pending migrations to the database named by --config or {DATABASE_URL_VAR}.",
    )
    source = mig.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        type=Path,
        help=f"the cloud's TOML configuration (its database_url; {DATABASE_URL_VAR} overrides it)",
    )
    source.add_argument(
        "--database",
        metavar="URL",
        help="postgresql://user@host:port/dbname; a password here shows in the process list: "
        f"prefer --config or {DATABASE_URL_VAR}",
    )
    mig.add_argument(
        "--no-timescaledb", action="store_true", help="do not create the timescaledb extension (plain tables)"
    )
    mig.set_defaults(handler=_migrate)


def database_url(args: argparse.Namespace) -> str:
    """The URL from ``--database``, ``--config`` or the environment; `ConfigError` if none."""
    if args.database:
        return str(args.database)
    if args.config is not None:
        from cloud.config import load_settings

        return load_settings(args.config, check_files=False).database_url
    url = os.environ.get(DATABASE_URL_VAR, "")
    if not url:
        raise ConfigError("", f"no database: give --config cloud.toml or set {DATABASE_URL_VAR}")
    if not url.startswith(("postgresql://", "postgres://")):
        detail = "must be a postgresql://user@host:port/dbname URL"
        raise ConfigError(problems=[ConfigProblem("", detail, DATABASE_URL_VAR)])
    return url


def _migrate(args: argparse.Namespace) -> int:
    from cloud.store.migrate import migrate_url

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        applied = migrate_url(database_url(args), timescaledb=not args.no_timescaledb)
    except CloudError as exc:
        print(f"linli db migrate: {exc}", file=sys.stderr)
        return 2
    print(f"applied: {', '.join(applied)}" if applied else "up to date")
    return 0

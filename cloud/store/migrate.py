"""Versioned SQL migrations: ``cloud/migrations/NNNN_name.sql``, applied in order, each once.

`migrate` takes a session advisory lock (so two workers or two ``linli db migrate`` never migrate
at once), applies each pending file in its own transaction, and records it in
``schema_migrations`` with the SHA-256 of its text. A recorded file whose text has since changed
is refused: migrations are append-only.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg

from cloud.errors import MigrationError, StoreUnavailable

log = logging.getLogger("linli.cloud.migrate")

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
#: Arbitrary but fixed key for ``pg_advisory_lock``: "linli" in ASCII.
MIGRATION_LOCK_KEY = 0x6C696E6C69

_BOOKKEEPING = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    name       text        NOT NULL,
    checksum   text        NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def shipped_migrations() -> list[Migration]:
    """The migration files packaged with `cloud`, in version order."""
    found: list[Migration] = []
    for entry in resources.files("cloud.migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(Migration(match[1], match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError("", f"two migration files share a version: {versions}")
    return found


def ensure_timescaledb(conn: psycopg.Connection[Any]) -> bool:
    """Create the timescaledb extension when the server offers it; True when it is installed.

    A server that lists the extension but cannot load it (not in ``shared_preload_libraries``,
    or not allowed for this role) gives a warning and plain PostgreSQL.
    """
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'),"
        " EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'timescaledb')"
    ).fetchone()
    installed, available = (bool(row[0]), bool(row[1])) if row else (False, False)
    if installed or not available:
        return installed
    preload = conn.execute("SELECT current_setting('shared_preload_libraries')").fetchone()
    if "timescaledb" not in str(preload[0] if preload else ""):
        # Creating it now would fail with a FATAL error that also ends this session.
        log.warning(
            "timescaledb is installed on the server but not in shared_preload_libraries:"
            " using plain PostgreSQL"
        )
        return False
    try:
        with conn.transaction():
            conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
    except psycopg.errors.Error as exc:
        log.warning("timescaledb is available but could not be created (%s): using plain PostgreSQL", exc)
        return False
    return True


def migrate(
    conn: psycopg.Connection[Any],
    *,
    migrations: list[Migration] | None = None,
    timescaledb: bool = True,
) -> list[str]:
    """Apply pending migrations; returns the versions applied now (empty when up to date).

    `conn` must be in autocommit mode: each migration gets its own transaction.
    """
    if not conn.autocommit:
        raise MigrationError("", "migrate needs an autocommit connection")
    todo = shipped_migrations() if migrations is None else migrations
    applied_now: list[str] = []
    try:
        conn.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK_KEY,))
        try:
            if timescaledb:
                ensure_timescaledb(conn)
            conn.execute(_BOOKKEEPING)
            recorded = {
                str(v): str(c) for v, c in conn.execute("SELECT version, checksum FROM schema_migrations")
            }
            known = {m.version for m in todo}
            for version in sorted(set(recorded) - known):
                log.warning("database has migration %s, which this version does not know", version)
            for m in todo:
                if m.version in recorded:
                    if recorded[m.version] != m.checksum:
                        raise MigrationError(
                            m.version, f"{m.version}_{m.name}.sql changed after it was applied (checksum)"
                        )
                    continue
                try:
                    with conn.transaction():
                        conn.execute(m.sql.encode())
                        conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (m.version, m.name, m.checksum),
                        )
                except psycopg.OperationalError:
                    raise
                except psycopg.Error as exc:
                    raise MigrationError(m.version, f"{m.version}_{m.name}.sql failed: {exc}") from exc
                log.info("applied migration %s_%s", m.version, m.name)
                applied_now.append(m.version)
        finally:
            if not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK_KEY,))
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while migrating: {exc}") from exc
    return applied_now


def migrate_url(database_url: str, *, timescaledb: bool = True) -> list[str]:
    """`migrate` over a connection of its own."""
    try:
        conn = psycopg.connect(database_url, autocommit=True)
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"cannot connect to the database: {exc}") from exc
    with conn:
        return migrate(conn, timescaledb=timescaledb)

"""Session-wide real services for the test suite.

- ``mosquitto``: a private Mosquitto 2 on a free loopback port (or ``LINLI_TEST_MQTT_URL``).
- ``make_broker``: starts more private brokers (field, cloud, TLS, mutual TLS) for one test.
- ``pg_server``: a private PostgreSQL 15 cluster with TimescaleDB preloaded (or the server named by
  ``LINLI_TEST_DATABASE_URL``, an admin DSN), with a template database that has the extension.
- ``database_url``: a fresh database cloned from that template, dropped after the test.

Everything is stopped at the end of the session; `scripts/check-no-strays` proves no process is
left behind. Nothing here is a mock: tests that use these fixtures talk to the real servers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from simulators.services import MosquittoBroker, PostgresCluster, TlsFiles, make_test_pki
from tests.basetemp import private_basetemp

TEMPLATE_DB = f"linli_template_{os.getpid()}"


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """This session's temporary files in a folder no other session touches (`tests.basetemp`)."""
    if config.option.basetemp is None:
        config.option.basetemp = str(private_basetemp())


@dataclass(frozen=True, slots=True)
class BrokerEndpoint:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"mqtt://{self.host}:{self.port}"


@dataclass(slots=True)
class PgServer:
    admin_dsn: str
    license: str
    version: str
    template: str = TEMPLATE_DB

    def dsn(self, dbname: str) -> str:
        parts = urlsplit(self.admin_dsn)
        return urlunsplit(parts._replace(path=f"/{dbname}"))

    def create_database(self) -> str:
        name = f"t_{uuid.uuid4().hex[:12]}"
        statement = sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
            sql.Identifier(name), sql.Identifier(self.template)
        )
        # A backend that used the template may still be exiting after its client disconnected.
        deadline = time.monotonic() + 10
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            while True:
                try:
                    conn.execute(statement)
                    return name
                except psycopg.errors.ObjectInUse:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.05)

    def drop_database(self, name: str) -> None:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            if name == self.template:
                conn.execute(sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE false").format(sql.Identifier(name)))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def service_root() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="linli-test-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def mosquitto(service_root: Path) -> Iterator[BrokerEndpoint]:
    external = os.environ.get("LINLI_TEST_MQTT_URL")
    if external:
        parts = urlsplit(external)
        yield BrokerEndpoint(parts.hostname or "127.0.0.1", parts.port or 1883)
        return
    broker = MosquittoBroker(workdir=service_root / "mosquitto-shared")
    broker.start()
    try:
        yield BrokerEndpoint(broker.host, broker.port)
    finally:
        broker.stop()


@pytest.fixture(scope="session")
def test_pki(service_root: Path) -> TlsFiles:
    return make_test_pki(service_root / "pki")


@pytest.fixture
def make_broker(service_root: Path) -> Iterator[Callable[..., MosquittoBroker]]:
    """Factory for private brokers living for one test: ``make_broker(tls=..., require_client_cert=...)``."""
    brokers: list[MosquittoBroker] = []

    def make(**options: Any) -> MosquittoBroker:
        broker = MosquittoBroker(workdir=service_root / f"mosquitto-{uuid.uuid4().hex[:8]}", **options)
        brokers.append(broker)
        broker.start()
        return broker

    yield make
    for broker in brokers:
        broker.stop()


def _prepare_template(admin_dsn: str) -> tuple[str, str]:
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(TEMPLATE_DB)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(TEMPLATE_DB)))
    parts = urlsplit(admin_dsn)
    with psycopg.connect(urlunsplit(parts._replace(path=f"/{TEMPLATE_DB}")), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
        row = conn.execute(
            "SELECT current_setting('timescaledb.license'), extversion "
            "FROM pg_extension WHERE extname = 'timescaledb'"
        ).fetchone()
    assert row is not None
    # TimescaleDB's scheduler keeps a background worker connected to every database with the
    # extension, which would make ``CREATE DATABASE ... TEMPLATE`` fail as "being accessed by other
    # users": no connections to the template from now on, and end the ones it has.
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("ALTER DATABASE {} WITH IS_TEMPLATE true ALLOW_CONNECTIONS false").format(
                sql.Identifier(TEMPLATE_DB)
            )
        )
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (TEMPLATE_DB,)
        )
    return str(row[0]), str(row[1])


@pytest.fixture(scope="session")
def pg_server(service_root: Path) -> Iterator[PgServer]:
    external = os.environ.get("LINLI_TEST_DATABASE_URL")
    cluster: PostgresCluster | None = None
    if external:
        admin_dsn = external
    else:
        cluster = PostgresCluster(datadir=service_root / "pg", durable=False)
        cluster.start()
        admin_dsn = cluster.dsn()
    try:
        license_, version = _prepare_template(admin_dsn)
        server = PgServer(admin_dsn=admin_dsn, license=license_, version=version)
        _SESSION_FACTS["timescaledb"] = f"TimescaleDB {version}, license {license_}"
        yield server
        if external:
            server.drop_database(TEMPLATE_DB)
    finally:
        if cluster is not None:
            cluster.stop()


@pytest.fixture
def database_url(pg_server: PgServer) -> Iterator[str]:
    """A fresh database with TimescaleDB, for this test only."""
    name = pg_server.create_database()
    yield pg_server.dsn(name)
    pg_server.drop_database(name)


_SESSION_FACTS: dict[str, str] = {}


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for key, value in _SESSION_FACTS.items():
        terminalreporter.write_line(f"{key}: {value}")

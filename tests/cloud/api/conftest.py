"""The API on a migrated database with the incidents tests' people (plus an administrator),
served by uvicorn on a loopback port as ``linli cloud api`` serves it; `client` talks to it over
HTTP."""

from __future__ import annotations

import contextlib
import copy
import socket
import threading
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI

from cloud.api.accounts import add_user, create_key
from cloud.api.app import create_app
from cloud.api.deps import ApiState
from cloud.config import CloudSettings, build_settings
from cloud.incidents.people import People
from cloud.incidents.record import Context
from tests.cloud.incidents.conftest import PEOPLE

PASSWORD = "correct horse battery"  # noqa: S105 - the tests' accounts

API_PEOPLE: dict[str, Any] = copy.deepcopy(PEOPLE)
API_PEOPLE["staff"].append({"id": "a-root", "name": "管理员", "roles": ["admin"], "communities": ["*"]})


class Clock:
    """The API's clock, moved by the test."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def api_context() -> Context:
    return Context(people=People.model_validate(API_PEOPLE), console_url="http://console.test")


@pytest.fixture
def api_settings(migrated_url: str, tmp_path: Path) -> CloudSettings:
    schedules = tmp_path / "schedules.yaml"
    schedules.write_text(SCHEDULES, encoding="utf-8")
    return build_settings(
        {
            "database_url": migrated_url,
            "api": {"token_key_file": str(tmp_path / "api-token.key")},
            "commands": {"schedules": str(schedules)},
        }
    )


#: Every community's streetlights: dusk and dawn, dimmed late at night.
SCHEDULES = """
version: 1
communities:
  "*":
    on: {at: dusk}
    off: {at: dawn}
    dim: [{from: "23:00", to: "05:00", level_pct: 40}]
"""


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextlib.contextmanager
def serve(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on a free loopback port until the block ends; its base URL."""
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_config=None, access_log=False))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    pause = threading.Event()
    while not server.started and thread.is_alive():
        pause.wait(0.01)  # uvicorn sets `started` from its loop and offers no event to wait on
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


#: the application each `client` talks to
_APPS: dict[int, FastAPI] = {}


@pytest.fixture
def client(api_settings: CloudSettings, api_context: Context, clock: Clock) -> Iterator[httpx.Client]:
    app = create_app(api_settings, context=api_context, clock=clock)
    with serve(app) as url, httpx.Client(base_url=url, timeout=30) as c:
        _APPS[id(c)] = app
        try:
            yield c
        finally:
            del _APPS[id(c)]


def client_state(client: httpx.Client) -> ApiState:
    """The state of the application `client` talks to (in this process)."""
    state: ApiState = _APPS[id(client)].state.linli
    return state


@pytest.fixture
def accounts(migrated_url: str, api_context: Context) -> Callable[..., None]:
    """Give staff members a password (`PASSWORD`)."""

    def make(*staff_ids: str) -> None:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            for staff_id in staff_ids:
                add_user(conn, api_context.people, staff_id, PASSWORD)

    return make


@pytest.fixture
def api_key(migrated_url: str) -> Callable[..., str]:
    def make(*communities: str, name: str = "integrator", expires_at: datetime | None = None) -> str:
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            return create_key(conn, name=name, communities=list(communities), expires_at=expires_at)

    return make


def login(client: httpx.Client, staff_id: str, password: str = PASSWORD) -> dict[str, str]:
    """The headers of a logged-in staff member."""
    r = client.post("/api/v1/auth/token", data={"username": staff_id, "password": password})
    assert r.status_code == 200, r.text
    return {"Authorization": f"Bearer {r.json()['access_token']}"}

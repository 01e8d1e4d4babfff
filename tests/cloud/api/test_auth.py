"""Logging in, tokens, API keys, the login rate limit and a database that is down."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from cloud.api.accounts import AccountError, revoke_key, set_disabled, set_password
from cloud.api.app import create_app
from cloud.config import build_settings
from cloud.incidents.record import Context
from tests.cloud.api.conftest import PASSWORD, Clock, login, serve


def test_login_gives_a_token_that_says_who_the_caller_is(
    client: httpx.Client, accounts: Callable[..., None]
) -> None:
    accounts("w-zhang")
    r = client.get("/api/v1/auth/me", headers=login(client, "w-zhang"))
    assert r.status_code == 200
    me = r.json()
    assert (me["id"], me["kind"], me["roles"], me["communities"]) == (
        "w-zhang",
        "staff",
        ["grid_worker"],
        ["c01"],
    )
    assert "pii" in me["permissions"]
    assert "audit" not in me["permissions"]


@pytest.mark.parametrize(
    ("username", "password"), [("w-zhang", "wrong password!"), ("nobody", PASSWORD), ("k-li", PASSWORD)]
)
def test_a_wrong_password_an_unknown_login_and_a_staff_member_without_account_are_refused_alike(
    client: httpx.Client, accounts: Callable[..., None], username: str, password: str
) -> None:
    accounts("w-zhang")
    r = client.post("/api/v1/auth/token", data={"username": username, "password": password})
    assert r.status_code == 401
    assert r.json()["detail"] == "wrong login or password"
    assert r.headers["www-authenticate"] == "Bearer"


def test_no_credentials_and_forged_tokens_are_401(
    client: httpx.Client, accounts: Callable[..., None]
) -> None:
    accounts("w-zhang")
    assert client.get("/api/v1/auth/me").status_code == 401
    token = login(client, "w-zhang")["Authorization"]
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert client.get("/api/v1/auth/me", headers={"Authorization": forged}).status_code == 401
    assert client.get("/api/v1/auth/me", headers={"Authorization": "Bearer not-a-jwt"}).status_code == 401


def test_the_open_endpoints_answer_without_authentication(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"healthy": True, "database": "up", "detail": "database=up"}
    assert client.get("/openapi.json").status_code == 200
    assert client.get("/docs").status_code == 200
    metrics = client.get("/metrics")
    assert metrics.status_code == 200
    assert "linli_cloud_api_responses_2xx_total" in metrics.text


def test_an_access_token_expires(client: httpx.Client, accounts: Callable[..., None], clock: Clock) -> None:
    accounts("w-zhang")
    headers = login(client, "w-zhang")
    clock.advance(899)
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    clock.advance(2)
    r = client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401
    assert r.json()["detail"] == "token expired"


def test_a_refresh_token_is_used_once_and_a_second_use_revokes_the_account_tokens(
    client: httpx.Client, accounts: Callable[..., None]
) -> None:
    accounts("w-zhang")
    first = client.post("/api/v1/auth/token", data={"username": "w-zhang", "password": PASSWORD}).json()
    second = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert second.status_code == 200
    new = second.json()
    me = client.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {new['access_token']}"})
    assert me.json()["id"] == "w-zhang"
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert replay.status_code == 401
    assert "already used" in replay.json()["detail"]
    # the replay revoked the token issued meanwhile too: whoever holds it must log in again
    assert (
        client.post("/api/v1/auth/refresh", json={"refresh_token": new["refresh_token"]}).status_code == 401
    )
    assert client.post("/api/v1/auth/refresh", json={"refresh_token": "made-up"}).status_code == 401


def test_a_disabled_account_is_refused_at_once_and_a_new_password_ends_its_sessions(
    client: httpx.Client, accounts: Callable[..., None], migrated_url: str
) -> None:
    accounts("w-zhang")
    pair = client.post("/api/v1/auth/token", data={"username": "w-zhang", "password": PASSWORD}).json()
    headers = {"Authorization": f"Bearer {pair['access_token']}"}
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        set_disabled(conn, "w-zhang", True)
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 401
        r = client.post("/api/v1/auth/token", data={"username": "w-zhang", "password": PASSWORD})
        assert r.status_code == 401
        set_disabled(conn, "w-zhang", False)
        assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
        set_password(conn, "w-zhang", "another long password")
        assert (
            client.post("/api/v1/auth/refresh", json={"refresh_token": pair["refresh_token"]}).status_code
            == 401
        )
        with pytest.raises(AccountError, match="no account"):
            set_disabled(conn, "k-li", True)


def test_a_disabled_account_in_use_is_refused_within_the_auth_cache_time(
    client: httpx.Client, accounts: Callable[..., None], migrated_url: str, clock: Clock
) -> None:
    accounts("w-zhang")
    headers = login(client, "w-zhang")
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        set_disabled(conn, "w-zhang", True)
    clock.advance(4.9)  # checked 4.9 s ago: still trusted ([api] auth_cache_s = 5)
    assert client.get("/api/v1/auth/me", headers=headers).status_code == 200
    clock.advance(0.1)
    r = client.get("/api/v1/auth/me", headers=headers)
    assert r.status_code == 401
    assert "disabled" in r.json()["detail"]


def test_failed_logins_are_limited_per_account_and_per_address(
    client: httpx.Client, accounts: Callable[..., None], clock: Clock
) -> None:
    accounts("w-zhang", "k-li")
    for _ in range(5):
        r = client.post("/api/v1/auth/token", data={"username": "w-zhang", "password": "wrong password!"})
        assert r.status_code == 401
    r = client.post("/api/v1/auth/token", data={"username": "w-zhang", "password": PASSWORD})
    assert r.status_code == 429
    assert 1 <= int(r.headers["retry-after"]) <= 300  # the window
    # the same address, another account: the address has failed too often as well
    assert (
        client.post("/api/v1/auth/token", data={"username": "k-li", "password": PASSWORD}).status_code == 429
    )
    clock.advance(301)
    assert (
        client.post("/api/v1/auth/token", data={"username": "w-zhang", "password": PASSWORD}).status_code
        == 200
    )


def test_an_api_key_is_an_integrator_of_its_communities_until_revoked_or_expired(
    client: httpx.Client, api_key: Callable[..., str], migrated_url: str, clock: Clock
) -> None:
    key = api_key("c01", "c02", name="district data platform")
    for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
        me = client.get("/api/v1/auth/me", headers=headers).json()
        assert me["kind"] == "apikey"
        assert me["roles"] == ["integrator"]
        assert me["communities"] == ["c01", "c02"]
        assert me["permissions"] == ["devices", "history"]
    wrong = key[:-3] + ("xyz" if not key.endswith("xyz") else "abc")
    assert client.get("/api/v1/auth/me", headers={"X-API-Key": wrong}).json()["detail"] == "unknown API key"
    expiring = api_key("c01", expires_at=clock.now + timedelta(days=1))
    assert client.get("/api/v1/auth/me", headers={"X-API-Key": expiring}).status_code == 200
    clock.advance(86_401)
    r = client.get("/api/v1/auth/me", headers={"X-API-Key": expiring})
    assert r.status_code == 401
    assert "expired" in r.json()["detail"]
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        revoke_key(conn, key.split("_")[1])
    clock.advance(5)  # [api] auth_cache_s: the key was checked a moment ago
    r = client.get("/api/v1/auth/me", headers={"X-API-Key": key})
    assert r.status_code == 401
    assert "revoked" in r.json()["detail"]


def test_a_database_that_is_down_is_503_with_retry_after(tmp_path: Path, api_context: Context) -> None:
    with socket_closed_port() as port:
        settings = build_settings(
            {
                "database_url": f"postgresql://linli@127.0.0.1:{port}/linli?connect_timeout=1",
                "api": {"token_key_file": str(tmp_path / "key"), "pool_timeout_s": 0.5, "pool_min": 1},
            }
        )
        with serve(create_app(settings, context=api_context)) as url, httpx.Client(base_url=url) as c:
            r = c.get("/api/v1/auth/me", headers={"X-API-Key": "lk_abc_def"})
            assert r.status_code == 503
            assert r.headers["retry-after"] == "5"
            health = c.get("/healthz")
            assert health.status_code == 503
            assert health.json()["database"] == "down"


class socket_closed_port:
    """A loopback port nothing listens on (bound, never listening, for the test's duration)."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_processes_starting_together_share_one_complete_signing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """API workers that find no key file at the same moment: one creates it, the others use that
    one. The file never appears empty, however slowly it is written (here: a slow disk)."""
    import os
    import threading
    import time

    from cloud.api import security

    real_fdopen = os.fdopen

    def slow_fdopen(*args: Any, **kwargs: Any) -> Any:
        opened = real_fdopen(*args, **kwargs)
        time.sleep(0.2)  # a slow disk: the file exists for a while before the key is in it
        return opened

    monkeypatch.setattr(os, "fdopen", slow_fdopen)
    path = tmp_path / "keys" / "api-token.key"
    start = threading.Barrier(6)
    got: list[bytes | Exception] = []

    def worker() -> None:
        start.wait()
        try:
            got.append(security.load_or_create_key(path))
        except security.CredentialError as exc:
            got.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert all(isinstance(k, bytes) for k in got), got
    assert len(got) == 6
    assert set(got) == {path.read_bytes().strip()}
    assert [p.name for p in path.parent.iterdir()] == ["api-token.key"]  # no draft left behind

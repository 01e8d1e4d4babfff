"""``linli users`` and ``linli apikeys``: accounts and keys made from the command line work in the
API, and no secret is taken from the command line."""

from __future__ import annotations

import io
from pathlib import Path

import httpx
import pytest

from cloud.api.app import create_app
from cloud.config import load_settings
from device_profiles.console import main
from tests.cloud.api.conftest import serve

PEOPLE = """\
version: 1
staff:
  - {id: w-zhang, name: 张伟, roles: [grid_worker], communities: [c01]}
"""


@pytest.fixture
def config(tmp_path: Path, migrated_url: str) -> Path:
    (tmp_path / "people.yaml").write_text(PEOPLE, encoding="utf-8")
    path = tmp_path / "cloud.toml"
    path.write_text(
        f'database_url = "{migrated_url}"\n[incidents]\npeople = "people.yaml"\n'
        '[api]\ntoken_key_file = "key"\nauth_cache_s = 0\n',  # refusals take effect at once
        encoding="utf-8",
    )
    return path


def _run(monkeypatch: pytest.MonkeyPatch, args: list[str], stdin: str = "") -> int:
    monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    return main(args)


def test_users_and_keys_made_on_the_command_line_log_in(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = ["--config", str(config)]
    assert _run(monkeypatch, ["users", "add", "w-zhang", *cfg, "--password-stdin"], "a long password\n") == 0
    assert _run(monkeypatch, ["users", "add", "nobody", *cfg, "--password-stdin"], "a long password\n") == 2
    assert "not a staff member" in capsys.readouterr().err
    assert _run(monkeypatch, ["users", "add", "w-zhang", *cfg, "--password-stdin"], "a long password\n") == 2
    assert "already has an account" in capsys.readouterr().err
    assert _run(monkeypatch, ["apikeys", "create", *cfg, "--name", "platform", "--communities", "c01"]) == 0
    key = capsys.readouterr().out.strip()
    assert key.startswith("lk_")
    assert _run(monkeypatch, ["users", "list", *cfg]) == 0
    assert capsys.readouterr().out.startswith("w-zhang\tactive")
    settings = load_settings(config)
    with serve(create_app(settings)) as url, httpx.Client(base_url=url) as c:
        r = c.post("/api/v1/auth/token", data={"username": "w-zhang", "password": "a long password"})
        assert r.status_code == 200
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).json()["roles"] == ["integrator"]
        assert _run(monkeypatch, ["apikeys", "revoke", key.split("_")[1], *cfg]) == 0
        assert c.get("/api/v1/auth/me", headers={"X-API-Key": key}).status_code == 401
        assert _run(monkeypatch, ["users", "disable", "w-zhang", *cfg]) == 0
        r = c.post("/api/v1/auth/token", data={"username": "w-zhang", "password": "a long password"})
        assert r.status_code == 401
    assert (config.parent / "key").stat().st_mode & 0o777 == 0o600


def test_a_short_password_is_refused(
    config: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        _run(monkeypatch, ["users", "add", "w-zhang", "--config", str(config), "--password-stdin"], "short\n")
        == 2
    )
    assert "at least 10 characters" in capsys.readouterr().err

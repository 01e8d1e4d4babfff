"""The cloud's configuration: the edge's conventions (one [http] section, log_level in any case,
log_format, every problem reported with its file and key or variable, renamed keys that still
work, relative paths checked), and `linli db migrate` without the password on the command line."""

from __future__ import annotations

import argparse
import io
import json
import logging
import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from cloud import cli, cli_db
from cloud.config import RENAMED, build_settings, load_settings
from cloud.endpoint import Endpoint, Snapshot
from cloud.errors import ConfigError
from cloud.logs import configure
from cloud.store.migrate import shipped_migrations
from tests.cloud.conftest import count

ROOT = Path(__file__).resolve().parents[2]
DB = 'database_url = "postgresql://a@h/db"\n'


@pytest.fixture(autouse=True)
def _no_cloud_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("LINLI_CLOUD_"):
            monkeypatch.delenv(name)


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "cloud.toml"
    path.write_text(body)
    return path


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="linli")
    commands = parser.add_subparsers(dest="command", required=True)
    cli.register(commands)
    cli_db.register(commands)
    args = parser.parse_args(argv)
    code = int(args.handler(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_example_config_loads(capsys: pytest.CaptureFixture[str]) -> None:
    settings = load_settings(ROOT / "deploy" / "cloud.example.toml")
    assert settings.mqtt.share_group == "linli-ingest"
    assert settings.http.address == "127.0.0.1:9108"
    assert (settings.log_level, settings.log_format) == ("info", "text")
    assert capsys.readouterr().err == ""  # no deprecated name in the example
    # the example people file and the example channels fit together
    from cloud.incidents.main import load_context

    context = load_context(settings)
    assert context.people.communities["c01"].name == "阳光小区"
    assert set(settings.notify.channels) == context.people.channel_names()


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(tmp_path, DB + '[mqtt]\nclient_id = "from-file"\n')
    monkeypatch.setenv("LINLI_CLOUD_MQTT__CLIENT_ID", "from-env")
    monkeypatch.setenv("linli_cloud_log_level", "DEBUG")
    settings = load_settings(path)
    assert settings.mqtt.client_id == "from-env"
    assert settings.log_level == "debug"


def test_every_problem_is_reported_with_its_file_and_key_or_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(
        tmp_path,
        'database_url = "mysql://a@h/db"\nlog_level = "LOUD"\n[mqtt]\nurl = "http://x"\n'
        '[ingest]\nbogus = 1\n[http]\naddress = "nowhere"\n',
    )
    monkeypatch.setenv("LINLI_CLOUD_MQTT__RECEIVE_MAXIMUM", "0")
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    problems = {p.key: (p.source, p.detail) for p in info.value.problems}
    assert problems == {
        "database_url": (str(path), "must be a postgresql://user@host:port/dbname URL"),
        "mqtt.url": (str(path), "must look like mqtt://host:1883 or mqtts://host:8883"),
        "mqtt.receive_maximum": (
            "LINLI_CLOUD_MQTT__RECEIVE_MAXIMUM",
            "input should be greater than or equal to 1",
        ),
        "ingest.bogus": (str(path), "unknown key"),
        "http.address": (str(path), "must be host:port, e.g. 127.0.0.1:9108"),
        "log_level": (str(path), "input should be 'debug', 'info', 'warning' or 'error'"),
    }
    text = str(info.value)
    assert text.startswith("6 problems in the configuration:\n")
    assert f"\n  {path}: mqtt.url: must look like" in text
    assert "\n  LINLI_CLOUD_MQTT__RECEIVE_MAXIMUM: mqtt.receive_maximum: " in text
    assert "Value error" not in text


def test_a_missing_database_url_says_where_to_set_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, "[mqtt]\n"))
    where = tmp_path / "cloud.toml"
    assert (
        str(info.value)
        == f"{where}: database_url: missing (set it in the file or in LINLI_CLOUD_DATABASE_URL)"
    )


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "ERROR"])
def test_log_level_in_any_case(level: str) -> None:
    assert (
        build_settings({"database_url": "postgresql://a@h/db", "log_level": level}).log_level == level.lower()
    )


@pytest.mark.parametrize("fmt", ["json", "text", "JSON"])
def test_both_log_formats(fmt: str) -> None:
    settings = build_settings({"database_url": "postgresql://a@h/db", "log_format": fmt})
    out = io.StringIO()
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure("warning", out, fmt=settings.log_format)
    try:
        logging.getLogger("linli.cloud.test").warning("ingest running as %s", "w-1")
        logging.getLogger("linli.cloud.test").info("not shown")
    finally:
        root.handlers[:], root.level = saved
    line = out.getvalue().strip()
    assert "\n" not in line
    if settings.log_format == "json":
        doc = json.loads(line)
        assert {k: doc[k] for k in ("level", "logger", "event")} == {
            "level": "warning",
            "logger": "linli.cloud.test",
            "event": "ingest running as w-1",
        }
    else:
        assert line.endswith(" WARNING linli.cloud.test ingest running as w-1"), line


def test_renamed_keys_still_work_and_warn_once_each(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _write(
        tmp_path,
        DB + "[ingest]\nlinger_ms = 5\n[retention]\nreading_ids_hours = 10\nbatches_days = 3\n"
        '[http]\nhost = "::1"\nport = 9200\n',
    )
    notes: list[str] = []
    settings = load_settings(path, warn=notes.append)
    assert settings.ingest.txn_max_latency_ms == 5
    assert (settings.retention.dedupe_reading_ids_hours, settings.retention.dedupe_batches_days) == (10, 3)
    assert settings.http.address == "[::1]:9200"
    assert settings.http.host_port == ("::1", 9200)
    assert len(notes) == len(RENAMED) + 1
    assert all(n.startswith(f"{path}: ") for n in notes)
    assert any("ingest.linger_ms is deprecated, use ingest.txn_max_latency_ms" in n for n in notes)
    assert any("http.host/port are deprecated, use http.address = '[::1]:9200'" in n for n in notes)
    # -1 turned the endpoint off; now the empty address does. The variables work too.
    monkeypatch.setenv("LINLI_CLOUD_HTTP__PORT", "-1")
    monkeypatch.setenv("LINLI_CLOUD_INGEST__LINGER_MS", "7")
    notes.clear()
    settings = load_settings(_write(tmp_path, DB), warn=notes.append)
    assert (settings.http.address, settings.ingest.txn_max_latency_ms) == ("", 7)
    assert len(notes) == 2
    assert any(
        n.startswith("LINLI_CLOUD_INGEST__LINGER_MS is deprecated, use LINLI_CLOUD_INGEST__TXN_MAX")
        for n in notes
    )
    monkeypatch.setenv("LINLI_CLOUD_INGEST__LINGER_MS", "-7")
    with pytest.raises(ConfigError) as info:
        load_settings(_write(tmp_path, DB), warn=notes.append)
    assert [(p.key, p.source) for p in info.value.problems] == [
        ("ingest.txn_max_latency_ms", "LINLI_CLOUD_INGEST__LINGER_MS")
    ]


def test_old_and_new_name_together_is_an_error(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        DB + '[http]\nport = 1\naddress = "127.0.0.1:2"\n[ingest]\nlinger_ms = 1\ntxn_max_latency_ms = 2\n',
    )
    with pytest.raises(ConfigError) as info:
        load_settings(path, warn=lambda note: None)
    assert [p.key for p in info.value.problems] == ["ingest.linger_ms", "http"]


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own loopback endpoint
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def test_the_http_section_starts_the_endpoint_and_healthz_is_json(tmp_path: Path) -> None:
    settings = load_settings(_write(tmp_path, DB + '[http]\naddress = "127.0.0.1:0"\n'))
    host, port = settings.http.host_port
    snap = Snapshot(health={"database": "up", "broker": "down"})
    endpoint = Endpoint(host=host, port=port, snapshot=lambda: snap)
    endpoint.start()
    try:
        assert endpoint.port > 0
        url = f"http://127.0.0.1:{endpoint.port}/healthz"
        assert _get(url) == (
            503,
            {"healthy": False, "database": "up", "broker": "down", "detail": "database=up broker=down"},
        )
        snap = Snapshot(health={"database": "up", "broker": "up"})
        status, body = _get(url)
        assert (status, body["healthy"], body["detail"]) == (200, True, "database=up broker=up")
    finally:
        endpoint.close()
    assert load_settings(_write(tmp_path, DB + '[http]\naddress = ""\n')).http.address == ""


def test_check_config_resolves_relative_paths_and_checks_the_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "tls").mkdir()
    (tmp_path / "tls" / "ca.pem").write_text("ca")
    path = _write(tmp_path, DB + '[mqtt]\nurl = "mqtts://h:8883"\n[mqtt.tls]\nca_cert = "tls/ca.pem"\n')
    assert _cli(capsys, "cloud", "check-config", "--config", str(path)) == (0, "configuration ok\n", "")
    settings = load_settings(path)
    assert settings.mqtt.tls is not None
    assert settings.mqtt.tls.ca_cert == tmp_path / "tls" / "ca.pem"
    path.write_text(path.read_text() + 'client_cert = "tls/me.pem"\nclient_key = "tls/me.key"\n')
    code, out, err = _cli(capsys, "cloud", "check-config", "--config", str(path))
    assert (code, out) == (2, "")
    assert f"{path}: mqtt.tls.client_cert: no such file: {tmp_path / 'tls' / 'me.pem'}" in err
    assert f"{path}: mqtt.tls.client_key: no such file: {tmp_path / 'tls' / 'me.key'}" in err


def test_check_config_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = _write(tmp_path, '[mqtt]\nurl = "http://x"\nreceive_maximum = 0\n')
    code, _, err = _cli(capsys, "cloud", "check-config", "--config", str(path))
    assert code == 2
    assert err.startswith("linli cloud: 3 problems in the configuration:\n")
    for key in ("database_url", "mqtt.url", "mqtt.receive_maximum"):
        assert f"  {path}: {key}: " in err


def test_db_migrate_needs_a_database(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _cli(capsys, "db", "migrate")
    assert code == 2
    assert "give --config cloud.toml or set LINLI_CLOUD_DATABASE_URL" in err


def _migrate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.upper().startswith("LINLI_CLOUD_")}
    return subprocess.run(
        [sys.executable, "-m", "cloud", "db", "migrate", *args],
        env={**environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.integration
def test_db_migrate_takes_the_database_from_the_configuration(tmp_path: Path, database_url: str) -> None:
    path = _write(tmp_path, f'database_url = "{database_url}"\n')
    done = _migrate("--config", str(path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "applied: " + ", ".join(m.version for m in shipped_migrations())
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(shipped_migrations())
    # The variable beats the file, as for `linli cloud ingest`.
    elsewhere = database_url.rsplit("/", 1)[0] + "/no_such_db"
    refused = _migrate("--config", str(path), env={"LINLI_CLOUD_DATABASE_URL": elsewhere})
    assert refused.returncode == 2
    assert "no_such_db" in refused.stderr


@pytest.mark.integration
def test_db_migrate_takes_the_database_from_the_environment(database_url: str) -> None:
    done = _migrate(env={"LINLI_CLOUD_DATABASE_URL": database_url})
    assert done.returncode == 0, done.stderr
    assert count(database_url, "SELECT count(*) FROM schema_migrations") == len(shipped_migrations())
    again = _migrate(env={"LINLI_CLOUD_DATABASE_URL": database_url})
    assert (again.returncode, again.stdout.strip()) == (0, "up to date")


def test_check_config_reads_the_streetlight_schedules(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "schedules.yaml").write_text(
        'version: 1\ncommunities:\n  "*": {on: {at: dusk}, off: {at: dawn}}\n'
    )
    path = _write(tmp_path, DB + '[commands]\nschedules = "schedules.yaml"\n')
    assert _cli(capsys, "cloud", "check-config", "--config", str(path)) == (0, "configuration ok\n", "")
    assert load_settings(path).commands.schedules == tmp_path / "schedules.yaml"
    (tmp_path / "schedules.yaml").write_text("version: 1\ncommunities:\n  c1: {on: {at: noonish}}\n")
    code, out, err = _cli(capsys, "cloud", "check-config", "--config", str(path))
    assert (code, out) == (2, "")
    assert "communities.c1.on.at" in err
    assert "noonish" in err

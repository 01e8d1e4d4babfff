"""Configuration: TOML plus LINLI_EDGE_* overrides; every problem reported, naming file and key
or the environment variable; renamed keys still work, with a warning."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from device_profiles import SHIPPED_DIR, ProfileError, ProfileSet
from edge.cli import main
from edge.config import RENAMED, load_config
from edge.endpoint import Endpoint, Snapshot
from edge.errors import ConfigError
from edge.logs import configure, get_logger
from edge.preflight import load_profiles


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "inv.yaml").write_text("version: 1\ndevices: []\n")
    path = tmp_path / "edge.toml"
    path.write_text('gateway_id = "gw-1"\ncommunity_id = "c-1"\ninventory = "inv.yaml"\n' + body)
    return path


BASE = '[cloud]\nurl = "mqtts://cloud.example:8883"\n'


@pytest.fixture(autouse=True)
def _no_edge_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.upper().startswith("LINLI_EDGE_"):
            monkeypatch.delenv(name)


def test_minimal_file_gets_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.inventory == tmp_path / "inv.yaml"
    assert cfg.up_topic == "linli/v1/c-1/gw-1/up"
    assert cfg.status_topic == "linli/v1/c-1/gw-1/status"
    assert (cfg.uplink.batch_max_readings, cfg.uplink.batch_max_latency_ms) == (500, 1000)
    assert (cfg.uplink.telemetry_batches_in_flight, cfg.uplink.alarm_batches_in_flight) == (4, 16)
    assert cfg.buffer.telemetry_max_age_s == 7 * 86400
    assert cfg.http.address == "127.0.0.1:9108"
    assert (cfg.log_level, cfg.log_format) == ("info", "json")
    assert cfg.shipped_profiles
    assert cfg.cloud.port == 8883
    assert cfg.cloud.uses_tls


def test_the_example_uses_no_deprecated_name_and_documents_every_section() -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "edge.example.toml"
    notes: list[str] = []
    cfg = load_config(example, check_files=False, warn=notes.append)
    assert notes == []
    assert cfg.http.address == "127.0.0.1:9108"
    text = example.read_text()
    for section in (
        "field",
        "cloud",
        "buffer",
        "uplink",
        "classes",
        "normalise",
        "liveness",
        "status",
        "http",
    ):
        assert f"[{section}]" in text, section


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("", "cloud"),
        ('[cloud]\nurl = "http://x"\n', "cloud.url"),
        (BASE + '[cloud.tls]\nclient_cert = "c.pem"\n', "cloud.tls"),
        (BASE + "[buffer]\nmax_bytes = 10\n", "buffer.max_bytes"),
        (BASE + '[buffer]\ndurability = "sometimes"\n', "buffer.durability"),
        (BASE + "[uplink]\nbatch_max_readings = 0\n", "uplink.batch_max_readings"),
        (BASE + '[http]\naddress = "nowhere"\n', "http.address"),
        (BASE + "[liveness]\noffline_after_intervals = 0.5\n", "liveness.offline_after_intervals"),
        (BASE + "[buffer]\nsize = 1\n", "buffer.size"),
        (BASE + '[cloud.tls]\nca_cert = "missing.pem"\n', "cloud.tls.ca_cert"),
        ('log_level = "loud"\n' + BASE, "log_level"),
        ("shipped_profiles = false\n" + BASE, ""),
    ],
)
def test_errors_name_the_file_and_key(tmp_path: Path, body: str, key: str) -> None:
    path = _write(tmp_path, body)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [(p.key, p.source) for p in info.value.problems] == [(key, str(path))]
    assert str(info.value).startswith(f"{path}: {key}: " if key else f"{path}: ")
    assert "Value error" not in str(info.value)


def test_every_problem_is_reported_without_pydantic_prefixes(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        '[cloud]\nurl = "http://x"\n[cloud.tls]\nclient_cert = "c.pem"\n'
        "[buffer]\nmax_bytes = 10\nsize = 1\n[uplink]\nbatch_max_readings = 0\n",
    )
    with pytest.raises(ConfigError) as info:
        load_config(path)
    problems = {p.key: p.detail for p in info.value.problems}
    assert set(problems) == {
        "cloud.url",
        "cloud.tls",
        "buffer.max_bytes",
        "buffer.size",
        "uplink.batch_max_readings",
    }
    assert problems["cloud.url"] == "must look like mqtt://host:1883 or mqtts://host:8883"
    assert problems["cloud.tls"] == "client_key is required when the other half of the client key pair is set"
    assert problems["buffer.size"] == "unknown key"
    assert problems["buffer.max_bytes"] == "input should be greater than or equal to 1048576"
    text = str(info.value)
    assert text.startswith("5 problems in the configuration:\n")
    assert text.count(f"\n  {path}: ") == 5
    assert "Value error" not in text
    assert "Extra inputs" not in text


def test_missing_files_are_all_reported(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        'profiles = ["nowhere"]\n'
        + BASE
        + '[cloud.tls]\nca_cert = "ca.pem"\nclient_cert = "gw.pem"\nclient_key = "gw.key"\n',
    )
    (tmp_path / "inv.yaml").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert [p.key for p in info.value.problems] == [
        "inventory",
        "profiles.0",
        "cloud.tls.ca_cert",
        "cloud.tls.client_cert",
        "cloud.tls.client_key",
    ]
    assert f"no such file: {tmp_path / 'ca.pem'}" in str(info.value)


def test_a_bad_value_from_the_environment_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINLI_EDGE_CLOUD__URL", "ftp://x")
    monkeypatch.setenv("linli_edge_uplink__batch_max_readings", "many")
    path = _write(tmp_path, BASE + "[buffer]\nmax_bytes = 10\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    sources = {p.key: p.source for p in info.value.problems}
    assert sources == {
        "cloud.url": "LINLI_EDGE_CLOUD__URL",
        "uplink.batch_max_readings": "LINLI_EDGE_UPLINK__BATCH_MAX_READINGS",
        "buffer.max_bytes": str(path),
    }
    assert "LINLI_EDGE_CLOUD__URL: cloud.url: must look like" in str(info.value)
    # A whole section as JSON: its values are the variable's, the file's others stay the file's.
    monkeypatch.delenv("LINLI_EDGE_CLOUD__URL")
    monkeypatch.setenv("LINLI_EDGE_CLOUD", '{"url": "ftp://x"}')
    path = _write(tmp_path, BASE + "password = 5\n[field.tls]\nca_cert = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    found = {p.key: (p.source, p.detail) for p in info.value.problems}
    assert found == {
        "cloud.url": ("LINLI_EDGE_CLOUD", "must look like mqtt://host:1883 or mqtts://host:8883"),
        "cloud.password": (str(path), "input should be a valid string"),
        "field.tls.ca_cert": (str(path), "input is not a valid path"),
        "uplink.batch_max_readings": (
            "LINLI_EDGE_UPLINK__BATCH_MAX_READINGS",
            "input should be a valid integer, unable to parse string as an integer",
        ),
    }


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINLI_EDGE_CLOUD__URL", "mqtt://10.0.0.1:1884")
    monkeypatch.setenv("LINLI_EDGE_UPLINK__TELEMETRY_BATCHES_IN_FLIGHT", "7")
    monkeypatch.setenv("LINLI_EDGE_GATEWAY_ID", "gw-env")
    monkeypatch.setenv("LINLI_EDGE_LOG_LEVEL", "WARNING")
    cfg = load_config(_write(tmp_path, BASE + "[uplink]\ntelemetry_batches_in_flight = 2\n"))
    assert (cfg.cloud.host, cfg.cloud.port) == ("10.0.0.1", 1884)
    assert cfg.uplink.telemetry_batches_in_flight == 7
    assert cfg.gateway_id == "gw-env"
    assert cfg.log_level == "warning"


def test_environment_json_only_for_lists_tables_and_sections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINLI_EDGE_CLOUD__PASSWORD", '["not", "a", "list"]')  # text: a string field
    monkeypatch.setenv("LINLI_EDGE_LIVENESS__REPORT_INTERVALS_S", '{"sos_button": 120}')
    monkeypatch.setenv("LINLI_EDGE_CLASSES__ALARM_EVENTS", '["sos_pressed"]')
    monkeypatch.setenv("LINLI_EDGE_STATUS", '{"interval_s": 5}')
    monkeypatch.setenv("LINLI_EDGEWARD", "not ours")  # another prefix that starts alike
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.cloud.password is not None
    assert cfg.cloud.password.get_secret_value() == '["not", "a", "list"]'
    assert cfg.liveness.report_intervals_s == {"sos_button": 120.0}
    assert cfg.classes.alarm_events == ("sos_pressed",)
    assert cfg.status.interval_s == 5.0


OLD_NAMES = (
    "[uplink]\nwindow = 3\nalarm_window = 9\n[buffer]\nttl_s = 60\n"
    "[normalise]\nclock_skew_bound_s = 30\ndedupe_window = 10\n"
    "[liveness]\nmultiple = 4\nintervals = { door_contact = 600.0 }\n"
    '[metrics]\naddress = "127.0.0.1:0"\n'
)


def test_renamed_keys_in_the_file_still_work_and_warn_once_each(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + OLD_NAMES)
    notes: list[str] = []
    cfg = load_config(path, warn=notes.append)
    assert (cfg.uplink.telemetry_batches_in_flight, cfg.uplink.alarm_batches_in_flight) == (3, 9)
    assert cfg.buffer.telemetry_max_age_s == 60
    assert (cfg.normalise.max_clock_skew_s, cfg.normalise.dedupe_ids_remembered) == (30, 10)
    assert cfg.liveness.offline_after_intervals == 4
    assert cfg.liveness.report_intervals_s == {"door_contact": 600.0}
    assert cfg.http.address == "127.0.0.1:0"
    assert len(notes) == len(RENAMED)
    for old, new in RENAMED.items():
        (note,) = [n for n in notes if f": {'.'.join(old)} is deprecated" in n]
        assert note.startswith(str(path))
        assert f"use {'.'.join(new)}" in note


def test_renamed_keys_print_a_warning_on_stderr(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_config(_write(tmp_path, BASE + "[uplink]\nwindow = 3\n"))
    err = capsys.readouterr().err
    assert err.count("linli edge: warning:") == 1
    assert "uplink.window is deprecated, use uplink.telemetry_batches_in_flight" in err


def test_a_renamed_key_with_a_bad_value_is_named_as_written(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "[liveness]\nmultiple = 0.5\n[uplink]\nwindow = -1\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, warn=lambda note: None)
    assert [p.key for p in info.value.problems] == ["uplink.window", "liveness.multiple"]


def test_old_and_new_name_together_is_an_error(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE + "[uplink]\nwindow = 3\ntelemetry_batches_in_flight = 5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, warn=lambda note: None)
    assert [(p.key, p.source) for p in info.value.problems] == [("uplink.window", str(path))]
    assert "uplink.telemetry_batches_in_flight, which is set too" in str(info.value)


def test_renamed_environment_variables_still_work_and_warn(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LINLI_EDGE_UPLINK__WINDOW", "7")
    monkeypatch.setenv("LINLI_EDGE_METRICS__ADDRESS", "")
    monkeypatch.setenv("LINLI_EDGE_LIVENESS__INTERVALS", '{"sos_button": 120}')
    notes: list[str] = []
    cfg = load_config(_write(tmp_path, BASE + "[uplink]\nwindow = 2\n"), warn=notes.append)
    assert cfg.uplink.telemetry_batches_in_flight == 7
    assert cfg.http.address == ""
    assert cfg.liveness.report_intervals_s == {"sos_button": 120.0}
    assert len(notes) == 4  # the file's uplink.window and three variables
    assert any(
        n.startswith(
            "LINLI_EDGE_UPLINK__WINDOW is deprecated, use LINLI_EDGE_UPLINK__TELEMETRY_BATCHES_IN_FLIGHT"
        )
        for n in notes
    )
    monkeypatch.setenv("LINLI_EDGE_UPLINK__WINDOW", "many")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, BASE), warn=notes.append)
    assert [(p.key, p.source) for p in info.value.problems] == [
        ("uplink.telemetry_batches_in_flight", "LINLI_EDGE_UPLINK__WINDOW")
    ]


@pytest.mark.parametrize("level", ["debug", "INFO", "Warning", "ERROR"])
def test_log_level_in_any_case(tmp_path: Path, level: str) -> None:
    assert load_config(_write(tmp_path, f'log_level = "{level}"\n' + BASE)).log_level == level.lower()


@pytest.mark.parametrize("fmt", ["json", "text", "TEXT"])
def test_both_log_formats(tmp_path: Path, fmt: str) -> None:
    cfg = load_config(_write(tmp_path, f'log_format = "{fmt}"\n' + BASE))
    assert cfg.log_format == fmt.lower()
    out = io.StringIO()
    configure("info", out, fmt=cfg.log_format)
    try:
        get_logger("edge.test").info("batch_acked", seq=17, note="two words")
        get_logger("edge.test").debug("not_shown")
    finally:
        logging.getLogger("edge").handlers.clear()
    line = out.getvalue().strip()
    assert "\n" not in line
    if cfg.log_format == "json":
        doc = json.loads(line)
        assert {k: doc[k] for k in ("level", "logger", "event", "seq", "note")} == {
            "level": "info",
            "logger": "edge.test",
            "event": "batch_acked",
            "seq": 17,
            "note": "two words",
        }
    else:
        assert line.endswith(' INFO edge.test batch_acked seq=17 note="two words"'), line
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, 'log_format = "xml"\n' + BASE))
    assert info.value.key == "log_format"


def _get(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:  # noqa: S310 - our own loopback endpoint
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def test_the_http_section_starts_the_endpoint_and_healthz_is_json(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE + '[http]\naddress = "127.0.0.1:0"\n'))
    host, port = cfg.http.host_port
    snap = Snapshot(healthy=False, health={"field": "down"}, detail="field=down")
    endpoint = Endpoint(host=host, port=port, snapshot=lambda: snap)
    await endpoint.start()
    try:
        assert endpoint.port > 0
        url = f"http://127.0.0.1:{endpoint.port}/healthz"
        assert await asyncio.to_thread(_get, url) == (
            503,
            {"healthy": False, "field": "down", "detail": "field=down"},
        )
        snap = Snapshot(healthy=True, health={"field": "up"}, detail="field=up")
        status, body = await asyncio.to_thread(_get, url)
        assert (status, body["healthy"], body["field"]) == (200, True, "up")
    finally:
        await endpoint.close()


def test_an_empty_address_turns_the_endpoint_off_and_ipv6_is_bracketed(tmp_path: Path) -> None:
    assert load_config(_write(tmp_path, BASE + '[http]\naddress = ""\n')).http.address == ""
    cfg = load_config(_write(tmp_path, BASE + '[http]\naddress = "[::1]:9108"\n'))
    assert cfg.http.host_port == ("::1", 9108)


def _profile_folder(tmp_path: Path, name: str, profile_id: str) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    shipped = SHIPPED_DIR / "generic_lorawan" / "door_contact.yaml"
    text = shipped.read_text().replace("id: generic_lorawan/door_contact", f"id: {profile_id}")
    (folder / "door.yaml").write_text(text)
    return folder


def test_profile_folders_add_to_the_shipped_profiles(tmp_path: Path) -> None:
    _profile_folder(tmp_path, "mine", "acme/door_contact")
    shipped = set(ProfileSet.shipped().profiles)
    cfg = load_config(_write(tmp_path, 'profiles = ["mine"]\n' + BASE))
    assert cfg.profiles == (tmp_path / "mine",)
    assert set(load_profiles(cfg).profiles) == shipped | {"acme/door_contact"}
    only = load_config(_write(tmp_path, 'profiles = ["mine"]\nshipped_profiles = false\n' + BASE))
    assert set(load_profiles(only).profiles) == {"acme/door_contact"}
    assert set(load_profiles(load_config(_write(tmp_path, BASE))).profiles) == shipped


def test_a_folder_repeating_a_shipped_profile_id_is_refused_naming_both_files(tmp_path: Path) -> None:
    folder = _profile_folder(tmp_path, "mine", "generic_lorawan/door_contact")
    cfg = load_config(_write(tmp_path, 'profiles = ["mine"]\n' + BASE))
    with pytest.raises(ProfileError) as info:
        load_profiles(cfg)
    assert str(folder / "door.yaml") in str(info.value)
    assert str(SHIPPED_DIR / "generic_lorawan" / "door_contact.yaml") in str(info.value)
    replaced = load_config(_write(tmp_path, 'profiles = ["mine"]\nshipped_profiles = false\n' + BASE))
    assert set(load_profiles(replaced).profiles) == {"generic_lorawan/door_contact"}
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        assert main(["check-config", "--config", str(tmp_path / "edge.toml")]) == 0
        path = _write(tmp_path, 'profiles = ["mine"]\n' + BASE)
        assert main(["check-config", "--config", str(path)]) == 2
    assert "already defined in" in err.getvalue()


def test_not_toml_and_missing_inventory(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("gateway_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML") as info:
        load_config(path)
    assert info.value.problems[0].source == str(path)
    path = _write(tmp_path, BASE)
    (tmp_path / "inv.yaml").unlink()
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "inventory"


def test_check_config_command(tmp_path: Path) -> None:
    good = _write(tmp_path, BASE)
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["check-config", "--config", str(good)]) == 0
    assert out.getvalue().startswith("ok: gateway gw-1")
    bad = _write(tmp_path, BASE + "[uplink]\ntelemetry_batches_in_flight = -1\nbatch_max_readings = 0\n")
    with contextlib.redirect_stderr(err):
        assert main(["check-config", "--config", str(bad)]) == 2
    assert f"{bad}: uplink.telemetry_batches_in_flight: " in err.getvalue()
    assert f"{bad}: uplink.batch_max_readings: " in err.getvalue()

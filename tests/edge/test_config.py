"""Configuration: TOML plus LINLI_EDGE_* overrides; every error names its key."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest

from edge.cli import main
from edge.config import load_config
from edge.errors import ConfigError


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "inv.yaml").write_text("version: 1\ndevices: []\n")
    path = tmp_path / "edge.toml"
    path.write_text('gateway_id = "gw-1"\ncommunity_id = "c-1"\ninventory = "inv.yaml"\n' + body)
    return path


BASE = '[cloud]\nurl = "mqtts://cloud.example:8883"\n'


def test_minimal_file_gets_defaults_and_relative_paths(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, BASE))
    assert cfg.inventory == tmp_path / "inv.yaml"
    assert cfg.up_topic == "linli/v1/c-1/gw-1/up"
    assert cfg.status_topic == "linli/v1/c-1/gw-1/status"
    assert (cfg.uplink.batch_max_readings, cfg.uplink.batch_max_latency_ms) == (500, 1000)
    assert cfg.buffer.ttl_s == 7 * 86400
    assert cfg.metrics.address == "127.0.0.1:9108"
    assert cfg.cloud.port == 8883
    assert cfg.cloud.uses_tls


@pytest.mark.parametrize(
    ("body", "key"),
    [
        ("", "cloud"),
        ('[cloud]\nurl = "http://x"\n', "cloud.url"),
        (BASE + '[cloud.tls]\nclient_cert = "c.pem"\n', "cloud.tls"),
        (BASE + "[buffer]\nmax_bytes = 10\n", "buffer.max_bytes"),
        (BASE + '[buffer]\ndurability = "sometimes"\n', "buffer.durability"),
        (BASE + "[uplink]\nbatch_max_readings = 0\n", "uplink.batch_max_readings"),
        (BASE + '[metrics]\naddress = "nowhere"\n', "metrics.address"),
        (BASE + "[liveness]\nmultiple = 0.5\n", "liveness.multiple"),
        (BASE + "[buffer]\nsize = 1\n", "buffer.size"),
        (BASE + '[cloud.tls]\nca_cert = "missing.pem"\n', "cloud.tls.ca_cert"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, body: str, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, body))
    assert info.value.key == key
    assert str(info.value).startswith(key)


def test_bad_ids_are_refused_by_key(tmp_path: Path) -> None:
    path = _write(tmp_path, BASE)
    path.write_text(path.read_text().replace('gateway_id = "gw-1"', 'gateway_id = "gw/+"'))
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert info.value.key == "gateway_id"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LINLI_EDGE_CLOUD__URL", "mqtt://10.0.0.1:1884")
    monkeypatch.setenv("LINLI_EDGE_UPLINK__WINDOW", "7")
    monkeypatch.setenv("LINLI_EDGE_GATEWAY_ID", "gw-env")
    cfg = load_config(_write(tmp_path, BASE + "[uplink]\nwindow = 2\n"))
    assert (cfg.cloud.host, cfg.cloud.port) == ("10.0.0.1", 1884)
    assert cfg.uplink.window == 7
    assert cfg.gateway_id == "gw-env"
    monkeypatch.setenv("LINLI_EDGE_UPLINK__WINDOW", "many")
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, BASE))
    assert info.value.key == "uplink.window"


def test_not_toml_and_missing_inventory(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text("gateway_id = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(path)
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
    bad = _write(tmp_path, BASE + "[uplink]\nwindow = -1\n")
    with contextlib.redirect_stderr(err):
        assert main(["check-config", "--config", str(bad)]) == 2
    assert "uplink.window" in err.getvalue()

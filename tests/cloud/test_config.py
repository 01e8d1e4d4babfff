from __future__ import annotations

from pathlib import Path

import pytest

from cloud.config import load_settings
from cloud.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_example_config_loads() -> None:
    settings = load_settings(ROOT / "deploy" / "cloud.example.toml")
    assert settings.mqtt.share_group == "linli-ingest"


def test_environment_overrides_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "c.toml"
    path.write_text('database_url = "postgresql://a@h/db"\n[mqtt]\nclient_id = "from-file"\n')
    monkeypatch.setenv("LINLI_CLOUD_MQTT__CLIENT_ID", "from-env")
    assert load_settings(path).mqtt.client_id == "from-env"


def test_errors_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('database_url = "postgresql://a@h/db"\n[mqtt]\nurl = "http://x"\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "mqtt.url"
    assert "LINLI_CLOUD_MQTT__URL" in str(info.value)
    path.write_text('database_url = "postgresql://a@h/db"\n[ingest]\nbogus = 1\n')
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    assert info.value.key == "ingest.bogus"

"""The cloud's configuration: a TOML file, overridden by ``LINLI_CLOUD_*`` environment variables.

Nested keys use ``__`` in the environment: ``LINLI_CLOUD_MQTT__CLIENT_ID=linli-ingest-2``
overrides ``[mqtt] client_id``. Everything is validated once, in `load_settings`, and a bad value
raises `ConfigError` naming the dotted key. deploy/cloud.example.toml documents every key.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Literal, Self
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from cloud.errors import ConfigError


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TlsConfig(_Section):
    """TLS towards the cloud broker; with ``client_cert`` and ``client_key`` also mutual TLS."""

    ca_cert: Path
    client_cert: Path | None = None
    client_key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.client_cert is None) != (self.client_key is None):
            missing = "client_key" if self.client_key is None else "client_cert"
            raise ValueError(f"{missing} is required when the other half of the client key pair is set")
        return self


class MqttConfig(_Section):
    url: str = "mqtt://127.0.0.1:1883"
    #: Stable per worker: the broker keeps the worker's session (and its unacknowledged
    #: messages) under this id, so a restarted worker gets them back.
    client_id: str = "linli-ingest-1"
    share_group: str = "linli-ingest"
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)
    session_expiry_s: int = Field(default=7 * 86400, ge=1)
    #: Unacknowledged QoS 1 messages the broker may hand us at once: the memory bound.
    receive_maximum: int = Field(default=256, ge=1, le=65535)

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
            raise ValueError("must look like mqtt://host:1883 or mqtts://host:8883")
        try:
            parts.port  # noqa: B018 - raises ValueError for a bad port
        except ValueError as exc:
            raise ValueError(f"bad port: {exc}") from None
        return value

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)


class IngestConfig(_Section):
    #: A transaction closes when it holds this many readings ...
    max_readings_per_txn: int = Field(default=50_000, ge=1)
    #: ... or this long after its first batch arrived.
    linger_ms: float = Field(default=200.0, ge=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=30.0, gt=0)


class RetentionConfig(_Section):
    readings_days: int = Field(default=400, ge=1)
    events_days: int = Field(default=1825, ge=1)
    rollup_days: int = Field(default=3650, ge=1)
    #: TimescaleDB community license only: chunks older than this are compressed.
    compress_after_days: int = Field(default=7, ge=1)
    #: How long reading ids are remembered for per-reading de-duplication.
    reading_ids_hours: int = Field(default=72, ge=1)
    #: How long ``(gateway_id, batch_seq)`` pairs are remembered.
    batches_days: int = Field(default=30, ge=1)
    #: Retention, rollup and pruning run this often (one worker at a time, by advisory lock).
    interval_s: float = Field(default=300.0, gt=0)


class HttpConfig(_Section):
    host: str = "127.0.0.1"
    #: 0 picks a free port (logged); -1 disables the endpoint.
    port: int = Field(default=9108, ge=-1, le=65535)


class CloudSettings(BaseSettings):
    """Everything ``linli cloud ingest`` needs."""

    model_config = SettingsConfigDict(
        env_prefix="LINLI_CLOUD_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    database_url: str
    mqtt: MqttConfig = MqttConfig()
    ingest: IngestConfig = IngestConfig()
    retention: RetentionConfig = RetentionConfig()
    http: HttpConfig = HttpConfig()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql://user@host:port/dbname URL")
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The environment overrides the file (which arrives as init arguments).
        return (env_settings, init_settings)


def _key(loc: tuple[int | str, ...]) -> str:
    return ".".join(str(part) for part in loc)


def build_settings(values: dict[str, Any]) -> CloudSettings:
    """Settings from a mapping (the parsed TOML) plus the environment; errors name the key."""
    try:
        return CloudSettings(**values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(_key(first["loc"]), first["msg"]) from exc


def load_settings(path: Path) -> CloudSettings:
    """Read and validate a TOML configuration file (``LINLI_CLOUD_*`` variables override it)."""
    try:
        with path.open("rb") as fh:
            values = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError("", f"{path}: cannot read: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path}: not valid TOML: {exc}") from exc
    try:
        return build_settings(values)
    except ConfigError as exc:
        raise ConfigError(
            exc.key, f"{exc.detail} (in {path} or LINLI_CLOUD_{exc.key.upper().replace('.', '__')})"
        ) from exc

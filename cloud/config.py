"""The cloud's configuration: a TOML file, overridden by ``LINLI_CLOUD_*`` environment variables.

Nested keys use ``__`` in the environment: ``LINLI_CLOUD_MQTT__CLIENT_ID=linli-ingest-2``
overrides ``[mqtt] client_id``. Everything is validated once, in `load_settings`; `ConfigError`
lists every problem, each naming the file and dotted key or the environment variable. Keys renamed
in this release (`RENAMED`, and ``[http] host``/``port``) still work, with a warning. Relative
paths are taken relative to the file's folder. deploy/cloud.example.toml documents every key.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
)

from cloud.api.config import ApiConfig
from cloud.errors import ConfigError
from cloud.incidents.config import IncidentsConfig
from cloud.notify.config import NotifyConfig
from device_profiles.config_sources import (
    BrokerSettings,
    HttpConfig,
    Layers,
    TimeZoneName,
    TlsConfig,
    UnreadableConfig,
    problems_from,
    read_layers,
    read_toml,
)
from device_profiles.config_view import ConfigProblem, Key

#: Keys renamed for clarity: old -> new. The old names (in the file or the environment) work,
#: with a warning, until the next release. ``[http] host`` and ``port`` became ``[http] address``.
RENAMED: dict[Key, Key] = {
    ("ingest", "linger_ms"): ("ingest", "txn_max_latency_ms"),
    ("retention", "reading_ids_hours"): ("retention", "dedupe_reading_ids_hours"),
    ("retention", "batches_days"): ("retention", "dedupe_batches_days"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttConfig(BrokerSettings):
    url: str = "mqtt://127.0.0.1:1883"
    #: Stable per worker: the broker keeps the worker's session (and its unacknowledged
    #: messages) under this id, so a restarted worker gets them back.
    client_id: str = "linli-ingest-1"
    share_group: str = "linli-ingest"
    session_expiry_s: int = Field(default=7 * 86400, ge=1)
    #: Unacknowledged QoS 1 messages the broker may hand us at once: the memory bound.
    receive_maximum: int = Field(default=256, ge=1, le=65535)


class IngestConfig(_Section):
    #: A transaction closes when it holds this many readings ...
    max_readings_per_txn: int = Field(default=50_000, ge=1)
    #: ... or this long after its first batch arrived (at once when it holds an alarm batch).
    txn_max_latency_ms: float = Field(default=200.0, ge=0)
    #: Readings decoded ahead of the transaction being written, per lane; messages beyond wait
    #: as received (about a fifth of the memory) and are decoded when the writer takes them.
    decode_ahead_readings: int = Field(default=50_000, ge=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=5.0, gt=0)


class RetentionConfig(_Section):
    readings_days: int = Field(default=400, ge=1)
    events_days: int = Field(default=1825, ge=1)
    rollup_days: int = Field(default=3650, ge=1)
    #: TimescaleDB community license only: chunks older than this are compressed.
    compress_after_days: int = Field(default=7, ge=1)
    #: How long reading ids are remembered for per-reading de-duplication.
    dedupe_reading_ids_hours: int = Field(default=72, ge=1)
    #: How long ``(gateway_id, batch_seq)`` pairs are remembered for per-batch de-duplication.
    dedupe_batches_days: int = Field(default=30, ge=1)
    #: Commands that reached their end (confirmed, failed, expired) are deleted with their audit
    #: trail this long after their last change.
    commands_days: int = Field(default=400, ge=1)
    #: Retention, rollup and pruning run this often (one worker at a time, by advisory lock).
    interval_s: float = Field(default=300.0, gt=0)


def _alerts_http() -> HttpConfig:
    return HttpConfig(address="127.0.0.1:9109")


class AlertsConfig(_Section):
    """``[alerts]``: what ``linli cloud alerts`` evaluates and how it follows the feed."""

    #: Rule files or folders of ``*.yaml`` read after the shipped defaults (overrides, per-community rules).
    rules: tuple[Path, ...] = ()
    shipped_rules: bool = True
    #: The devices installed (residents, locations, devices never heard); without it only devices
    #: that report are known.
    inventory: Path | None = None
    #: The inventory file is checked this often; a changed one is loaded, written to the devices
    #: table and used from a new session on (0: read at start only).
    inventory_watch_s: float = Field(default=5.0, ge=0)
    #: Profile folders besides the shipped profiles (their report intervals drive absence rules).
    profiles: tuple[Path, ...] = ()
    #: IANA time zone of the communities (active hours of inactivity rules).
    timezone: TimeZoneName = "Asia/Shanghai"
    #: ``wall``: rules run on the clock; ``data``: on the newest device time of each community
    #: (simulations that run faster than real time).
    clock: Literal["wall", "data"] = "wall"
    #: ``K/N``: this process evaluates the communities whose hash modulo N is K.
    partition: str = "0/1"
    #: The feed is read at once on the ingest's notification, and at least this often.
    poll_interval_s: float = Field(default=1.0, gt=0)
    #: Time-based rules (absence, pending periods, inactivity) are evaluated this often.
    tick_interval_s: float = Field(default=5.0, gt=0)
    #: Run the detectors (rule kinds routine, lamp_drift, ... : docs/detection.md) on stored history,
    #: each as often as its ``every`` says, between ticks.
    detect: bool = True
    #: Feed rows (one ingest transaction of one community each) evaluated per alert transaction.
    max_feed_rows_per_txn: int = Field(default=200, ge=1)
    #: ... and readings: a transaction's evaluation stays short (about 0.3 s), so an alarm committed
    #: meanwhile does not wait behind a drained backlog (the first row always fits).
    max_readings_per_txn: int = Field(default=20_000, ge=1)
    #: Feed rows every partition has passed are deleted this long after their commit.
    feed_retention_hours: float = Field(default=24.0, gt=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=5.0, gt=0)
    #: The alert service's own ``/metrics`` and ``/healthz``.
    http: HttpConfig = Field(default_factory=_alerts_http)

    @field_validator("partition")
    @classmethod
    def _partition(cls, value: str) -> str:
        k, sep, n = value.strip().partition("/")
        if not sep or not k.isdigit() or not n.isdigit() or not int(k) < int(n):
            raise ValueError("must be K/N with 0 <= K < N, e.g. 0/1 or 1/2")
        return f"{int(k)}/{int(n)}"


def _commands_http() -> HttpConfig:
    return HttpConfig(address="127.0.0.1:9112")


class CommandsConfig(_Section):
    """``[commands]``: how ``linli cloud commands`` sends the outbox to the gateways and follows
    the commands' progress (docs/commands.md)."""

    #: the MQTT client id of the sender (its session holds the progress reports while it is away)
    client_id: str = "linli-commands-1"
    #: its own identity on the broker (a ``commands`` certificate of ``linli pki``), instead of
    #: ``[mqtt] tls``: the cloud broker's ACL lets only that role send commands
    tls: TlsConfig | None = None
    #: a queued command the gateway has not reported stored is sent again after this long
    resend_s: float = Field(default=30.0, gt=0)
    #: ... and again after twice as long each time, up to this
    resend_max_s: float = Field(default=600.0, gt=0)
    #: the outbox is looked at when a command is queued, and at least this often
    poll_interval_s: float = Field(default=1.0, gt=0)
    #: commands published per round, at most
    max_per_round: int = Field(default=500, ge=1)
    #: how long a PUBLISH may wait for its PUBACK before the round ends (sent again later)
    publish_timeout_s: float = Field(default=5.0, gt=0)
    #: streetlight schedules (YAML, `cloud.commands.schedules`): none without it
    schedules: Path | None = None
    #: the schedules are looked at this often (seconds): a transition's commands go out this late
    schedule_check_s: float = Field(default=10.0, gt=0)
    #: profile folders besides the shipped ones (the devices' dialects: which commands they carry)
    profiles: tuple[Path, ...] = ()
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=5.0, gt=0)
    http: HttpConfig = Field(default_factory=_commands_http)


class CloudSettings(BaseModel):
    """Everything the cloud services (``linli cloud ingest|alerts|incidents|notify``) need."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str
    mqtt: MqttConfig = MqttConfig()
    ingest: IngestConfig = IngestConfig()
    retention: RetentionConfig = RetentionConfig()
    alerts: AlertsConfig = AlertsConfig()
    incidents: IncidentsConfig = IncidentsConfig()
    notify: NotifyConfig = NotifyConfig()
    api: ApiConfig = ApiConfig()
    commands: CommandsConfig = CommandsConfig()
    http: HttpConfig = HttpConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "text"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @field_validator("database_url")
    @classmethod
    def _dsn(cls, value: str) -> str:
        if urlsplit(value).scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql://user@host:port/dbname URL")
        return value


def _print_warning(note: str) -> None:
    print(f"linli cloud: warning: {note}", file=sys.stderr)


def build_settings(
    values: dict[str, Any], *, path: Path = Path("<settings>"), warn: Callable[[str], None] = _print_warning
) -> CloudSettings:
    """Settings from a mapping (the parsed TOML, read from `path`) plus the environment.

    Raises `ConfigError` listing every problem; each deprecated key in use is passed to `warn`.
    """
    return _validate(_layers(path, values), warn)


def load_settings(
    path: Path, *, check_files: bool = True, warn: Callable[[str], None] = _print_warning
) -> CloudSettings:
    """Read and validate a TOML configuration file (``LINLI_CLOUD_*`` variables override it).

    Relative paths (in the file or the environment) are taken relative to the file's folder;
    with `check_files`, the files named (TLS certificates and keys) must exist.
    """
    layers = _layers(path, _read(path))
    settings = _resolve_paths(_validate(layers, warn), path.parent)
    if check_files:
        check_paths(settings, source=layers.source_of)
    return settings


def _layers(path: Path, values: dict[str, Any]) -> Layers:
    layers = read_layers(path, values, CloudSettings, prefix="LINLI_CLOUD_", renames=RENAMED)
    _old_http_keys(layers, env=False)
    _old_http_keys(layers, env=True)
    return layers


def _validate(layers: Layers, warn: Callable[[str], None]) -> CloudSettings:
    for note in layers.notes:
        warn(note)
    try:
        settings = CloudSettings(**layers.merged())
    except ValidationError as exc:
        raise ConfigError(problems=[*layers.problems, *problems_from(exc, layers)]) from exc
    if layers.problems:
        raise ConfigError(problems=layers.problems)
    return settings


def _old_http_keys(layers: Layers, *, env: bool) -> None:
    """``[http] host`` and ``port`` (-1: off) of the previous release, as ``[http] address``."""
    data = layers.env if env else layers.file
    http = data.get("http")
    if not isinstance(http, dict) or not {"host", "port"} & http.keys():
        return
    if env:
        source = old = "LINLI_CLOUD_HTTP__HOST/PORT"
        new = "LINLI_CLOUD_HTTP__ADDRESS"
        layers.env_names[("http", "address")] = source
    else:
        source, old, new = str(layers.path), "http.host/port", "http.address"
    host, port = http.pop("host", "127.0.0.1"), http.pop("port", 9108)
    if "address" in http:
        layers.problems.append(
            ConfigProblem("http", f"{old} are the deprecated form of {new}, set too", source)
        )
        return
    try:
        port = int(port)
    except (TypeError, ValueError):
        layers.problems.append(ConfigProblem("http.port", f"not a port number: {port!r}", source))
        return
    host = f"[{host}]" if ":" in str(host) else str(host)
    http["address"] = "" if port < 0 else f"{host}:{port}"
    where = "" if env else f"{source}: "
    layers.notes.append(
        f"{where}{old} are deprecated, use {new} = {http['address']!r}"
        " (the old names stop working in the next release)"
    )


def _resolve(base: Path, p: Path | None) -> Path | None:
    return p if p is None or p.is_absolute() else base / p


def _resolve_paths(settings: CloudSettings, base: Path) -> CloudSettings:
    alerts = settings.alerts
    alerts = alerts.model_copy(
        update={
            "rules": tuple(p for p in (_resolve(base, p) for p in alerts.rules) if p is not None),
            "profiles": tuple(p for p in (_resolve(base, p) for p in alerts.profiles) if p is not None),
            "inventory": _resolve(base, alerts.inventory),
        }
    )
    people = _resolve(base, settings.incidents.people)
    channels = {
        name: ch.model_copy(update={"ca_cert": _resolve(base, ch.ca_cert)})
        for name, ch in settings.notify.channels.items()
    }
    api = settings.api.model_copy(update={"token_key_file": _resolve(base, settings.api.token_key_file)})
    settings = settings.model_copy(
        update={
            "alerts": alerts,
            "api": api,
            "incidents": settings.incidents.model_copy(update={"people": people}),
            "notify": settings.notify.model_copy(update={"channels": channels}),
        }
    )
    commands = settings.commands.model_copy(
        update={
            "schedules": _resolve(base, settings.commands.schedules),
            "profiles": tuple(
                p for p in (_resolve(base, p) for p in settings.commands.profiles) if p is not None
            ),
        }
    )
    settings = settings.model_copy(update={"commands": commands})
    if settings.commands.tls is not None:
        ctls = settings.commands.tls
        ctls = ctls.model_copy(
            update={n: _resolve(base, getattr(ctls, n)) for n in ("ca_cert", "client_cert", "client_key")}
        )
        settings = settings.model_copy(
            update={"commands": settings.commands.model_copy(update={"tls": ctls})}
        )
    tls = settings.mqtt.tls
    if tls is None:
        return settings
    tls = tls.model_copy(
        update={name: _resolve(base, getattr(tls, name)) for name in ("ca_cert", "client_cert", "client_key")}
    )
    return settings.model_copy(update={"mqtt": settings.mqtt.model_copy(update={"tls": tls})})


def check_paths(settings: CloudSettings, *, source: Callable[[Key], str] = lambda key: "") -> None:
    """The files the configuration names exist; raises `ConfigError` listing every missing one."""
    problems = []
    alerts = settings.alerts
    named: list[tuple[Key, Path]] = [(("alerts", "rules", str(i)), p) for i, p in enumerate(alerts.rules)]
    named += [(("alerts", "profiles", str(i)), p) for i, p in enumerate(alerts.profiles)]
    if alerts.inventory is not None:
        named.append((("alerts", "inventory"), alerts.inventory))
    if settings.incidents.people is not None:
        named.append((("incidents", "people"), settings.incidents.people))
    for name, channel in settings.notify.channels.items():
        if channel.ca_cert is not None:
            named.append((("notify", "channels", name, "ca_cert"), channel.ca_cert))
    for key, p in named:
        if not p.exists():
            problems.append(ConfigProblem(".".join(key), f"no such file or folder: {p}", source(key)))
    if settings.mqtt.tls is not None:
        for name in ("ca_cert", "client_cert", "client_key"):
            p = getattr(settings.mqtt.tls, name)
            if p is not None and not p.is_file():
                key = ("mqtt", "tls", name)
                problems.append(ConfigProblem(".".join(key), f"no such file: {p}", source(key)))
    if problems:
        raise ConfigError(problems=problems)


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path)
    except UnreadableConfig as exc:
        raise ConfigError(problems=[exc.problem]) from exc

"""The agent's configuration: a TOML file, overridden by ``LINLI_EDGE_*`` environment variables.

Nested keys use ``__`` in the environment: ``LINLI_EDGE_CLOUD__URL=mqtts://...`` overrides
``[cloud] url``. Everything is validated once, at start; `ConfigError` lists every problem, each
naming the file and dotted key (``cloud.tls.client_cert``) or the environment variable. Keys
renamed in this release (`RENAMED`) still work, with a warning. docs/edge.md documents every key.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from device_profiles import Event
from device_profiles.config_sources import (
    BrokerSettings,
    HttpConfig,
    TlsConfig,
    UnreadableConfig,
    problems_from,
    read_layers,
    read_toml,
)
from device_profiles.config_view import ConfigProblem, Key
from edge.errors import ConfigError
from edge.identity import GatewayIdentity

#: MQTT topic levels must not contain wildcards or separators.
_TOPIC_LEVEL = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,63}$")

DEFAULT_ALARM_EVENTS = (
    Event.SOS_PRESSED,
    Event.SOS_LONG_PRESSED,
    Event.SOS_CANCELLED,
    Event.COVER_OPENED,
    Event.WATER_ALARM,
    Event.GAS_ALARM,
    Event.SMOKE_DETECTED,
    Event.LEAK_DETECTED,
    Event.DEVICE_OFFLINE,
    Event.DEVICE_ONLINE,
)
DEFAULT_ALARM_METRICS = {"cover_open": 1.0, "lamp_fault": 1.0, "smoke": 1.0, "water_leak": 1.0}

#: Keys renamed for clarity: old -> new. The old names (in the file or the environment) work,
#: with a warning, until the next release.
RENAMED: dict[Key, Key] = {
    ("uplink", "window"): ("uplink", "telemetry_batches_in_flight"),
    ("uplink", "alarm_window"): ("uplink", "alarm_batches_in_flight"),
    ("buffer", "ttl_s"): ("buffer", "telemetry_max_age_s"),
    ("normalise", "clock_skew_bound_s"): ("normalise", "max_clock_skew_s"),
    ("normalise", "dedupe_window"): ("normalise", "dedupe_ids_remembered"),
    ("liveness", "multiple"): ("liveness", "offline_after_intervals"),
    ("liveness", "intervals"): ("liveness", "report_intervals_s"),
    ("metrics", "address"): ("http", "address"),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class BrokerConfig(BrokerSettings):
    client_id: str = ""
    session_expiry_s: int = Field(default=7 * 86400, ge=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    backoff_base_s: float = Field(default=0.5, gt=0)
    backoff_cap_s: float = Field(default=60.0, gt=0)


class FieldBrokerConfig(BrokerConfig):
    url: str = "mqtt://127.0.0.1:1883"
    #: Receive Maximum sent in CONNECT: the broker hands over at most this many unacknowledged
    #: messages, which bounds what the agent holds in memory before committing.
    receive_maximum: int = Field(default=1000, ge=1, le=65535)
    #: Maximum Packet Size sent in CONNECT: the broker drops larger messages for the agent (a
    #: poison payload never reaches it), and the receive buffer never grows beyond it.
    max_packet_bytes: int = Field(default=256 * 1024, ge=1024, le=268_435_460)


class CloudBrokerConfig(BrokerConfig):
    #: PUBLISHes the paho client keeps in flight at most (our own window is smaller).
    max_inflight: int = Field(default=64, ge=1, le=65535)
    #: While alarms wait and the link is down: reconnect at once, then at most this many seconds
    #: apart (jittered) instead of the backoff, until connected.
    alarm_retry_s: float = Field(default=0.5, gt=0)


class BufferConfig(_Section):
    path: Path = Path("/var/lib/linli-edge/buffer.db")
    max_bytes: int = Field(default=1 << 30, ge=1 << 20, description="disk cap incl. WAL")
    #: Telemetry older than this is dropped (alarms never are).
    telemetry_max_age_s: float = Field(default=7 * 86400, gt=0)
    durability: Literal["full", "normal"] = "full"
    commit_interval_ms: float = Field(default=1000, gt=0)
    commit_max_messages: int = Field(default=500, ge=1)
    quarantine_max_rows: int = Field(default=10_000, ge=1)
    quarantine_max_payload_bytes: int = Field(default=4096, ge=0)


class UplinkConfig(_Section):
    batch_max_readings: int = Field(default=500, ge=1, le=10_000)
    batch_max_latency_ms: float = Field(default=1000, gt=0)
    #: Batches published and awaiting their PUBACK at most, per lane.
    telemetry_batches_in_flight: int = Field(default=4, ge=1, le=256)
    alarm_batches_in_flight: int = Field(default=16, ge=1, le=256)
    drain_timeout_s: float = Field(default=10.0, ge=0)
    #: Telemetry readings per second at most (0: unlimited); alarm batches are never paced.
    telemetry_max_readings_per_s: float = Field(default=0.0, ge=0)


class ClassesConfig(_Section):
    alarm_events: tuple[str, ...] = DEFAULT_ALARM_EVENTS
    #: metric -> threshold: a reading is alarm-class when the metric is at or above it.
    alarm_metrics: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_ALARM_METRICS))


class NormaliseConfig(_Section):
    #: A device time further than this from gateway time is replaced by gateway time.
    max_clock_skew_s: float = Field(default=300.0, gt=0)
    #: How many recent reading ids are remembered for dropping repeats (0: none).
    dedupe_ids_remembered: int = Field(default=20_000, ge=0)
    state_events: bool = True


class LivenessConfig(_Section):
    #: A device is offline after this many expected report intervals of silence.
    offline_after_intervals: float = Field(default=3.0, gt=1)
    check_interval_s: float = Field(default=30.0, gt=0)
    startup_grace_s: float = Field(default=60.0, ge=0)
    #: expected report interval in seconds, by profile id or device type (beats the profile's own).
    report_intervals_s: dict[str, float] = Field(default_factory=dict)


class DiscoveryConfig(_Section):
    """Devices the inventory does not list yet (`edge.pending`, docs/edge-deploy.md)."""

    #: Record devices heard on the field broker that a profile decodes but the inventory lacks.
    pending: bool = True
    #: At most this many pending devices are kept (the longest unheard dropped first).
    max_pending: int = Field(default=1000, ge=1, le=100_000)
    #: Zigbee2MQTT's retained device list, read for proposals when a loaded profile is on a
    #: Zigbee2MQTT topic ("" switches it off). Zigbee2MQTT with another base topic: change it.
    zigbee2mqtt_devices_topic: str = "zigbee2mqtt/bridge/devices"
    #: Seconds between checks of the inventory and profile files: a changed file is reloaded as
    #: by SIGHUP (0: only SIGHUP reloads).
    watch_interval_s: float = Field(default=2.0, ge=0)


class StatusConfig(_Section):
    interval_s: float = Field(default=60.0, gt=0)


class CommandsConfig(_Section):
    """Commands from the cloud to the devices (`edge.downlink`, docs/commands.md)."""

    #: Take commands from the cloud (``linli/v1/<community>/<gateway>/down``) at all.
    enabled: bool = True
    #: A command sent to a device that its reports (or the network) have not confirmed this long
    #: after is ``failed``.
    confirm_timeout_s: float = Field(default=900.0, gt=0)
    #: Seconds a publish to the field broker or a progress report to the cloud may wait for its
    #: PUBACK before it is tried again.
    publish_timeout_s: float = Field(default=10.0, gt=0)
    #: Ended commands whose end the cloud heard are kept this long in the buffer.
    keep_days: float = Field(default=7.0, gt=0)


class EdgeConfig(GatewayIdentity, BaseModel):
    """The whole configuration. Build it with `load_config`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    gateway_id: Annotated[str, Field(min_length=1)]
    community_id: Annotated[str, Field(min_length=1)]
    inventory: Path
    #: Profile folders loaded besides the shipped profiles (or instead: ``shipped_profiles``).
    profiles: tuple[Path, ...] = ()
    shipped_profiles: bool = True
    field: FieldBrokerConfig = FieldBrokerConfig()
    cloud: CloudBrokerConfig
    buffer: BufferConfig = BufferConfig()
    uplink: UplinkConfig = UplinkConfig()
    classes: ClassesConfig = ClassesConfig()
    normalise: NormaliseConfig = NormaliseConfig()
    liveness: LivenessConfig = LivenessConfig()
    discovery: DiscoveryConfig = DiscoveryConfig()
    status: StatusConfig = StatusConfig()
    commands: CommandsConfig = CommandsConfig()
    http: HttpConfig = HttpConfig()
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "text"] = "json"

    @field_validator("log_level", "log_format", mode="before")
    @classmethod
    def _any_case(cls, value: object) -> object:
        return value.lower() if isinstance(value, str) else value

    @model_validator(mode="after")
    def _some_profiles(self) -> Self:
        if not self.shipped_profiles and not self.profiles:
            raise ValueError("shipped_profiles = false needs at least one folder in profiles")
        return self

    @field_validator("gateway_id", "community_id")
    @classmethod
    def _topic_level(cls, value: str) -> str:
        if not _TOPIC_LEVEL.match(value):
            raise ValueError("must be 1-64 letters, digits, '_', '.', '-' (it is an MQTT topic level)")
        return value


def _print_warning(note: str) -> None:
    print(f"linli edge: warning: {note}", file=sys.stderr)


def load_config(
    path: Path, *, check_files: bool = True, warn: Callable[[str], None] = _print_warning
) -> EdgeConfig:
    """Read the file, merge the environment over it and validate; raise `ConfigError` listing
    every problem. Each deprecated key in use is passed to `warn` once.

    Relative paths (in the file or the environment) are taken relative to the file's folder.
    """
    layers = read_layers(path, _read(path), EdgeConfig, prefix="LINLI_EDGE_", renames=RENAMED)
    for note in layers.notes:
        warn(note)
    try:
        config = EdgeConfig(**layers.merged())
    except ValidationError as exc:
        raise ConfigError(problems=[*layers.problems, *problems_from(exc, layers)]) from exc
    if layers.problems:
        raise ConfigError(problems=layers.problems)
    config = _resolve_paths(config, path.parent)
    if check_files:
        check_paths(config, source=layers.source_of)
    return config


def _resolve(base: Path, p: Path) -> Path:
    return p if p.is_absolute() else base / p


def _resolve_tls(base: Path, tls: TlsConfig | None) -> TlsConfig | None:
    if tls is None:
        return None
    return tls.model_copy(
        update={
            name: _resolve(base, getattr(tls, name))
            for name in ("ca_cert", "client_cert", "client_key")
            if getattr(tls, name) is not None
        }
    )


def _resolve_paths(config: EdgeConfig, base: Path) -> EdgeConfig:
    return config.model_copy(
        update={
            "inventory": _resolve(base, config.inventory),
            "profiles": tuple(_resolve(base, p) for p in config.profiles),
            "buffer": config.buffer.model_copy(update={"path": _resolve(base, config.buffer.path)}),
            "field": config.field.model_copy(update={"tls": _resolve_tls(base, config.field.tls)}),
            "cloud": config.cloud.model_copy(update={"tls": _resolve_tls(base, config.cloud.tls)}),
        }
    )


def check_paths(config: EdgeConfig, *, source: Callable[[Key], str] = lambda key: "") -> None:
    """The files the configuration names exist (the buffer's folder may be created).

    Raises `ConfigError` listing every missing one; `source` says where a key was set.
    """
    found: list[tuple[Key, str]] = []
    if not config.inventory.is_file():
        found.append((("inventory",), f"no such file: {config.inventory}"))
    for i, folder in enumerate(config.profiles):
        if not folder.is_dir():
            found.append((("profiles", str(i)), f"no such folder: {folder}"))
    for side in ("field", "cloud"):
        broker: BrokerConfig = getattr(config, side)
        if broker.tls is None:
            continue
        for name in ("ca_cert", "client_cert", "client_key"):
            p = getattr(broker.tls, name)
            if p is not None and not p.is_file():
                found.append(((side, "tls", name), f"no such file: {p}"))
    parent = config.buffer.path.parent
    if parent.exists() and not parent.is_dir():
        found.append((("buffer", "path"), f"{parent} is not a folder"))
    if found:
        raise ConfigError(
            problems=[ConfigProblem(".".join(key), detail, source(key)) for key, detail in found]
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        return read_toml(path)
    except UnreadableConfig as exc:
        raise ConfigError(problems=[exc.problem]) from exc

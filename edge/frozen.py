"""Copies of the validating models the running agent reads, as msgspec structs: the same fields
and read-only members, no validators. Written by `edge.frozen_gen` (``python -m edge.frozen_gen``)
from `edge.config` and `device_profiles.model`: do not edit. `edge.handoff` fills them with data
those models validated.
"""

# ruff: noqa: E501

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import msgspec

from device_profiles.config_view import BrokerAddress, HttpAddress, Secret
from device_profiles.dialect import ProfileMembers
from edge.identity import GatewayIdentity


class TlsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    ca_cert: Path | None
    client_cert: Path | None
    client_key: Path | None


class BrokerSettings(BrokerAddress, msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    url: str
    username: str | None
    password: Secret | None
    tls: TlsConfig | None
    keepalive_s: int


class BrokerConfig(BrokerSettings, frozen=True, kw_only=True, forbid_unknown_fields=True):
    client_id: str
    session_expiry_s: int
    connect_timeout_s: float
    backoff_base_s: float
    backoff_cap_s: float


class FieldBrokerConfig(BrokerConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    receive_maximum: int
    max_packet_bytes: int


class CloudBrokerConfig(BrokerConfig, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_inflight: int
    alarm_retry_s: float


class BufferConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: Path
    max_bytes: int
    telemetry_max_age_s: float
    durability: Literal["full", "normal"]
    commit_interval_ms: float
    commit_max_messages: int
    quarantine_max_rows: int
    quarantine_max_payload_bytes: int


class UplinkConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    batch_max_readings: int
    batch_max_latency_ms: float
    telemetry_batches_in_flight: int
    alarm_batches_in_flight: int
    drain_timeout_s: float
    telemetry_max_readings_per_s: float


class ClassesConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    alarm_events: tuple[str, ...]
    alarm_metrics: dict[str, float]


class NormaliseConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    max_clock_skew_s: float
    dedupe_ids_remembered: int
    state_events: bool


class LivenessConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    offline_after_intervals: float
    check_interval_s: float
    startup_grace_s: float
    report_intervals_s: dict[str, float]


class DiscoveryConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    pending: bool
    max_pending: int
    zigbee2mqtt_devices_topic: str
    watch_interval_s: float


class StatusConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    interval_s: float


class CommandsConfig(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    enabled: bool
    confirm_timeout_s: float
    publish_timeout_s: float
    keep_days: float


class HttpConfig(HttpAddress, msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    address: str


class EdgeConfig(GatewayIdentity, msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    gateway_id: str
    community_id: str
    inventory: Path
    profiles: tuple[Path, ...]
    shipped_profiles: bool
    field: FieldBrokerConfig
    cloud: CloudBrokerConfig
    buffer: BufferConfig
    uplink: UplinkConfig
    classes: ClassesConfig
    normalise: NormaliseConfig
    liveness: LivenessConfig
    discovery: DiscoveryConfig
    status: StatusConfig
    commands: CommandsConfig
    http: HttpConfig
    log_level: Literal["debug", "info", "warning", "error"]
    log_format: Literal["json", "text"]


class DeviceIdSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    topic: str | None
    path: str | None
    case: Literal["keep", "lower", "upper"]
    pattern: str | None


class MatchRule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str
    equals: bool | int | str | None
    present: bool | None


class BinarySpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str | None
    encoding: Literal["base64", "hex"] | None
    length: int
    byte_order: Literal["big", "little"]


class PayloadSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: Literal["json", "hex", "binary"]
    binary: BinarySpec | None


class TimestampSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str | None
    at: int | None
    type: Literal["uint32", "int32"] | None
    format: Literal["epoch_s", "epoch_ms", "iso8601"]
    required: bool


class ReadingIdSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    path: str


class FieldSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    metric: str | None
    events: dict[bool | int | str, str | None] | None
    path: str | None
    at: int | None
    type: Literal["number", "integer", "bool", "string"] | Literal["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32"] | None
    byte_order: Literal["big", "little"] | None
    mask: int | None
    scale: float
    offset: float
    decimals: int | None
    map: dict[bool | int | str, float] | None
    range: tuple[float, float] | None
    out_of_range: Literal["flag", "reject"]
    required: bool
    absent_if: list[bool | int | str]
    reduce: Literal["max", "min", "first"] | None


class EncodeSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    template: dict[str, Any]
    topic_vars: dict[str, str]
    counters: list[str]


class ByteField(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    at: int
    type: Literal["int8", "uint8", "int16", "uint16", "int32", "uint32"]
    value: int | None
    param: str | None


class CommandBinary(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    length: int
    byte_order: Literal["big", "little"]
    fields: list[ByteField]


class ParamEncoding(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    map: dict[bool | int | str, bool | int | str | float] | None
    scale: float | None


class CommandSpec(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    topic: str
    json_: dict[str, Any]
    binary: CommandBinary | None
    params: dict[str, ParamEncoding]
    confirm: Literal["report", "network", "none"]
    ack_topic: str | None
    qos: Literal[0, 1]


class Profile(ProfileMembers, msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    id: str
    vendor: str
    model: str
    device_type: str
    description: str
    report_interval_s: float
    topics: list[str]
    device_id: DeviceIdSpec
    match: list[MatchRule]
    payload: PayloadSpec
    timestamp: TimestampSpec | None
    reading_id: ReadingIdSpec | None
    fields: list[FieldSpec]
    encode: EncodeSpec
    commands: dict[str, CommandSpec]
    max_payload_bytes: int

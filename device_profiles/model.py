"""Pydantic models of a profile file: the declarative description of one vendor's payload dialect.

The shape is checked field by field by pydantic; the rules that span fields (a field path needs a
JSON payload, a metric name must be canonical for the device type, ...) are checked by
`Profile`'s model validator and reported with the location of the offending field. See
docs/data-standard.md for the reference with examples.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from device_profiles.command_model import CommandSpec, command_errors
from device_profiles.dialect import (
    BINARY_FORMATS,
    DEFAULT_REPORT_INTERVAL_S,
    FALLBACK_REPORT_INTERVAL_S,
    MAX_BINARY_LENGTH,
    TOPIC_VAR,
    ProfileMembers,
    binary_size,
    topic_vars,
)
from device_profiles.paths import WILDCARD, parse_path
from device_profiles.standard import ALL_METRICS, COMMAND_EVENTS, DERIVED_EVENTS, EVENTS, METRICS

Scalar = StrictBool | StrictInt | StrictStr
JsonType = Literal["number", "integer", "bool", "string"]
BinaryType = Literal["int8", "uint8", "int16", "uint16", "int32", "uint32", "float32"]
ByteOrder = Literal["big", "little"]

_NAME = r"[a-z][a-z0-9_]*"
_ID = r"^[a-z0-9][a-z0-9_.\-]*(/[a-z0-9][a-z0-9_.\-]*)?$"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_path(value: str | None) -> str | None:
    if value is not None:
        parse_path(value)
    return value


class DeviceIdSpec(_Model):
    """Where the device id comes from: a topic variable, a payload path, or both (then they must agree)."""

    topic: str | None = None
    path: str | None = None
    case: Literal["keep", "lower", "upper"] = "keep"
    pattern: str | None = None

    _path = field_validator("path")(_check_path)

    @field_validator("pattern")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"not a regular expression: {exc}") from exc
        return value

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if self.topic is None and self.path is None:
            raise ValueError("give `topic` (a topic variable), `path` (a payload field), or both")
        return self


class MatchRule(_Model):
    """A condition on the payload that selects this profile among those sharing a topic."""

    path: str
    equals: Scalar | None = None
    present: bool | None = None

    _path = field_validator("path")(_check_path)

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        if (self.equals is None) == (self.present is None):
            raise ValueError("give exactly one of `equals` and `present`")
        return self


class BinarySpec(_Model):
    """The binary body: embedded in a JSON string (`path`, `encoding`) or the whole payload."""

    path: str | None = None
    encoding: Literal["base64", "hex"] | None = None
    length: int = Field(ge=1, le=MAX_BINARY_LENGTH)
    byte_order: ByteOrder = "big"

    _path = field_validator("path")(_check_path)


class PayloadSpec(_Model):
    format: Literal["json", "hex", "binary"]
    binary: BinarySpec | None = None

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.format == "json":
            if self.binary is not None and (self.binary.path is None or self.binary.encoding is None):
                raise ValueError("a binary body inside JSON needs `binary.path` and `binary.encoding`")
        elif self.binary is None:
            raise ValueError(f"format {self.format!r} needs a `binary` section (length, byte_order)")
        elif self.binary.path is not None or self.binary.encoding is not None:
            raise ValueError(f"format {self.format!r}: `binary.path` and `binary.encoding` are for JSON")
        return self


class TimestampSpec(_Model):
    """The device's own time: a JSON path or a binary integer, in epoch s, epoch ms or ISO 8601."""

    path: str | None = None
    at: int | None = Field(default=None, ge=0, lt=MAX_BINARY_LENGTH)
    type: Literal["uint32", "int32"] | None = None
    format: Literal["epoch_s", "epoch_ms", "iso8601"]
    #: false: a message without it (absent or null) is stamped with the receive time and flagged
    #: ``estimated_ts`` (Zigbee2MQTT sends ``last_seen`` only when configured to).
    required: bool = True

    _path = field_validator("path")(_check_path)

    @model_validator(mode="after")
    def _one_source(self) -> Self:
        if (self.path is None) == (self.at is None):
            raise ValueError("give exactly one of `path` and `at`")
        if self.at is not None and self.format == "iso8601":
            raise ValueError("a binary timestamp is an epoch number, not iso8601")
        if self.at is not None and not self.required:
            raise ValueError("a binary timestamp is always present: `required: false` is for JSON paths")
        return self


class ReadingIdSpec(_Model):
    """The vendor's message id, used as `Reading.reading_id`."""

    path: str

    _path = field_validator("path")(_check_path)


class FieldSpec(_Model):
    """One value of the payload and what it becomes: a canonical metric, or events.

    canonical value = round(raw * scale + offset, decimals), unless `map` gives it outright.
    """

    metric: str | None = Field(default=None, pattern=f"^{_NAME}$")
    events: dict[Scalar, Annotated[str, Field(pattern=f"^{_NAME}$")] | None] | None = None
    path: str | None = None
    at: int | None = Field(default=None, ge=0, lt=MAX_BINARY_LENGTH)
    type: JsonType | BinaryType | None = None
    byte_order: ByteOrder | None = None
    mask: int | None = Field(default=None, ge=1, le=0xFFFFFFFF)
    scale: float = 1.0
    offset: float = 0.0
    decimals: int | None = Field(default=None, ge=0, le=9)
    map: dict[Scalar, float] | None = None
    range: tuple[float, float] | None = None
    out_of_range: Literal["flag", "reject"] = "reject"
    required: bool = True
    absent_if: list[Scalar] = Field(default_factory=list)
    reduce: Literal["max", "min", "first"] | None = None

    _path = field_validator("path")(_check_path)

    @field_validator("scale", "offset")
    @classmethod
    def _finite(cls, value: float) -> float:
        if not math.isfinite(value):
            raise ValueError("must be a finite number")
        return value

    @model_validator(mode="after")
    def _shape(self) -> Self:
        if (self.metric is None) == (self.events is None):
            raise ValueError("give exactly one of `metric` and `events`")
        if (self.path is None) == (self.at is None):
            raise ValueError("give exactly one of `path` (JSON) and `at` (binary byte offset)")
        if self.scale == 0:
            raise ValueError("`scale` must not be 0")
        if self.map is not None and self.events is not None:
            raise ValueError("`map` gives a metric value; an events field cannot have one")
        if self.range is not None and self.range[0] > self.range[1]:
            raise ValueError("`range` must be [low, high] with low <= high")
        if self.path is not None:
            wildcard = WILDCARD in parse_path(self.path)
            if wildcard != (self.reduce is not None):
                raise ValueError("a path with [*] needs `reduce` (max, min, first), and only such a path")
            if wildcard and (self.events is not None or self.map is not None):
                raise ValueError("a path with [*] can only give a numeric metric")
        return self


class EncodeSpec(_Model):
    """What the encoder (used by the simulators) adds that a `Reading` does not carry."""

    template: dict[str, Any] = Field(default_factory=dict)
    topic_vars: dict[str, str] = Field(default_factory=dict)
    counters: list[str] = Field(default_factory=list)

    @field_validator("counters")
    @classmethod
    def _paths(cls, value: list[str]) -> list[str]:
        for path in value:
            parse_path(path)
        return value


class Profile(ProfileMembers, _Model):
    """A validated device profile."""

    id: str = Field(pattern=_ID, max_length=128)
    vendor: str = Field(min_length=1, max_length=64)
    model: str = Field(min_length=1, max_length=64)
    device_type: str = Field(pattern=f"^{_NAME}$")
    description: str = ""
    report_interval_s: float = Field(
        default=0.0, gt=0, validation_alias=AliasChoices("report_interval_s", "expected_interval_s")
    )
    topics: list[str] = Field(min_length=1)
    device_id: DeviceIdSpec
    match: list[MatchRule] = Field(default_factory=list)
    payload: PayloadSpec
    timestamp: TimestampSpec | None = None
    reading_id: ReadingIdSpec | None = None
    fields: list[FieldSpec] = Field(min_length=1)
    encode: EncodeSpec = Field(default_factory=EncodeSpec)
    #: how the dialect carries the canonical commands (`device_profiles.command_model`)
    commands: dict[str, CommandSpec] = Field(default_factory=dict)
    max_payload_bytes: int = Field(default=16384, ge=16, le=1 << 20)

    @model_validator(mode="before")
    @classmethod
    def _default_interval(cls, data: Any) -> Any:
        if isinstance(data, dict) and not {"report_interval_s", "expected_interval_s"} & data.keys():
            default = DEFAULT_REPORT_INTERVAL_S.get(data.get("device_type", ""), FALLBACK_REPORT_INTERVAL_S)
            data = {**data, "report_interval_s": default}
        return data

    @model_validator(mode="after")
    def _cross_field(self) -> Self:
        for where, detail in _cross_field_errors(self):
            raise PydanticCustomError("profile", "{field}: {detail}", {"field": where, "detail": detail})
        return self


def _cross_field_errors(p: Profile) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    is_json = p.payload.format == "json"
    binary = p.payload.binary
    for i, pattern in enumerate(p.topics):
        segs = pattern.split("/")
        if any(not s or "+" in s or "#" in s or ("{" in s and not TOPIC_VAR.match(s)) for s in segs):
            errors.append((f"topics[{i}]", f"invalid pattern {pattern!r}: use literal segments and {{var}}"))
        names = topic_vars(pattern)
        if len(set(names)) != len(names):
            errors.append((f"topics[{i}]", "a topic variable appears twice"))
        if p.device_id.topic is not None and p.device_id.topic not in names:
            errors.append(("device_id.topic", f"{{{p.device_id.topic}}} is not in topic {pattern!r}"))
    if not is_json:
        for where, path in (
            ("device_id.path", p.device_id.path),
            ("reading_id.path", p.reading_id.path if p.reading_id else None),
            ("timestamp.path", p.timestamp.path if p.timestamp else None),
        ):
            if path is not None:
                errors.append((where, f"a {p.payload.format} payload has no JSON paths"))
        if p.match:
            errors.append(("match", f"a {p.payload.format} payload has no JSON fields to match"))
    if p.timestamp is not None and p.timestamp.at is not None:
        size = binary_size(p.timestamp.type or "uint32")
        if binary is None or p.timestamp.at + size > binary.length:
            errors.append(("timestamp.at", "outside the binary payload"))
    known_metrics = METRICS.get(p.device_type)
    known_events = EVENTS.get(p.device_type)
    seen: dict[str, int] = {}
    for i, f in enumerate(p.fields):
        where = f"fields[{i}]"
        if f.metric is not None:
            if f.metric in seen:
                errors.append((f"{where}.metric", f"{f.metric!r} is also given by fields[{seen[f.metric]}]"))
            seen[f.metric] = i
            if f.metric.startswith("x_"):
                pass
            elif known_metrics is not None and f.metric not in known_metrics:
                allowed = ", ".join(sorted(known_metrics))
                errors.append(
                    (f"{where}.metric", f"{f.metric!r} is not canonical for {p.device_type} ({allowed})")
                )
            elif known_metrics is None and f.metric not in ALL_METRICS:
                errors.append(
                    (
                        f"{where}.metric",
                        f"{f.metric!r} is not a canonical metric (docs/data-standard.md lists them); "
                        f"use one, or prefix a vendor extension with x_",
                    )
                )
        for event in (f.events or {}).values():
            if event in DERIVED_EVENTS or event in COMMAND_EVENTS:
                who = (
                    "derived by the edge"
                    if event in DERIVED_EVENTS
                    else "written by the cloud's command sender"
                )
                errors.append((f"{where}.events", f"{event!r} is {who}; a payload cannot state it"))
                continue
            if event is None or known_events is None or event in known_events or event.startswith("x_"):
                continue
            allowed = ", ".join(sorted(known_events)) or "none"
            errors.append((f"{where}.events", f"{event!r} is not canonical for {p.device_type} ({allowed})"))
        errors.extend(_field_errors(f, where, is_json, binary))
    topic_var_names = {v for pattern in p.topics for v in topic_vars(pattern)}
    errors.extend(command_errors(p.device_type, p.commands, topic_var_names))
    if binary is not None and p.timestamp is None and not any(f.at is not None for f in p.fields):
        errors.append(("payload.binary", "declared but no field reads it (give fields an `at`)"))
    return errors


def _field_errors(
    f: FieldSpec, where: str, is_json: bool, binary: BinarySpec | None
) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    ftype = f.type
    if f.path is not None:
        if not is_json:
            errors.append((f"{where}.path", "this payload is not JSON: use `at`"))
        if ftype is not None and ftype in BINARY_FORMATS:
            errors.append(
                (f"{where}.type", f"{ftype!r} is a binary type; JSON types: number, integer, bool, string")
            )
        if f.mask is not None or f.byte_order is not None:
            errors.append((where, "`mask` and `byte_order` are for binary fields"))
        ftype = ftype or "number"
    else:
        if binary is None:
            errors.append((f"{where}.at", "the profile declares no binary payload (`payload.binary`)"))
        if ftype is None or ftype not in BINARY_FORMATS:
            errors.append((f"{where}.type", "a binary field needs a type: int8..uint32 or float32"))
            return errors
        if binary is not None and f.at is not None and f.at + binary_size(ftype) > binary.length:
            errors.append(
                (f"{where}.at", f"{ftype} at byte {f.at} runs past the {binary.length}-byte payload")
            )
        if f.mask is not None and (ftype == "float32" or f.mask >= 1 << (8 * binary_size(ftype))):
            errors.append((f"{where}.mask", f"does not fit a {ftype}"))
    key_types: tuple[type, ...] = {
        "bool": (bool,),
        "string": (str,),
        "number": (int,),
        "float32": (),
    }.get(ftype, (int,))
    for name, table in (("map", f.map), ("events", f.events), ("absent_if", dict.fromkeys(f.absent_if))):
        for key in table or {}:
            if type(key) not in key_types:
                errors.append((f"{where}.{name}", f"key {key!r} does not fit type {ftype}"))
    if ftype in ("string", "bool") and f.map is None and f.events is None:
        errors.append((where, f"a {ftype} value needs a `map` (to a number) or `events`"))
    if f.events is not None and ftype in ("number", "float32"):
        errors.append((f"{where}.type", "events need an integer, bool or string value"))
    return errors

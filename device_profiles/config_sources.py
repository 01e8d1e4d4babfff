"""Where the configuration's values come from, and what is wrong with them.

Shared by the edge agent's and the cloud's configurations, so both follow one convention.
Two layers: the TOML file and the ``LINLI_EDGE_*`` or ``LINLI_CLOUD_*`` environment (which wins).
`read_layers` reads both into nested dicts and moves deprecated keys to their new names in each,
noting every rename once. `problems_from` turns a pydantic `ValidationError` into `ConfigProblem`s,
each naming the file and dotted key, or the environment variable that set the value, without
pydantic's internal prefixes. Each side wraps the problems in its own ``ConfigError``; edge and
cloud never import each other, and both import this package.
"""

from __future__ import annotations

import json
import os
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Self, Union
from urllib.parse import urlsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)

from device_profiles.config_view import BrokerAddress, ConfigProblem, HttpAddress, Key
from device_profiles.errors import DeviceProfilesError


class UnreadableConfig(DeviceProfilesError):
    """The configuration file cannot be read or is not TOML; each side maps it to its ``ConfigError``.

    Attributes:
        problem: what is wrong, naming the file.
    """

    def __init__(self, problem: ConfigProblem) -> None:
        self.problem = problem
        super().__init__(str(problem))


#: pydantic's words for a failed validator, which say nothing to the reader.
_INTERNAL_PREFIX = re.compile(r"^(Value error|Assertion failed), ")
#: ... and its names of Python classes (``input is not a valid path for <class 'pathlib.Path'>``).
_PYTHON_CLASS = re.compile(r" for <class '[\w.]+'>")


@dataclass(slots=True)
class Layers:
    """The file's values and the environment's, as nested dicts."""

    path: Path
    prefix: str
    file: dict[str, Any]
    env: dict[str, Any]
    #: key -> the (deprecated) variable that set it, where that is not the key's own name.
    env_names: dict[Key, str] = field(default_factory=dict)
    #: new key -> the deprecated key the file used for it.
    file_renamed: dict[Key, Key] = field(default_factory=dict)
    #: one line per deprecated name in use.
    notes: list[str] = field(default_factory=list)
    problems: list[ConfigProblem] = field(default_factory=list)

    def merged(self) -> dict[str, Any]:
        return _merge(self.file, self.env)

    def env_var(self, key: Key) -> str:
        return self.env_names.get(key) or self.prefix + "__".join(part.upper() for part in key)

    def source_of(self, key: Key) -> str:
        """The environment variable that set `key` (or a section holding it), else the file."""
        if not key:
            return str(self.path)
        node: Any = self.env
        for part in key:
            if not isinstance(node, Mapping) or part not in node:
                return str(self.path)
            node = node[part]
            if not isinstance(node, Mapping):  # a value (a list, too) the environment set
                break
        for i in range(len(key), 0, -1):  # the most specific variable that is set
            if key[:i] in self.env_names or _getenv(self.env_var(key[:i])) is not None:
                return self.env_var(key[:i])
        return self.env_var(key)


def read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; `UnreadableConfig` when it cannot be read or is not TOML."""
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UnreadableConfig(ConfigProblem("", f"cannot read: {exc.strerror or exc}", str(path))) from exc
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnreadableConfig(ConfigProblem("", f"not valid TOML: {exc}", str(path))) from exc


def read_layers(
    path: Path,
    file: dict[str, Any],
    settings_cls: type[BaseModel],
    *,
    prefix: str,
    renames: Mapping[Key, Key],
) -> Layers:
    """The file's values (already parsed) and the environment's, deprecated names moved."""
    env = read_env(settings_cls, prefix=prefix)
    layers = Layers(path=path, prefix=prefix, file=file, env=env)
    for old, new in renames.items():
        old_key, new_key = ".".join(old), ".".join(new)
        if _rename(layers, layers.file, old, new, source=str(path), names=(f"{path}: {old_key}", new_key)):
            layers.file_renamed[new] = old
        old_var = layers.env_var(old)
        value = _getenv(old_var)
        if value is not None:
            # The source passes an old key of a section the model still has as text.
            _pop(layers.env, old)
            _put(layers.env, old, _decoded(value))
            if _rename(layers, layers.env, old, new, source=old_var, names=(old_var, layers.env_var(new))):
                layers.env_names[new] = old_var
    return layers


def _rename(
    layers: Layers, data: dict[str, Any], old: Key, new: Key, *, source: str, names: tuple[str, str]
) -> bool:
    """Move `old` to `new` in `data`, noting it (`names`: how to call the two in the note)."""
    value = _pop(data, old)
    if value is None:
        return False
    if _get(data, new) is not None:
        detail = f"deprecated name of {'.'.join(new)}, which is set too: remove it"
        layers.problems.append(ConfigProblem(".".join(old), detail, source))
        return False
    _put(data, new, value)
    if _get(data, old[:-1]) == {}:  # a section that only held the old name
        _pop(data, old[:-1])
    layers.notes.append(
        f"{names[0]} is deprecated, use {names[1]} (the old name stops working in the next release)"
    )
    return True


def problems_from(exc: ValidationError, layers: Layers) -> list[ConfigProblem]:
    out = []
    for err in exc.errors():
        key = tuple(str(part) for part in err["loc"])
        source = layers.source_of(key)
        shown = key
        if source == str(layers.path):  # name the key as the file spells it
            for new, old in layers.file_renamed.items():
                if key[: len(new)] == new:
                    shown = old + key[len(new) :]
        if err["type"] == "missing":
            detail = f"missing (set it in the file or in {layers.env_var(key)})"
        elif err["type"] == "extra_forbidden":
            detail = "unknown key"
        else:
            detail = error_detail(err["msg"])
        out.append(ConfigProblem(".".join(shown), detail, source))
    return out


def error_detail(message: str) -> str:
    """A pydantic error message as linli prints it: without pydantic's internal prefixes
    (``Value error, ``) and names of Python classes, starting in lower case."""
    detail = _PYTHON_CLASS.sub("", _INTERNAL_PREFIX.sub("", message))
    return detail[0].lower() + detail[1:] if detail[:2].istitle() else detail


def read_env(model: type[BaseModel], *, prefix: str) -> dict[str, Any]:
    """The variables named ``<prefix><KEY>`` (any case) as a nested dict: ``__`` separates the
    levels (``LINLI_EDGE_CLOUD__URL`` is ``cloud.url``). A value for a section, a list or a
    table is JSON (``LINLI_EDGE_PROFILES='["/etc/linli/profiles"]'``); any other value is text,
    converted by the model's validation. Variables whose first level is not one of the model's
    fields are not ours and are left alone.
    """
    out: dict[str, Any] = {}
    upper = prefix.upper()
    for name, value in os.environ.items():
        if not name.upper().startswith(upper) or len(name) == len(prefix):
            continue
        key = tuple(name[len(prefix) :].lower().split("__"))
        if key[0] not in model.model_fields or not all(key):
            continue
        _put(out, key, _decoded(value) if _complex(_annotation(model, key)) else value)
    return out


def _annotation(model: type[BaseModel], key: Key) -> Any:
    """The type annotation of `key` in `model` (None when the key is not one of its fields)."""
    annotation: Any = model
    for part in key:
        sub = _model_in(annotation)
        if sub is None or part not in sub.model_fields:
            return None
        annotation = sub.model_fields[part].annotation
    return annotation


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model class an annotation names, also inside ``X | None``."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if typing.get_origin(annotation) in (Union, types.UnionType):
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _complex(annotation: Any) -> bool:
    """A section, list, tuple, set or table: its variable holds JSON."""
    if _model_in(annotation) is not None:
        return True
    origin = typing.get_origin(annotation)
    if origin in (Union, types.UnionType):
        return any(_complex(arg) for arg in typing.get_args(annotation) if arg is not type(None))
    if origin is typing.Annotated:
        return _complex(typing.get_args(annotation)[0])
    return origin in (list, tuple, set, frozenset, dict) or annotation in (list, tuple, set, frozenset, dict)


def _decoded(value: str) -> Any:
    """A JSON object or array as pydantic-settings reads one for a complex field; else the text."""
    if value.lstrip().startswith(("{", "[")):
        try:
            return json.loads(value)
        except ValueError:
            pass
    return value


def _getenv(name: str) -> str | None:
    value = os.environ.get(name)
    if value is None:
        upper = name.upper()
        value = next((v for k, v in os.environ.items() if k.upper() == upper), None)
    return value


def _get(data: Mapping[str, Any], key: Key) -> Any:
    node: Any = data
    for part in key:
        if not isinstance(node, Mapping) or part not in node:
            return None
        node = node[part]
    return node


def _pop(data: dict[str, Any], key: Key) -> Any:
    parent = _get(data, key[:-1])
    if not isinstance(parent, dict):
        return None
    return parent.pop(key[-1], None)


def _put(data: dict[str, Any], key: Key, value: Any) -> None:
    node = data
    for part in key[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):  # a scalar where a section belongs: validation says so
            return
        node = child
    node[key[-1]] = value


def _merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
    return out


class HttpConfig(HttpAddress, BaseModel):
    """The ``[http]`` section of both the edge's and the cloud's configuration: the endpoint that
    serves ``/metrics`` and ``/healthz``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    #: host:port to listen on ([::1]:9108 for IPv6; port 0 picks a free one, logged); "" disables it.
    address: str = "127.0.0.1:9108"

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        if value:
            host, sep, port = value.rpartition(":")
            if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
                raise ValueError("must be host:port, e.g. 127.0.0.1:9108")
        return value


def time_zone_name(value: str) -> str:
    """`value` if it names an IANA time zone this machine knows."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from exc
    return value


#: a configuration's time zone: an IANA name such as ``Asia/Shanghai``
TimeZoneName = Annotated[str, AfterValidator(time_zone_name)]


class TlsConfig(BaseModel):
    """TLS towards a broker, on both sides. ``ca_cert`` alone: server authentication; with
    ``client_cert`` and ``client_key``: mutual TLS."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None

    @model_validator(mode="after")
    def _pair(self) -> Self:
        if (self.client_cert is None) != (self.client_key is None):
            missing = "client_key" if self.client_key is None else "client_cert"
            raise ValueError(f"{missing} is required when the other half of the client key pair is set")
        return self


class BrokerSettings(BrokerAddress, BaseModel):
    """What the edge's and the cloud's MQTT sections share: the broker's address and how to log
    in. Each side adds its own keys (client id, session, flow control)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str
    username: str | None = None
    password: SecretStr | None = None
    tls: TlsConfig | None = None
    keepalive_s: int = Field(default=30, ge=5, le=3600)

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

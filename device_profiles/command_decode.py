"""The inverse of `command_encode`: which canonical command a message on a profile's command topic is.

The simulated devices use it to obey what the gateway sends them in their own dialect: the topic
is matched against each command's ``topic`` pattern, the JSON against its template (constants
equal, placeholders captured), a binary body unpacked field by field (constant fields must
match: they are the opcode), and each parameter mapped back through its ``map`` or ``scale``.
The result is checked against the standard, so what comes back is a valid command.
"""

from __future__ import annotations

import base64
import binascii
import re
import struct
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, NamedTuple

import msgspec

from device_profiles.commands import CommandError, Value, check_command, command_def

if TYPE_CHECKING:
    from device_profiles.command_model import CommandSpec
    from device_profiles.model import Profile

_FORMATS = {"int8": "b", "uint8": "B", "int16": "h", "uint16": "H", "int32": "i", "uint32": "I"}
_WHOLE = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")
_PART = re.compile(r"\{([a-z_][a-z0-9_]*)\}")


class DecodedCommand(NamedTuple):
    device_id: str
    name: str
    params: dict[str, Value]
    topic_vars: dict[str, str]


def topic_pattern(template: str) -> re.Pattern[str]:
    """A regular expression for a topic template: each ``{name}`` one whole topic level."""
    out, last = [], 0
    for m in _PART.finditer(template):
        out.append(re.escape(template[last : m.start()]))
        out.append(f"(?P<{m.group(1)}>[^/]+)")
        last = m.end()
    out.append(re.escape(template[last:]))
    return re.compile("^" + "".join(out) + "$")


def topic_filter(template: str) -> str:
    """The MQTT filter of a topic template (each ``{name}`` level becomes ``+``)."""
    return _PART.sub("+", template)


class _NoMatch(Exception):
    pass


def _match(template: Any, value: Any, names: dict[str, Any]) -> None:
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole is not None:
            names[whole.group(1)] = value
            return
        if not _PART.search(template):
            if template != value:
                raise _NoMatch
            return
        if not isinstance(value, str):
            raise _NoMatch
        found = topic_pattern(template).match(value)
        if found is None:
            raise _NoMatch
        names.update(found.groupdict())
        return
    if isinstance(template, dict):
        if not isinstance(value, dict) or set(value) != set(template):
            raise _NoMatch
        for key, sub in template.items():
            _match(sub, value[key], names)
        return
    if isinstance(template, list):
        if not isinstance(value, list) or len(value) != len(template):
            raise _NoMatch
        for sub, item in zip(template, value, strict=True):
            _match(sub, item, names)
        return
    if template != value or type(template) is not type(value):
        raise _NoMatch


def _body(spec: CommandSpec, names: Mapping[str, Any]) -> dict[str, Any]:
    assert spec.binary is not None  # noqa: S101 - the caller checked
    try:
        if "binary" in names:
            body = base64.b64decode(str(names["binary"]), validate=True)
        else:
            body = bytes.fromhex(str(names["binary_hex"]))
    except (binascii.Error, ValueError):
        raise _NoMatch from None
    if len(body) != spec.binary.length:
        raise _NoMatch
    order = ">" if spec.binary.byte_order == "big" else "<"
    out: dict[str, Any] = {}
    for f in spec.binary.fields:
        (raw,) = struct.unpack_from(order + _FORMATS[f.type], body, f.at)
        if f.value is not None:
            if raw != f.value:
                raise _NoMatch
        elif f.param is not None:
            out[f.param] = raw
    return out


def _decode_one(profile: Profile, name: str, spec: CommandSpec, topic: str, doc: Any) -> DecodedCommand:
    found = topic_pattern(spec.topic).match(topic)
    if found is None:
        raise _NoMatch
    topic_vars = found.groupdict()
    names: dict[str, Any] = {}
    _match(spec.json_, doc, names)
    device_id = names.get("device_id") or topic_vars.get("device_id")
    if device_id is None and profile.device_id.topic is not None:
        device_id = topic_vars.get(profile.device_id.topic)
    if not isinstance(device_id, str):
        raise _NoMatch
    definition = command_def(profile.device_type, name)
    raw = {k: v for k, v in names.items() if k in definition.params}
    if spec.binary is not None:
        raw.update(_body(spec, names))
    params: dict[str, object] = {}
    for key, param in definition.params.items():
        if key not in raw:
            raise _NoMatch
        value = raw[key]
        how = spec.params.get(key)
        if how is not None and how.map is not None:
            back = [k for k, v in how.map.items() if v == value and type(v) is type(value)]
            if not back:
                raise _NoMatch
            value = back[0]
        elif how is not None and how.scale is not None:
            value = round(value / how.scale)
        if param.kind == "time" and isinstance(value, int) and not isinstance(value, bool):
            value = f"{value // 60:02d}:{value % 60:02d}"
        elif param.kind == "bool" and isinstance(value, int) and not isinstance(value, bool):
            value = bool(value)
        params[key] = value
    try:
        checked = check_command(profile.device_type, name, params)
    except CommandError:
        raise _NoMatch from None
    return DecodedCommand(device_id=device_id, name=name, params=checked, topic_vars=topic_vars)


def decode_command(profile: Profile, topic: str, payload: bytes) -> DecodedCommand | None:
    """The command a message of the profile's dialect carries, or None when it is none of them."""
    try:
        doc = msgspec.json.decode(payload)
    except msgspec.DecodeError:
        return None
    for name, spec in profile.commands.items():
        try:
            return _decode_one(profile, name, spec, topic, doc)
        except _NoMatch:
            continue
    return None

"""A canonical command for one device, in its profile's dialect: the topic and the message to publish.

`encode_command` checks the command against the standard (`commands.check_command`), refuses one
the profile cannot carry, and fills the profile's templates (`command_model`): parameter values
through their ``map`` or ``scale``, a binary body packed field by field, the topic's variables from
the device's last uplink topic. Pure: the edge agent calls it for each command it sends, tests and
``linli profiles command`` call it to show what a command becomes.
"""

from __future__ import annotations

import base64
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


class EncodedCommand(NamedTuple):
    """What to publish: topic, payload, QoS, and how the command's effect is confirmed."""

    topic: str
    payload: bytes
    qos: int
    confirm: str


def supported_commands(profile: Profile) -> list[str]:
    return sorted(profile.commands)


def carried(
    profile: Profile, name: str, params: Mapping[str, object]
) -> tuple[dict[str, Value], CommandSpec]:
    """The checked parameters of a command and the profile's way of carrying it; `CommandError`
    when the standard refuses the command or the model cannot carry it."""
    values: dict[str, Value] = check_command(profile.device_type, name, params)
    spec = profile.commands.get(name)
    if spec is None:
        supported = ", ".join(supported_commands(profile)) or "none"
        what = command_def(profile.device_type, name).description
        raise CommandError(
            f"profile {profile.id} ({profile.vendor} {profile.model}) cannot carry {name} ({what}); "
            f"its commands: {supported}"
        )
    return values, spec


def _binary(spec: CommandSpec, values: Mapping[str, Any]) -> bytes:
    assert spec.binary is not None  # noqa: S101 - checked by the caller
    body = bytearray(spec.binary.length)
    order = ">" if spec.binary.byte_order == "big" else "<"
    for f in spec.binary.fields:
        raw = f.value if f.value is not None else values[f.param or ""]
        if isinstance(raw, str):  # a time, HH:MM: minutes since midnight
            hours, minutes = raw.split(":")
            raw = int(hours) * 60 + int(minutes)
        try:
            struct.pack_into(order + _FORMATS[f.type], body, f.at, int(raw))
        except struct.error as exc:
            raise CommandError(f"{f.param or 'value'} {raw!r} does not fit a {f.type}: {exc}") from None
    return bytes(body)


def _fill(template: Any, names: Mapping[str, Any]) -> Any:
    if isinstance(template, str):
        whole = _WHOLE.match(template)
        if whole is not None:
            return names[whole.group(1)]
        return _PART.sub(lambda m: str(names[m.group(1)]), template)
    if isinstance(template, dict):
        return {_fill(k, names): _fill(v, names) for k, v in template.items()}
    if isinstance(template, list):
        return [_fill(v, names) for v in template]
    return template


def encode_command(
    profile: Profile,
    device_id: str,
    name: str,
    params: Mapping[str, object],
    *,
    topic_vars: Mapping[str, str] | None = None,
) -> EncodedCommand:
    """The message for command `name` with `params` to `device_id`; `CommandError` saying why not."""
    values, spec = carried(profile, name, params)
    encoded: dict[str, Any] = dict(values)
    for param, how in spec.params.items():
        value = encoded[param]
        if how.map is not None:
            if value not in how.map:
                raise CommandError(f"{name}: {param} {value!r} has no value in the profile's map")
            encoded[param] = how.map[value]
        elif how.scale is not None and not isinstance(value, str):
            encoded[param] = round(float(value) * how.scale)
    names: dict[str, Any] = {**dict(topic_vars or {}), "device_id": device_id, **encoded}
    if profile.device_id.topic is not None:  # the topic variable the uplink carries the id in
        names.setdefault(profile.device_id.topic, device_id)
    if spec.binary is not None:
        body = _binary(spec, encoded)
        names["binary"] = base64.b64encode(body).decode()
        names["binary_hex"] = body.hex()
    missing = sorted(set(_PART.findall(spec.topic)) - names.keys())
    if missing:
        raise CommandError(
            f"{name} to {device_id}: the topic needs {', '.join(missing)}, which the device's uplink "
            f"topic gives (no message from it yet?)"
        )
    topic = _PART.sub(lambda m: str(names[m.group(1)]), spec.topic)
    payload = msgspec.json.encode(_fill(spec.json_, names))
    return EncodedCommand(topic=topic, payload=payload, qos=spec.qos, confirm=spec.confirm)

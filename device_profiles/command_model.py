"""How a profile's dialect carries the canonical commands: the ``commands`` section of a profile.

Data only, like the rest of a profile::

    commands:
      dim:
        topic: "application/{application_id}/device/{dev_eui}/command/down"
        json: {devEui: "{device_id}", confirmed: true, fPort: 10, data: "{binary}"}
        binary:
          length: 2
          fields:
            - {at: 0, type: uint8, value: 2}          # opcode
            - {at: 1, type: uint8, param: level_pct}
        confirm: network

- ``topic``: where to publish; ``{name}`` levels are the device's uplink topic variables (the edge
  keeps the last topic each device used) or ``device_id``.
- ``json``: the message, a JSON document in which a string that is exactly ``"{name}"`` becomes the
  value itself (a number stays a number) and ``"...{name}..."`` inside a longer string is
  substituted as text. Names: the command's parameters, ``device_id``, topic variables, and
  ``binary`` (the body below, base64) or ``binary_hex``.
- ``binary``: a byte body of ``length`` bytes (``byte_order``), each field a constant ``value`` or a
  ``param`` at byte ``at`` as one of the binary types; a ``time`` parameter is minutes since midnight.
- ``params``: per parameter, a ``map`` of its values to what the dialect wants (``{true: "ON"}``)
  or a ``scale``.
- ``confirm``: ``report`` (the device's next report shows the new state: `commands.CONFIRMS`),
  ``network`` (the network acknowledges delivery: a confirmed LoRaWAN downlink) or ``none``.

A command the section does not name is one the model cannot carry: the standard refuses it for
this profile with a clear error (`command_encode.encode_command`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, model_validator

from device_profiles.commands import COMMANDS, CommandDef

BinaryType = Literal["int8", "uint8", "int16", "uint16", "int32", "uint32"]
_SIZES = {"int8": 1, "uint8": 1, "int16": 2, "uint16": 2, "int32": 4, "uint32": 4}
_PLACEHOLDER = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
#: Names every command may use besides its parameters and the topic variables.
BUILTINS = frozenset({"device_id", "binary", "binary_hex"})


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ByteField(_Model):
    at: int = Field(ge=0, lt=256)
    type: BinaryType = "uint8"
    value: StrictInt | None = None
    param: str | None = None

    @model_validator(mode="after")
    def _one(self) -> Self:
        if (self.value is None) == (self.param is None):
            raise ValueError("give exactly one of `value` and `param`")
        return self


class CommandBinary(_Model):
    length: int = Field(ge=1, le=242)  # the largest LoRaWAN application payload
    byte_order: Literal["big", "little"] = "big"
    fields: list[ByteField] = Field(min_length=1)


class ParamEncoding(_Model):
    map: dict[StrictBool | StrictInt | StrictStr, StrictBool | StrictInt | StrictStr | float] | None = None
    scale: float | None = None


class CommandSpec(_Model):
    topic: str
    json_: dict[str, Any] = Field(alias="json")
    binary: CommandBinary | None = None
    params: dict[str, ParamEncoding] = Field(default_factory=dict)
    confirm: Literal["report", "network", "none"] = "report"
    #: with ``confirm: network``: where the network says a downlink was acknowledged (ChirpStack's
    #: ``.../event/ack``); the device is the one whose id is one of the topic's variables
    ack_topic: str | None = None
    qos: Literal[0, 1] = 1


def placeholders(value: Any) -> set[str]:
    """Every ``{name}`` in a JSON template (keys and strings, at any depth)."""
    found: set[str] = set()
    if isinstance(value, str):
        found.update(_PLACEHOLDER.findall(value))
    elif isinstance(value, dict):
        for k, v in value.items():
            found |= placeholders(k) | placeholders(v)
    elif isinstance(value, list):
        for v in value:
            found |= placeholders(v)
    return found


def command_errors(
    device_type: str, commands: dict[str, CommandSpec], topic_vars: set[str]
) -> list[tuple[str, str]]:
    """(location, problem) of every command entry: canonical for the type, placeholders known,
    binary fields inside the body and naming known parameters."""
    errors: list[tuple[str, str]] = []
    known: Mapping[str, CommandDef] = COMMANDS.get(device_type, {})
    for name, spec in commands.items():
        where = f"commands.{name}"
        definition = known.get(name)
        if definition is None:
            allowed = ", ".join(sorted(known)) or "none"
            errors.append((where, f"{name!r} is not a command of {device_type} ({allowed})"))
            continue
        params = set(definition.params)
        names = params | topic_vars | BUILTINS
        for var in placeholders(spec.topic):
            if var not in topic_vars | {"device_id"}:
                errors.append(
                    (f"{where}.topic", f"{{{var}}} is neither device_id nor a variable of the uplink topics")
                )
        for var in sorted(placeholders(spec.json_) - names):
            errors.append(
                (
                    f"{where}.json",
                    f"{{{var}}} is not a parameter of {name} ({', '.join(sorted(params)) or 'none'})",
                )
            )
        if (spec.confirm == "network") != (spec.ack_topic is not None):
            errors.append((where, "`confirm: network` and an `ack_topic` go together"))
        uses_binary = bool(placeholders(spec.json_) & {"binary", "binary_hex"})
        if uses_binary != (spec.binary is not None):
            errors.append((where, "a `binary` body and a {binary} (or {binary_hex}) in `json` go together"))
        if spec.binary is not None:
            for i, f in enumerate(spec.binary.fields):
                if f.at + _SIZES[f.type] > spec.binary.length:
                    errors.append(
                        (
                            f"{where}.binary.fields[{i}]",
                            f"{f.type} at byte {f.at} runs past the {spec.binary.length}-byte body",
                        )
                    )
                if f.param is not None and f.param not in params:
                    errors.append(
                        (f"{where}.binary.fields[{i}].param", f"{f.param!r} is not a parameter of {name}")
                    )
        for param in spec.params:
            if param not in params:
                errors.append((f"{where}.params.{param}", f"{param!r} is not a parameter of {name}"))
    return errors

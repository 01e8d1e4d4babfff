"""What the compiled engine needs of the profile format, without the validating models.

`device_profiles.model` validates profile files with pydantic; the engine (decoders, encoders,
topic selection) only reads the validated fields, and uses these constants and helpers. Keeping
them here lets a process run the engine on profiles it did not validate itself (the edge agent
runs on profiles its loader checked: `edge.handoff`) without importing pydantic.
"""

from __future__ import annotations

import re
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Final

#: The profiles shipped with the package.
SHIPPED_DIR: Final = Path(__file__).parent / "profiles"

#: struct format character and size of each binary type.
BINARY_FORMATS: Final = {
    "int8": "b",
    "uint8": "B",
    "int16": "h",
    "uint16": "H",
    "int32": "i",
    "uint32": "I",
    "float32": "f",
}

#: Liveness defaults (seconds between reports) per device type, when a profile does not say.
DEFAULT_REPORT_INTERVAL_S: Final = {
    "door_contact": 3600.0,
    "sos_button": 14400.0,
    "manhole_cover": 1800.0,
    "streetlight": 900.0,
    "environment_sensor": 3600.0,
    "smoke_detector": 14400.0,
    "water_leak_sensor": 14400.0,
}
FALLBACK_REPORT_INTERVAL_S: Final = 3600.0
MAX_BINARY_LENGTH: Final = 1024

#: A topic level that is a variable: ``{dev_eui}``.
TOPIC_VAR: Final = re.compile(r"^\{([a-z_][a-z0-9_]*)\}$")


def binary_size(type_name: str) -> int:
    return struct.calcsize(BINARY_FORMATS[type_name])


def topic_segments(pattern: str) -> list[str | None]:
    """Split a topic pattern: a literal segment as is, ``{var}`` as None."""
    return [None if TOPIC_VAR.match(seg) else seg for seg in pattern.split("/")]


def topic_vars(pattern: str) -> list[str]:
    return [m.group(1) for seg in pattern.split("/") if (m := TOPIC_VAR.match(seg))]


class ProfileMembers:
    """What a profile offers besides its fields (a base of the validated `Profile` and of its
    copy in `edge.frozen`)."""

    __slots__ = ()
    if TYPE_CHECKING:
        report_interval_s: float

    @property
    def expected_interval_s(self) -> float:
        """Seconds between two reports of a healthy device (the edge agent's liveness check)."""
        return self.report_interval_s

"""The unified data standard: canonical readings and declarative per-vendor device profiles.

    from device_profiles import DecodeError, ProfileSet

    profiles = ProfileSet.shipped()
    result = profiles.decode(topic, payload, received_at)   # Reading | DecodeError, never raises
    topic, payload = profiles.encode(reading)               # the vendor's dialect (simulators)

See docs/data-standard.md for the canonical names and units and the profile file format.
"""

from typing import TYPE_CHECKING

from device_profiles.dialect import DEFAULT_REPORT_INTERVAL_S, SHIPPED_DIR
from device_profiles.engine import MAX_PAYLOAD_BYTES, ProfileSet
from device_profiles.errors import (
    DeviceProfilesError,
    EncodeError,
    LinliProfilesError,
    ProfileError,
    UnknownProfileError,
)
from device_profiles.jsonschema import reading_schema
from device_profiles.reading import DEVICE_TYPES, Reading
from device_profiles.standard import (
    ALL_EVENTS,
    ALL_METRICS,
    DERIVED_EVENTS,
    ENVIRONMENT_METRICS,
    EVENTS,
    LIVENESS_EVENTS,
    METRICS,
    QUALITY_FLAGS,
    REASONS,
    STATE_EVENTS,
    DecodeError,
    Event,
)

__all__ = [
    "ALL_EVENTS",
    "ALL_METRICS",
    "DEFAULT_REPORT_INTERVAL_S",
    "DERIVED_EVENTS",
    "DEVICE_TYPES",
    "ENVIRONMENT_METRICS",
    "EVENTS",
    "LIVENESS_EVENTS",
    "MAX_PAYLOAD_BYTES",
    "METRICS",
    "QUALITY_FLAGS",
    "REASONS",
    "SHIPPED_DIR",
    "STATE_EVENTS",
    "DecodeError",
    "DeviceProfilesError",
    "EncodeError",
    "Event",
    "LinliProfilesError",
    "Profile",
    "ProfileError",
    "ProfileSet",
    "Reading",
    "UnknownProfileError",
    "reading_schema",
]

if TYPE_CHECKING:
    from device_profiles.model import Profile


def __getattr__(name: str) -> object:
    # `Profile` is the pydantic model: imported when asked for, so that running compiled
    # profiles (`ProfileSet`) does not load pydantic.
    if name == "Profile":
        from device_profiles.model import Profile

        return Profile
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

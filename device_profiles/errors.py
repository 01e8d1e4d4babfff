"""Exceptions of `device_profiles`.

One root, everything else below it::

    DeviceProfilesError
    ├── ProfileError        a profile file is invalid (raised at load; names the file and the field)
    ├── UnknownProfileError a profile id that is not loaded
    └── EncodeError         a reading cannot be written in its profile's vendor dialect

Decoding never raises: a payload that cannot be decoded gives a `DecodeError` value (see
`device_profiles.standard`), which the caller can quarantine with its reason code.
"""

from __future__ import annotations

from pathlib import Path


class DeviceProfilesError(Exception):
    """Root of every exception this package raises."""


#: Alias kept for callers that name the root after the project.
LinliProfilesError = DeviceProfilesError


class ProfileError(DeviceProfilesError):
    """A profile file is invalid.

    Attributes:
        path: the offending file (None for a profile built in memory).
        field: dotted location of the offending field, e.g. ``fields[2].scale`` ('' for the file).
        detail: what is wrong with it.
    """

    def __init__(self, path: Path | None, field: str, detail: str) -> None:
        self.path = path
        self.field = field
        self.detail = detail
        where = str(path) if path is not None else "<profile>"
        super().__init__(f"{where}: {field}: {detail}" if field else f"{where}: {detail}")


class UnknownProfileError(DeviceProfilesError, KeyError):
    """No loaded profile has this id."""

    def __init__(self, profile_id: str) -> None:
        self.profile_id = profile_id
        super().__init__(profile_id)

    def __str__(self) -> str:
        return f"no profile with id {self.profile_id!r} is loaded"


class EncodeError(DeviceProfilesError):
    """A reading cannot be written in its profile's vendor dialect.

    Attributes:
        profile: the profile id.
        field: the metric, event or envelope field at fault.
    """

    def __init__(self, profile: str, field: str, detail: str) -> None:
        self.profile = profile
        self.field = field
        super().__init__(f"{profile}: {field}: {detail}")


class Rejected(Exception):
    """Internal: raised inside a compiled decoder, turned into a `DecodeError` by the engine."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        self.message = message
        super().__init__(reason, message)

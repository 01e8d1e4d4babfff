"""The command messages between the cloud and a gateway: the one definition both sides import.

- `DownCommand`, cloud -> gateway on ``linli/v1/<community>/<gateway>/down`` (QoS 1): one
  command, JSON. The cloud sends it again until the gateway reports it stored (`AT_GATEWAY`); the
  gateway keeps one copy per `command_id` and acknowledges the MQTT message only after storing it.
  `seq` orders the commands of a device (the cloud's outbox order).
- `CommandProgress`, gateway -> cloud on ``linli/v1/<community>/<gateway>/commands`` (QoS 1):
  the state a command reached at the gateway, and why when it ended early. The gateway sends each
  state until acknowledged; the cloud applies a state only if it moves the command forward, so
  a repeated or late report changes nothing.

States in order: docs/commands.md.
"""

from __future__ import annotations

from typing import Final

import msgspec

from device_profiles.errors import DeviceProfilesError
from device_profiles.standard import TOPIC_COMMANDS, TOPIC_DOWN, uplink_filter, uplink_topic

VERSION: Final = 1
QUEUED: Final = "queued"
AT_GATEWAY: Final = "at_gateway"
SENT_TO_DEVICE: Final = "sent_to_device"
CONFIRMED: Final = "confirmed"
FAILED: Final = "failed"
EXPIRED: Final = "expired"
#: A command's life, in order; `FAILED` and `EXPIRED` end it early.
STATES: Final = (QUEUED, AT_GATEWAY, SENT_TO_DEVICE, CONFIRMED, FAILED, EXPIRED)
FINAL_STATES: Final = frozenset({CONFIRMED, FAILED, EXPIRED})
_RANK: Final = {QUEUED: 0, AT_GATEWAY: 1, SENT_TO_DEVICE: 2, CONFIRMED: 3, FAILED: 3, EXPIRED: 3}


def moves_forward(current: str, new: str) -> bool:
    """Whether a command in state `current` may take state `new` (never back, never out of an end)."""
    return current not in FINAL_STATES and _RANK[new] > _RANK[current]


class DownCommand(msgspec.Struct, frozen=True, kw_only=True):
    """One command for a device the gateway serves (times in epoch microseconds)."""

    command_id: str
    seq: int
    device_id: str
    name: str
    params: dict[str, bool | int | str]
    confirm: str
    requested_at_us: int
    expires_at_us: int
    v: int = VERSION


class CommandProgress(msgspec.Struct, frozen=True, kw_only=True):
    """A state a command reached at the gateway (`AT_GATEWAY` and after)."""

    gateway_id: str
    command_id: str
    state: str
    at_us: int
    reason: str | None = None
    v: int = VERSION


_down_decoder: Final = msgspec.json.Decoder(DownCommand)
_progress_decoder: Final = msgspec.json.Decoder(CommandProgress)


class WireError(DeviceProfilesError, ValueError):
    """A command message that is not one: the text says what is wrong."""


def encode(message: DownCommand | CommandProgress) -> bytes:
    return msgspec.json.encode(message)


def decode_down(payload: bytes) -> DownCommand:
    try:
        down = _down_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise WireError(f"not a command: {exc}") from None
    if down.v != VERSION:
        raise WireError(f"command version {down.v} is not {VERSION}")
    return down


def decode_progress(payload: bytes) -> CommandProgress:
    try:
        progress = _progress_decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise WireError(f"not a command progress report: {exc}") from None
    if progress.v != VERSION:
        raise WireError(f"progress version {progress.v} is not {VERSION}")
    if progress.state not in _RANK or progress.state == QUEUED:
        raise WireError(f"unknown command state {progress.state!r}")
    return progress


def down_topic(community_id: str, gateway_id: str) -> str:
    return uplink_topic(community_id, gateway_id, TOPIC_DOWN)


def progress_topic(community_id: str, gateway_id: str) -> str:
    return uplink_topic(community_id, gateway_id, TOPIC_COMMANDS)


#: Where the cloud hears every gateway's progress reports.
PROGRESS_FILTER: Final = uplink_filter(TOPIC_COMMANDS)

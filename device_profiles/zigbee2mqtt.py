"""Devices from Zigbee2MQTT's bridge: the coordinator already knows every paired device.

Zigbee2MQTT publishes its device list, retained, on ``<base>/bridge/devices``: a JSON array with one
object per device (``ieee_address``, ``friendly_name``, ``type`` of ``Coordinator``, ``Router`` or
``EndDevice``, ``supported``, ``disabled``, ``interview_completed``, and a ``definition`` with
``model``, ``vendor`` and ``description`` once the device is interviewed). `proposals` turns it into
inventory proposals: each device that is not the coordinator, not disabled and interviewed, with
the profile that decodes its model (a loaded profile on a ``zigbee2mqtt/...`` topic whose ``model``
is the definition's), or none when no loaded profile does. The device id is the friendly name, as
the Zigbee2MQTT profiles read it from the topic.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

import msgspec

if TYPE_CHECKING:
    from device_profiles.engine import ProfileSet

#: Zigbee2MQTT's default base topic and the bridge's device list under it.
BASE_TOPIC: Final = "zigbee2mqtt"
DEVICES_SUFFIX: Final = "/bridge/devices"


class Definition(msgspec.Struct, kw_only=True):
    model: str = ""
    vendor: str = ""
    description: str = ""


class BridgeDevice(msgspec.Struct, kw_only=True):
    """One entry of ``bridge/devices`` (the fields linli reads; the rest is ignored)."""

    ieee_address: str
    friendly_name: str
    type: str = "EndDevice"
    supported: bool = True
    disabled: bool = False
    interview_completed: bool = True
    definition: Definition | None = None


class Proposal(msgspec.Struct, frozen=True, kw_only=True):
    """An inventory entry proposed for one Zigbee device (profile None: no loaded profile fits)."""

    device_id: str
    profile: str | None
    device_type: str | None
    ieee_address: str
    model: str
    vendor: str
    description: str


_decoder = msgspec.json.Decoder(list[BridgeDevice])


def bridge_devices(payload: bytes) -> list[BridgeDevice]:
    """Parse a ``bridge/devices`` message; raises `msgspec.DecodeError` (a `ValueError`) when it is
    not one."""
    return _decoder.decode(payload)


def model_profiles(profiles: ProfileSet) -> dict[str, tuple[str, str]]:
    """Model (case-folded) -> (profile id, device type), for the profiles on Zigbee2MQTT topics."""
    found: dict[str, tuple[str, str]] = {}
    for profile in sorted(profiles.profiles.values(), key=lambda p: p.id):
        if any(topic.startswith(f"{BASE_TOPIC}/") for topic in profile.topics):
            found.setdefault(profile.model.casefold(), (profile.id, profile.device_type))
    return found


def proposals(devices: list[BridgeDevice], by_model: dict[str, tuple[str, str]]) -> list[Proposal]:
    """The paired end devices and routers, each with the profile of its model when one fits."""
    found = []
    for d in devices:
        if d.type == "Coordinator" or d.disabled or not d.interview_completed or not d.friendly_name:
            continue
        definition = d.definition or Definition()
        profile, device_type = by_model.get(definition.model.casefold(), (None, None))
        found.append(
            Proposal(
                device_id=d.friendly_name,
                profile=profile,
                device_type=device_type,
                ieee_address=d.ieee_address,
                model=definition.model,
                vendor=definition.vendor,
                description=definition.description,
            )
        )
    return found

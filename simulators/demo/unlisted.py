"""A device nobody listed: the demo's first gateway hears one, so ``linli edge devices pending``
has something to show.

A Zigbee2MQTT climate sensor that is in no inventory publishes its state on the gateway's field
broker, and the coordinator's retained ``bridge/devices`` list names it (with the gateway's
Zigbee2MQTT devices that the inventory has, and a leak sensor paired but not listed either). The
agent quarantines its messages as ``unknown_device`` and records both as pending devices; the
screen shows them with the command that approves one.
"""

from __future__ import annotations

import json
from typing import Final

from paho.mqtt import publish
from paho.mqtt.enums import MQTTProtocolVersion

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from device_profiles.zigbee2mqtt import BASE_TOPIC, DEVICES_SUFFIX
from simulators.services import MosquittoBroker

#: The unlisted devices: friendly name -> (IEEE address, model, vendor, description).
UNLISTED: Final = {
    "climate-unlisted": (
        "0x00158d00045a1b2c",
        "WSDCGQ11LM",
        "Aqara",
        "Temperature, humidity and pressure sensor",
    ),
    "leak-unlisted": ("0x00158d0003c0ffee", "SJCGQ11LM", "Aqara", "Water leak sensor"),
}
STATE: Final = {"temperature": 23.4, "humidity": 48.5, "pressure": 1008.2, "battery": 97, "linkquality": 131}


def bridge_devices(inventory: Inventory, profiles: ProfileSet) -> list[dict[str, object]]:
    """Zigbee2MQTT's device list for a gateway: its coordinator, its listed Zigbee2MQTT devices and
    the unlisted ones, in the format of ``bridge/devices`` (the fields linli and most tools read)."""
    devices: list[dict[str, object]] = [
        {"ieee_address": "0x00124b0024c0ffee", "type": "Coordinator", "friendly_name": "Coordinator",
         "supported": False, "disabled": False, "interview_completed": True, "definition": None},
    ]  # fmt: skip
    for i, d in enumerate(inventory):
        profile = profiles.profiles.get(d.profile)
        if profile is None or not any(t.startswith(f"{BASE_TOPIC}/") for t in profile.topics):
            continue
        devices.append(
            _entry(d.device_id, f"0x00158d0001{i:06x}", profile.model, profile.vendor, profile.description)
        )
    devices += [_entry(name, *details) for name, details in UNLISTED.items()]
    return devices


def _entry(name: str, ieee: str, model: str, vendor: str, description: str) -> dict[str, object]:
    return {
        "ieee_address": ieee,
        "type": "EndDevice",
        "friendly_name": name,
        "supported": True,
        "disabled": False,
        "interview_completed": True,
        "power_source": "Battery",
        "definition": {"model": model, "vendor": vendor, "description": description, "exposes": []},
    }


def announce(field: MosquittoBroker, inventory: Inventory, profiles: ProfileSet) -> None:
    """Publish the bridge's retained list and one state message of the unlisted climate sensor."""
    devices = json.dumps(bridge_devices(inventory, profiles))
    messages: publish.MessagesList = [
        {"topic": f"{BASE_TOPIC}{DEVICES_SUFFIX}", "payload": devices, "qos": 1, "retain": True},
        {"topic": f"{BASE_TOPIC}/climate-unlisted", "payload": json.dumps(STATE), "qos": 1},
    ]
    publish.multiple(
        messages,
        hostname=field.host,
        port=field.port,
        client_id="linli-demo-zigbee2mqtt",
        protocol=MQTTProtocolVersion.MQTTv5,
    )

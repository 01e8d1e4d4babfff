"""Fixtures for the device_profiles tests: the shipped profiles and payloads of every dialect."""

from __future__ import annotations

import base64
import json
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from device_profiles import ProfileSet

RECEIVED = datetime(2025, 11, 22, 6, 0, tzinfo=UTC)
DEV_EUI = "a84041000181c0de"
CS_TOPIC = f"application/7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a/device/{DEV_EUI}/event/up"
IMEI = "861234567890123"
NB_TOPIC = f"nbiot/{IMEI}/up"
DEDUP = "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="session")
def profiles() -> ProfileSet:
    return ProfileSet.shipped()


def chirpstack(fport: int, body: bytes, **overrides: Any) -> bytes:
    """A ChirpStack v4 uplink event as it publishes it (two gateways heard the frame)."""
    doc: dict[str, Any] = {
        "deduplicationId": DEDUP,
        "time": "2025-11-22T05:59:58.123456789+00:00",
        "deviceInfo": {
            "tenantId": "52f14cd4-c6f1-4fbd-8f87-4025e1d49242",
            "tenantName": "ChirpStack",
            "applicationId": "7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a",
            "applicationName": "community",
            "deviceProfileName": "sensor",
            "deviceName": "dev",
            "devEui": DEV_EUI.upper(),
            "tags": {},
        },
        "devAddr": "00189440",
        "adr": True,
        "dr": 5,
        "fCnt": 42,
        "fPort": fport,
        "confirmed": False,
        "data": base64.b64encode(body).decode(),
        "rxInfo": [
            {"gatewayId": "0016c001f153a14c", "uplinkId": 1, "rssi": -97, "snr": 3.5, "context": "E3OWOQ=="},
            {"gatewayId": "0016c001f153a14d", "uplinkId": 2, "rssi": -81, "snr": 7.0, "context": "E3OWOQ=="},
        ],
        "txInfo": {
            "frequency": 486300000,
            "modulation": {"lora": {"bandwidth": 125000, "spreadingFactor": 7}},
        },
    }
    doc.update(overrides)
    return json.dumps(doc).encode()


MANHOLE_BODY = struct.pack(">BhHHHB", 0b111, -35, 120, 15, 42, 88)
STREETLIGHT_BODY = struct.pack(">BBHHHI", 0b01, 80, 2295, 410, 921, 1234567)
DOOR_BODY = struct.pack(">BHB", 1, 1234, 97)
SOS_BODY = struct.pack(">BB", 2, 64)

NB_MANHOLE: dict[str, Any] = {
    "imei": IMEI,
    "ts": 1763780000,
    "type": "manhole",
    "data": {"angle": 3.2, "level": 120, "h2s": 0.0, "ch4": 0.0, "cover": 0},
    "bat": 87,
    "csq": 22,
}
NB_LIGHT: dict[str, Any] = {
    "imei": IMEI,
    "ts": 1763780000,
    "type": "light",
    "data": {"on": 1, "dim": 80, "u": 229.5, "i": 0.41, "p": 92.1, "kwh": 1234.5, "fault": 0},
    "bat": None,
    "csq": 25,
}
Z2M_DOOR = {"contact": True, "battery": 91, "voltage": 3005, "linkquality": 120}
Z2M_SOS = {"action": "emergency", "battery": 87, "linkquality": 96}


def dumps(doc: Any) -> bytes:
    return json.dumps(doc).encode()


#: Zigbee2MQTT state messages of the environmental sensors, as its device pages document them.
Z2M_CLIMATE = {
    "temperature": 22.51,
    "humidity": 45.2,
    "pressure": 1002.4,
    "battery": 91,
    "voltage": 3005,
    "linkquality": 120,
}
Z2M_LEAK = {"water_leak": True, "battery": 100, "voltage": 3015, "linkquality": 87}
Z2M_SMOKE = {"smoke": False, "battery_low": False, "tamper": False, "battery": 98, "linkquality": 102}

#: (topic, payload) of a valid message for every shipped profile.
VALID: dict[str, tuple[str, bytes]] = {
    "aqara/mccgq11lm": ("zigbee2mqtt/door_3_2_401", dumps(Z2M_DOOR)),
    "tuya/ts0215a_sos": ("zigbee2mqtt/sos_3_2_401", dumps(Z2M_SOS)),
    "aqara/wsdcgq11lm": ("zigbee2mqtt/climate_3_2_401", dumps(Z2M_CLIMATE)),
    "aqara/sjcgq11lm": ("zigbee2mqtt/leak_3_2_401", dumps(Z2M_LEAK)),
    "heiman/hs1sa": ("zigbee2mqtt/smoke_3_2_401", dumps(Z2M_SMOKE)),
    "generic_lorawan/manhole_cover": (CS_TOPIC, chirpstack(2, MANHOLE_BODY)),
    "generic_lorawan/streetlight": (CS_TOPIC, chirpstack(3, STREETLIGHT_BODY)),
    "generic_lorawan/door_contact": (CS_TOPIC, chirpstack(4, DOOR_BODY)),
    "generic_lorawan/sos_button": (CS_TOPIC, chirpstack(5, SOS_BODY)),
    "generic_nbiot/manhole_cover": (NB_TOPIC, dumps(NB_MANHOLE)),
    "generic_nbiot/streetlight": (NB_TOPIC, dumps(NB_LIGHT)),
}

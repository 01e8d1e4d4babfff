"""JSON Schemas: of the canonical `Reading` (for consumers) and of the profile file format."""

from __future__ import annotations

from typing import Any

import msgspec

from device_profiles.reading import DEVICE_TYPES, Reading
from device_profiles.standard import QUALITY_FLAGS

SCHEMA_ID = "https://linli.invalid/schemas/reading.json"

_DESCRIPTIONS = {
    "device_id": "stable device id: Zigbee friendly name, LoRaWAN DevEUI (lowercase hex), NB-IoT IMEI",
    "device_type": "door_contact, manhole_cover, streetlight, sos_button, or a type a profile declares",
    "ts": "ISO 8601 UTC time of the observation: device time, else receive time (quality estimated_ts)",
    "received_at": "ISO 8601 UTC time the payload was received",
    "metrics": "canonical metric name -> value in canonical units",
    "events": "canonical event names the payload states explicitly, sorted",
    "quality": "quality flags, sorted",
    "profile": "id of the profile that decoded the payload",
    "reading_id": "stable id: the vendor message id, or a UUID hashed from device, device time and payload",
}


def reading_schema() -> dict[str, Any]:
    """The JSON Schema (2020-12) of a `Reading` as JSON: times are ISO 8601 strings in UTC."""
    schema = msgspec.json.schema(Reading)
    defs = schema.get("$defs", {})
    body = defs.get("Reading", schema)
    body["description"] = (
        "One canonical observation of one device (linli unified data standard). "
        "See docs/data-standard.md for metric names and units."
    )
    props = body["properties"]
    props["device_type"]["examples"] = list(DEVICE_TYPES)
    props["quality"]["items"]["examples"] = sorted(QUALITY_FLAGS)
    props["metrics"]["additionalProperties"] = {"type": "number"}
    for name, text in _DESCRIPTIONS.items():
        props[name]["description"] = text
    for name in ("ts", "received_at"):
        props[name]["format"] = "date-time"
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "$id": SCHEMA_ID, **schema}


def profile_schema() -> dict[str, Any]:
    """The JSON Schema of a profile file (editor support for YAML profiles)."""
    from device_profiles.model import Profile

    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **Profile.model_json_schema()}

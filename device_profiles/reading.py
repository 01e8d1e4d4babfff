"""The canonical reading: one value type shared by the edge agent, the cloud and the simulators.

A `Reading` is what every vendor payload becomes after its profile has translated it. It is an
immutable msgspec Struct so that the hot path (decode, buffer, envelope) never copies through
dicts or pydantic models.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

#: Device types known to the standard. Profiles may declare others (the set is extensible);
#: these are the ones with canonical metric and event names in docs/data-standard.md.
DEVICE_TYPES: Final = (
    "door_contact",
    "manhole_cover",
    "streetlight",
    "sos_button",
    "environment_sensor",
    "smoke_detector",
    "water_leak_sensor",
)


class Reading(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One canonical observation of one device.

    Attributes:
        device_id: the device's stable id (Zigbee friendly name, LoRaWAN DevEUI in lowercase hex,
            NB-IoT IMEI, ...), as the profile extracts it.
        device_type: one of `DEVICE_TYPES` or a type a profile declares.
        ts: UTC time of the observation: the device's own time when the payload carries one,
            otherwise the receive time (and then `quality` holds ``"estimated_ts"``).
        received_at: UTC time the payload was received (by the gateway, or the decoder's caller).
        metrics: canonical metric name -> value, in canonical units.
        events: canonical event names the payload states explicitly (``sos_pressed``, ...).
        quality: flags such as ``out_of_range`` and ``estimated_ts``, sorted, without repeats.
        profile: id of the profile that produced (or would encode) this reading.
        reading_id: stable id: the same vendor message decoded twice gives the same id.
    """

    device_id: str
    device_type: str
    ts: datetime
    received_at: datetime
    metrics: dict[str, float]
    events: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()
    profile: str
    reading_id: str

"""The data standard as data: canonical metric and event names, units, quality flags, reason codes.

docs/data-standard.md describes the same tables in prose; a test keeps the two in step. Profiles
for the device types below may only use their names (plus vendor extensions prefixed ``x_``);
profiles for other device types may use any canonical name (`ALL_METRICS`) or an ``x_`` name, so a
temperature is ``temperature_c`` whoever reports it.
"""

from __future__ import annotations

from enum import StrEnum
from types import MappingProxyType
from typing import Final, NamedTuple

import msgspec


class MetricDef(NamedTuple):
    """A canonical metric: its unit and the range a sane device reports."""

    unit: str
    description: str
    low: float
    high: float


_BATTERY = MetricDef("%", "battery charge", 0, 100)
_RSSI = MetricDef("dBm", "received signal strength; from CSQ as -113 + 2 * csq", -200, 0)
_LQI = MetricDef("1", "Zigbee link quality indicator", 0, 255)

#: Metrics any device type may report.
COMMON_METRICS: Final = MappingProxyType({"battery_pct": _BATTERY, "rssi_dbm": _RSSI, "link_quality": _LQI})

#: Environmental metrics: what community sensors commonly measure, allowed for every device type
#: (an Aqara door contact reports its temperature too), so nobody invents a name for them.
ENVIRONMENT_METRICS: Final = MappingProxyType(
    {
        "temperature_c": MetricDef("°C", "air temperature", -40, 125),
        "humidity_pct": MetricDef("%RH", "relative humidity", 0, 100),
        "pm25_ugm3": MetricDef("µg/m³", "fine particulate matter (PM2.5) concentration", 0, 1000),
        "co_ppm": MetricDef("ppm", "carbon monoxide concentration", 0, 10000),
        "smoke": MetricDef("0/1", "1 when smoke is detected", 0, 1),
        "water_leak": MetricDef("0/1", "1 when the probe is wet (water on the floor)", 0, 1),
    }
)

_ANY_TYPE: Final = MappingProxyType({**COMMON_METRICS, **ENVIRONMENT_METRICS})

#: Canonical metrics per device type (name -> definition). Common metrics are repeated where the
#: issue lists them, so each table reads as the complete set for its type.
METRICS: Final = MappingProxyType(
    {
        "door_contact": MappingProxyType(
            {
                "contact_open": MetricDef("0/1", "1 when the door or window is open", 0, 1),
                "open_count": MetricDef("1", "openings counted by the device since reset", 0, 2**32),
                **_ANY_TYPE,
            }
        ),
        "manhole_cover": MappingProxyType(
            {
                "cover_open": MetricDef("0/1", "1 when the cover is lifted or displaced", 0, 1),
                "tilt_deg": MetricDef("deg", "tilt of the cover from level", -180, 180),
                "water_level_mm": MetricDef("mm", "water level below the cover", 0, 65535),
                "h2s_ppm": MetricDef("ppm", "hydrogen sulphide concentration", 0, 1000),
                "ch4_pct_lel": MetricDef("%LEL", "methane, percent of lower explosive limit", 0, 100),
                **_ANY_TYPE,
            }
        ),
        "streetlight": MappingProxyType(
            {
                "lamp_on": MetricDef("0/1", "1 when the lamp is lit", 0, 1),
                "dim_pct": MetricDef("%", "dimming level, 100 = full output", 0, 100),
                "voltage_v": MetricDef("V", "supply voltage", 0, 500),
                "current_a": MetricDef("A", "lamp current", 0, 100),
                "power_w": MetricDef("W", "active power", 0, 10000),
                "energy_kwh": MetricDef("kWh", "energy meter reading since install", 0, 10**7),
                "lamp_fault": MetricDef("0/1", "1 when the driver reports a lamp fault", 0, 1),
                **_ANY_TYPE,
            }
        ),
        "sos_button": MappingProxyType({**_ANY_TYPE}),
        "environment_sensor": MappingProxyType({**_ANY_TYPE}),
        "smoke_detector": MappingProxyType({**_ANY_TYPE}),
        "water_leak_sensor": MappingProxyType({**_ANY_TYPE}),
    }
)

#: Every canonical metric name, whatever the device type.
ALL_METRICS: Final = frozenset(name for table in METRICS.values() for name in table)


class Event(StrEnum):
    """Every canonical event name: the one definition that edge, cloud and simulators import.

    Members are `str` (``Event.DOOR_OPENED == "door_opened"``), so readings carry them as plain
    strings. Two kinds: events a payload states (a profile maps vendor values to them, `EVENTS`)
    and events the edge agent derives (`DERIVED_EVENTS`), which no profile may state.
    """

    # stated by the payload
    WATER_ALARM = "water_alarm"
    GAS_ALARM = "gas_alarm"
    SOS_PRESSED = "sos_pressed"
    SOS_LONG_PRESSED = "sos_long_pressed"
    SOS_CANCELLED = "sos_cancelled"
    HEARTBEAT = "heartbeat"
    # derived by the edge from consecutive values of a state metric (`STATE_EVENTS`)
    DOOR_OPENED = "door_opened"
    DOOR_CLOSED = "door_closed"
    COVER_OPENED = "cover_opened"
    COVER_CLOSED = "cover_closed"
    LAMP_SWITCHED_ON = "lamp_switched_on"
    LAMP_SWITCHED_OFF = "lamp_switched_off"
    SMOKE_DETECTED = "smoke_detected"
    SMOKE_CLEARED = "smoke_cleared"
    LEAK_DETECTED = "leak_detected"
    LEAK_CLEARED = "leak_cleared"
    # derived by the edge's liveness check (`LIVENESS_EVENTS`)
    DEVICE_OFFLINE = "device_offline"
    DEVICE_ONLINE = "device_online"
    # written by the cloud's command sender when a command's fate is known (`COMMAND_EVENTS`)
    COMMAND_CONFIRMED = "command_confirmed"
    COMMAND_NOT_CONFIRMED = "command_not_confirmed"


#: What each event means (docs/data-standard.md lists the same).
EVENT_DESCRIPTIONS: Final = MappingProxyType(
    {
        Event.WATER_ALARM: "the water level under the cover is at the device's alarm level",
        Event.GAS_ALARM: "a gas sensor under the cover is at the device's alarm level",
        Event.SOS_PRESSED: "the SOS button was pressed",
        Event.SOS_LONG_PRESSED: "the SOS button was held down",
        Event.SOS_CANCELLED: "the resident cancelled a press",
        Event.HEARTBEAT: "a periodic report with nothing to say but that the device lives",
        Event.DOOR_OPENED: "`contact_open` went from 0 to 1",
        Event.DOOR_CLOSED: "`contact_open` went from 1 to 0",
        Event.COVER_OPENED: "`cover_open` went from 0 to 1",
        Event.COVER_CLOSED: "`cover_open` went from 1 to 0",
        Event.LAMP_SWITCHED_ON: "`lamp_on` went from 0 to 1",
        Event.LAMP_SWITCHED_OFF: "`lamp_on` went from 1 to 0",
        Event.SMOKE_DETECTED: "`smoke` went from 0 to 1",
        Event.SMOKE_CLEARED: "`smoke` went from 1 to 0",
        Event.LEAK_DETECTED: "`water_leak` went from 0 to 1",
        Event.LEAK_CLEARED: "`water_leak` went from 1 to 0",
        Event.DEVICE_OFFLINE: "the device was silent for longer than its liveness limit",
        Event.DEVICE_ONLINE: "a device marked offline reported again",
        Event.COMMAND_CONFIRMED: "a command to the device was confirmed (its report, or the network)",
        Event.COMMAND_NOT_CONFIRMED: "a command to the device failed or expired (it did not follow it)",
    }
)

#: Events the cloud writes about a device (`cloud.commands.progress`), not the device or the edge:
#: their readings carry the quality flag `CLOUD_QUALITY` and say nothing of the device's liveness.
COMMAND_EVENTS: Final = frozenset({Event.COMMAND_CONFIRMED, Event.COMMAND_NOT_CONFIRMED})
CLOUD_QUALITY: Final = "cloud"

#: Canonical events per device type: things the payload states explicitly.
EVENTS: Final = MappingProxyType(
    {
        "door_contact": frozenset[str](),
        "manhole_cover": frozenset({Event.WATER_ALARM, Event.GAS_ALARM}),
        "streetlight": frozenset[str](),
        "sos_button": frozenset(
            {Event.SOS_PRESSED, Event.SOS_LONG_PRESSED, Event.SOS_CANCELLED, Event.HEARTBEAT}
        ),
        "environment_sensor": frozenset[str](),
        "smoke_detector": frozenset({Event.HEARTBEAT}),
        "water_leak_sensor": frozenset({Event.HEARTBEAT}),
    }
)

#: State metric -> (event when it becomes non-zero, event when it becomes zero). The edge derives
#: these from consecutive values of one device; the first value ever seen derives nothing.
STATE_EVENTS: Final = MappingProxyType(
    {
        "contact_open": (Event.DOOR_OPENED, Event.DOOR_CLOSED),
        "cover_open": (Event.COVER_OPENED, Event.COVER_CLOSED),
        "lamp_on": (Event.LAMP_SWITCHED_ON, Event.LAMP_SWITCHED_OFF),
        "smoke": (Event.SMOKE_DETECTED, Event.SMOKE_CLEARED),
        "water_leak": (Event.LEAK_DETECTED, Event.LEAK_CLEARED),
    }
)

#: Events of the readings the edge makes up itself when a device goes silent or comes back: their
#: reading ids are the gateway's, not a device message's.
LIVENESS_EVENTS: Final = frozenset({Event.DEVICE_OFFLINE, Event.DEVICE_ONLINE})

#: Events the edge derives; a profile may not state them.
DERIVED_EVENTS: Final = frozenset({e for pair in STATE_EVENTS.values() for e in pair} | LIVENESS_EVENTS)

#: Every canonical event name.
ALL_EVENTS: Final = frozenset(Event)

#: Quality flags a decoded reading may carry (`Reading.quality`, sorted).
QUALITY_FLAGS: Final = MappingProxyType(
    {
        "out_of_range": "a metric is outside its declared valid range; the profile says flag, not reject",
        "estimated_ts": "the payload has no device time; `ts` is the receive time",
    }
)

#: Reason codes of `DecodeError`.
REASONS: Final = MappingProxyType(
    {
        "no_profile": "no profile handles the topic, or none of its profiles matches the payload",
        "unknown_profile": "a profile was forced (or mapped by the inventory) that is not loaded",
        "ambiguous_profile": "the payload matches more than one profile and no inventory mapping decides",
        "too_large": "the payload is larger than the size cap",
        "too_deep": "the JSON nests deeper than the parser's recursion guard allows",
        "not_utf8": "the payload (or a JSON string in it) is not valid UTF-8",
        "malformed_json": "the payload is not one valid JSON document",
        "bad_encoding": "an embedded binary payload is not valid base64 or hex",
        "bad_length": "the binary payload is not the length the profile declares",
        "missing_field": "a required field is absent or null",
        "bad_type": "a field has the wrong JSON type (string for number, ...)",
        "not_finite": "a number is NaN or infinite (or too large for a float)",
        "out_of_range": "a value is outside its valid range and the profile says reject",
        "unknown_value": "a value is not in the profile's enum or event map",
        "bad_timestamp": "the device time is missing, unparseable, not UTC-resolvable or implausible",
        "bad_device_id": "the device id is missing, empty, too long or does not fit the profile's pattern",
        "device_mismatch": "the device id in the payload differs from the one in the topic",
    }
)


class DecodeError(msgspec.Struct, frozen=True, kw_only=True):
    """Why a payload did not become a `Reading`. A value, not an exception.

    Attributes:
        reason: a reason code from `REASONS`.
        message: a human-readable explanation naming the field or value at fault.
        topic: the MQTT topic the payload arrived on.
        profile: the profile that rejected it, or None when no profile was selected.
    """

    reason: str
    message: str
    topic: str
    profile: str | None = None


def metric_names(device_type: str) -> frozenset[str] | None:
    """The canonical metric names of a device type, or None for a type the standard does not know."""
    table = METRICS.get(device_type)
    return None if table is None else frozenset(table)


#: The uplink topics, edge -> cloud broker: ``linli/v1/<community>/<gateway>/<kind>``. Alarm
#: batches have a topic of their own, so the ingest reads them on a connection of their own and an
#: SOS never queues behind a telemetry backlog at the broker.
TOPIC_TELEMETRY: Final = "up"
TOPIC_ALARM: Final = "alarm"
TOPIC_STATUS: Final = "status"
#: Commands, cloud -> gateway (`device_profiles.command_wire.DownCommand`), and their progress,
#: gateway -> cloud (`device_profiles.command_wire.CommandProgress`), on the same
#: ``linli/v1/<community>/<gateway>/<kind>`` scheme.
TOPIC_DOWN: Final = "down"
TOPIC_COMMANDS: Final = "commands"


def uplink_topic(community_id: str, gateway_id: str, kind: str) -> str:
    """``linli/v1/<community>/<gateway>/<kind>`` (`TOPIC_TELEMETRY`, `TOPIC_ALARM`, `TOPIC_STATUS`)."""
    return f"linli/v1/{community_id}/{gateway_id}/{kind}"


def uplink_filter(kind: str) -> str:
    """The subscription filter of one kind of uplink topic, every community and gateway."""
    return uplink_topic("+", "+", kind)

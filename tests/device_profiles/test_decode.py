"""Decoding real-shaped payloads of every shipped dialect into canonical readings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
import yaml

from device_profiles import DecodeError, ProfileSet, Reading
from device_profiles.loader import SHIPPED_DIR
from device_profiles.model import Profile
from tests.device_profiles.conftest import (
    CS_TOPIC,
    DEDUP,
    DEV_EUI,
    IMEI,
    NB_TOPIC,
    RECEIVED,
    VALID,
    Z2M_DOOR,
    Z2M_SOS,
    dumps,
)


def decode_ok(profiles: ProfileSet, topic: str, payload: bytes) -> Reading:
    result = profiles.decode(topic, payload, RECEIVED)
    assert isinstance(result, Reading), result
    return result


def test_zigbee2mqtt_door_contact(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, "zigbee2mqtt/door_3_2_401", dumps(Z2M_DOOR))
    assert r.profile == "aqara/mccgq11lm"
    assert r.device_id == "door_3_2_401"
    assert r.device_type == "door_contact"
    # contact: true means the magnet is near: closed.
    assert r.metrics == {"contact_open": 0.0, "battery_pct": 91.0, "link_quality": 120.0}
    assert r.ts == RECEIVED
    assert r.received_at == RECEIVED
    assert r.quality == ("estimated_ts",)
    assert r.events == ()
    opened = decode_ok(profiles, "zigbee2mqtt/door_3_2_401", dumps({**Z2M_DOOR, "contact": False}))
    assert opened.metrics["contact_open"] == 1.0


@pytest.mark.parametrize("base", [Z2M_DOOR, Z2M_SOS], ids=["door", "sos"])
def test_zigbee2mqtt_last_seen_is_the_device_time(profiles: ProfileSet, base: dict[str, object]) -> None:
    topic = "zigbee2mqtt/flat_401"
    first = decode_ok(profiles, topic, dumps({**base, "last_seen": "2026-12-02T03:00:00.250Z"}))
    assert first.ts == datetime(2026, 12, 2, 3, 0, 0, 250_000, tzinfo=UTC)
    assert first.quality == ()
    # The same state reported again later is a new reading, with its own id.
    again = decode_ok(profiles, topic, dumps({**base, "last_seen": "2026-12-02T04:00:00.250Z"}))
    assert again.metrics == first.metrics
    assert again.reading_id != first.reading_id
    # A local-time offset (Zigbee2MQTT's ISO_8601_local) is converted to UTC.
    local = decode_ok(profiles, topic, dumps({**base, "last_seen": "2026-12-02T11:00:00.250+08:00"}))
    assert local.ts == first.ts
    # Without last_seen (absent or null) the receive time stands in, flagged.
    for doc in (base, {**base, "last_seen": None}):
        r = decode_ok(profiles, topic, dumps(doc))
        assert (r.ts, r.quality) == (RECEIVED, ("estimated_ts",))
    bad = profiles.decode(topic, dumps({**base, "last_seen": "yesterday"}), RECEIVED)
    assert isinstance(bad, DecodeError)
    assert bad.reason == "bad_timestamp"


def test_zigbee2mqtt_sos_button(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, "zigbee2mqtt/sos_3_2_401", dumps(Z2M_SOS))
    assert r.profile == "tuya/ts0215a_sos"
    assert r.device_type == "sos_button"
    assert r.events == ("sos_pressed",)
    assert r.metrics == {"battery_pct": 87.0, "link_quality": 96.0}


def test_chirpstack_manhole_cover(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, *VALID["generic_lorawan/manhole_cover"])
    assert r.profile == "generic_lorawan/manhole_cover"
    assert r.device_id == DEV_EUI  # lowercase although the payload has it uppercase
    assert r.reading_id == DEDUP
    assert r.ts == datetime(2025, 11, 22, 5, 59, 58, 123456, tzinfo=UTC)
    assert r.metrics == {
        "cover_open": 1.0,
        "tilt_deg": -3.5,
        "water_level_mm": 120.0,
        "h2s_ppm": 1.5,
        "ch4_pct_lel": 4.2,
        "battery_pct": 88.0,
        "rssi_dbm": -81.0,  # the best of the two gateways
    }
    assert r.events == ("gas_alarm", "water_alarm")
    assert r.quality == ()


def test_chirpstack_streetlight(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, *VALID["generic_lorawan/streetlight"])
    assert r.device_type == "streetlight"
    assert r.metrics == {
        "lamp_on": 1.0,
        "lamp_fault": 0.0,
        "dim_pct": 80.0,
        "voltage_v": 229.5,
        "current_a": 0.41,
        "power_w": 92.1,
        "energy_kwh": 1234.567,
        "rssi_dbm": -81.0,
    }


def test_chirpstack_door_contact_and_sos(profiles: ProfileSet) -> None:
    door = decode_ok(profiles, *VALID["generic_lorawan/door_contact"])
    assert door.metrics == {"contact_open": 1.0, "open_count": 1234.0, "battery_pct": 97.0, "rssi_dbm": -81.0}
    sos = decode_ok(profiles, *VALID["generic_lorawan/sos_button"])
    assert sos.events == ("sos_long_pressed",)
    assert sos.metrics == {"battery_pct": 64.0, "rssi_dbm": -81.0}


def test_nbiot_manhole(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, *VALID["generic_nbiot/manhole_cover"])
    assert r.profile == "generic_nbiot/manhole_cover"
    assert r.device_id == IMEI
    assert r.ts == datetime.fromtimestamp(1763780000, UTC)
    assert r.quality == ()
    assert r.metrics == {
        "cover_open": 0.0,
        "tilt_deg": 3.2,
        "water_level_mm": 120.0,
        "h2s_ppm": 0.0,
        "ch4_pct_lel": 0.0,
        "battery_pct": 87.0,
        "rssi_dbm": -69.0,  # -113 + 2 * 22
    }


def test_nbiot_streetlight_without_battery(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, *VALID["generic_nbiot/streetlight"])
    assert r.profile == "generic_nbiot/streetlight"
    assert "battery_pct" not in r.metrics  # "bat": null
    assert r.metrics["rssi_dbm"] == -63.0
    assert r.metrics["energy_kwh"] == 1234.5
    assert r.metrics["current_a"] == 0.41


def test_csq_99_means_unknown(profiles: ProfileSet) -> None:
    from tests.device_profiles.conftest import NB_MANHOLE

    r = decode_ok(profiles, NB_TOPIC, dumps({**NB_MANHOLE, "csq": 99}))
    assert "rssi_dbm" not in r.metrics


def test_out_of_range_flagged_not_rejected(profiles: ProfileSet) -> None:
    r = decode_ok(profiles, "zigbee2mqtt/door", dumps({**Z2M_DOOR, "battery": 130}))
    assert r.metrics["battery_pct"] == 130.0
    assert r.quality == ("estimated_ts", "out_of_range")


def test_reading_id_is_stable_and_content_bound(profiles: ProfileSet) -> None:
    topic, payload = VALID["generic_nbiot/manhole_cover"]
    first = decode_ok(profiles, topic, payload)
    later = profiles.decode(topic, payload, RECEIVED + timedelta(hours=1))
    assert isinstance(later, Reading)
    assert first.reading_id == later.reading_id  # a redelivered message: same id
    assert len(first.reading_id) == 32
    int(first.reading_id, 16)
    other = decode_ok(profiles, topic, payload.replace(b'"bat": 87', b'"bat": 86'))
    assert other.reading_id != first.reading_id
    z1 = decode_ok(profiles, "zigbee2mqtt/a", dumps(Z2M_DOOR))
    z2 = decode_ok(profiles, "zigbee2mqtt/b", dumps(Z2M_DOOR))
    assert z1.reading_id != z2.reading_id  # same bytes, other device


def test_received_at_in_another_zone_is_normalised(profiles: ProfileSet) -> None:
    shanghai = timezone(timedelta(hours=8))
    r = profiles.decode(*VALID["aqara/mccgq11lm"], RECEIVED.astimezone(shanghai))
    assert isinstance(r, Reading)
    assert r.received_at == RECEIVED
    assert r.received_at.tzinfo is UTC
    assert r.ts.tzinfo is UTC


def test_iso_time_with_offset_becomes_utc(profiles: ProfileSet) -> None:
    from tests.device_profiles.conftest import MANHOLE_BODY, chirpstack

    r = decode_ok(profiles, CS_TOPIC, chirpstack(2, MANHOLE_BODY, time="2025-11-22T13:59:58+08:00"))
    assert r.ts == datetime(2025, 11, 22, 5, 59, 58, tzinfo=UTC)
    assert r.ts.tzinfo is UTC


def test_topic_filters(profiles: ProfileSet) -> None:
    assert sorted(profiles.topic_filters()) == [
        "application/+/device/+/event/up",
        "nbiot/+/up",
        "zigbee2mqtt/+",
    ]


# -- selection -------------------------------------------------------------------------------


def test_fport_and_type_select_the_profile(profiles: ProfileSet) -> None:
    for profile_id, (topic, payload) in VALID.items():
        assert decode_ok(profiles, topic, payload).profile == profile_id


def test_device_map_decides_between_zigbee_profiles(profiles: ProfileSet) -> None:
    battery_only = dumps({"battery": 80, "linkquality": 90})
    plain = profiles.decode("zigbee2mqtt/sos_1", battery_only, RECEIVED)
    assert isinstance(plain, DecodeError)
    assert plain.reason == "no_profile"
    mapped = profiles.with_device_map({"sos_1": "tuya/ts0215a_sos"})
    r = mapped.decode("zigbee2mqtt/sos_1", battery_only, RECEIVED)
    assert isinstance(r, Reading)
    assert r.profile == "tuya/ts0215a_sos"
    assert r.events == ()
    assert r.metrics == {"battery_pct": 80.0, "link_quality": 90.0}
    # A device the map does not know falls back to the match rules.
    assert decode_ok(mapped, "zigbee2mqtt/door_9", dumps(Z2M_DOOR)).profile == "aqara/mccgq11lm"


def test_device_map_naming_a_profile_of_another_topic(profiles: ProfileSet) -> None:
    mapped = profiles.with_device_map({"door_1": "generic_nbiot/streetlight", "door_2": "nope/nope"})
    wrong = mapped.decode("zigbee2mqtt/door_1", dumps(Z2M_DOOR), RECEIVED)
    assert isinstance(wrong, DecodeError)
    assert wrong.reason == "no_profile"
    unknown = mapped.decode("zigbee2mqtt/door_2", dumps(Z2M_DOOR), RECEIVED)
    assert isinstance(unknown, DecodeError)
    assert unknown.reason == "unknown_profile"


def test_device_map_choice_reads_the_device_id_the_chosen_profiles_way() -> None:
    """The inventory is consulted with the id one candidate reads; the candidate it names reads
    the id again when its rule differs (here: upper case), so the reading carries that one."""
    base = yaml.safe_load((SHIPPED_DIR / "aqara" / "mccgq11lm.yaml").read_text())
    keep = Profile.model_validate({**base, "id": "acme/keep"})
    upper = Profile.model_validate(
        {**base, "id": "acme/upper", "device_id": {"topic": "device_id", "case": "upper"}}
    )
    for order in ([keep, upper], [upper, keep]):
        mapped = ProfileSet(order, device_map={"Door_1": "acme/upper", "DOOR_2": "acme/keep"})
        first = decode_ok(mapped, "zigbee2mqtt/Door_1", dumps(Z2M_DOOR))
        assert (first.profile, first.device_id) == ("acme/upper", "DOOR_1")
        second = decode_ok(mapped, "zigbee2mqtt/door_2", dumps(Z2M_DOOR))
        assert (second.profile, second.device_id) == ("acme/keep", "door_2")


def test_ambiguous_profile(profiles: ProfileSet) -> None:
    both = dumps({"contact": True, "action": "emergency", "battery": 50})
    result = profiles.decode("zigbee2mqtt/odd", both, RECEIVED)
    assert isinstance(result, DecodeError)
    assert result.reason == "ambiguous_profile"
    assert "aqara/mccgq11lm" in result.message
    assert "tuya/ts0215a_sos" in result.message
    mapped = profiles.with_device_map({"odd": "aqara/mccgq11lm"})
    assert decode_ok(mapped, "zigbee2mqtt/odd", both).profile == "aqara/mccgq11lm"


def test_forced_profile(profiles: ProfileSet) -> None:
    r = profiles.decode("zigbee2mqtt/x", dumps({"battery": 50}), RECEIVED, profile="tuya/ts0215a_sos")
    assert isinstance(r, Reading)
    assert r.profile == "tuya/ts0215a_sos"
    unknown = profiles.decode("zigbee2mqtt/x", b"{}", RECEIVED, profile="acme/none")
    assert isinstance(unknown, DecodeError)
    assert unknown.reason == "unknown_profile"
    wrong_topic = profiles.decode("nbiot/1/up", b"{}", RECEIVED, profile="tuya/ts0215a_sos")
    assert isinstance(wrong_topic, DecodeError)
    assert wrong_topic.reason == "no_profile"


def test_profile_set_api(profiles: ProfileSet) -> None:
    assert len(profiles) == 11
    assert "aqara/mccgq11lm" in profiles
    p = profiles.get("generic_lorawan/manhole_cover")
    assert (p.vendor, p.device_type) == ("Generic LoRaWAN", "manhole_cover")
    assert p.report_interval_s == 1800.0
    assert p.expected_interval_s == 1800.0
    assert profiles.profiles["aqara/mccgq11lm"].report_interval_s == 3600.0
    assert profiles.profiles["tuya/ts0215a_sos"].report_interval_s == 14400.0
    assert profiles.profiles["generic_nbiot/streetlight"].report_interval_s == 900.0
    assert profiles.sources["aqara/mccgq11lm"].name == "mccgq11lm.yaml"
    assert ProfileSet.shipped() is profiles


@pytest.mark.parametrize("profile_id", sorted(VALID))
def test_decoding_twice_gives_equal_readings(profiles: ProfileSet, profile_id: str) -> None:
    topic, payload = VALID[profile_id]
    assert profiles.decode(topic, payload, RECEIVED) == profiles.decode(topic, payload, RECEIVED)

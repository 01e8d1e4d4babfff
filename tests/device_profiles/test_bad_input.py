"""Bad input: every reason code, from a payload that really provokes it. Never an exception."""

from __future__ import annotations

import base64
import struct
from datetime import datetime

import pytest

from device_profiles import REASONS, DecodeError, ProfileSet
from tests.device_profiles.conftest import (
    CS_TOPIC,
    DOOR_BODY,
    IMEI,
    MANHOLE_BODY,
    NB_LIGHT,
    NB_MANHOLE,
    NB_TOPIC,
    RECEIVED,
    Z2M_DOOR,
    chirpstack,
    dumps,
)

CASES: list[tuple[str, str, bytes, str | None]] = [
    # (reason, topic, payload, profile expected in the error)
    ("no_profile", "some/other/topic", b"{}", None),
    ("no_profile", CS_TOPIC, chirpstack(9, MANHOLE_BODY), None),  # unknown fPort
    ("no_profile", NB_TOPIC, dumps({**NB_MANHOLE, "type": "boiler"}), None),
    ("no_profile", "zigbee2mqtt/bridge/state", b'{"state": "online"}', None),
    ("ambiguous_profile", "zigbee2mqtt/x", dumps({"contact": True, "action": "emergency"}), None),
    ("too_large", NB_TOPIC, b" " * (2 * 1024 * 1024) + dumps(NB_MANHOLE), None),
    ("too_large", NB_TOPIC, dumps({**NB_MANHOLE, "pad": "x" * 20000}), "generic_nbiot/manhole_cover"),
    ("too_deep", NB_TOPIC, b'{"imei": ' + b"[" * 5000 + b"]" * 5000 + b"}", None),
    ("not_utf8", NB_TOPIC, b"\xff\xfe" + dumps(NB_MANHOLE), None),
    ("not_utf8", "zigbee2mqtt/d", b'{"contact": true, "battery": "\xff"}', None),
    ("malformed_json", NB_TOPIC, b'{"imei": "861234567890123", ', None),
    ("malformed_json", NB_TOPIC, dumps(NB_MANHOLE).replace(b"3.2", b"NaN"), None),
    ("malformed_json", NB_TOPIC, dumps(NB_MANHOLE).replace(b"3.2", b"Infinity"), None),
    ("malformed_json", NB_TOPIC, b"", None),
    (
        "bad_encoding",
        CS_TOPIC,
        chirpstack(2, MANHOLE_BODY, data="not base64!"),
        "generic_lorawan/manhole_cover",
    ),
    ("bad_length", CS_TOPIC, chirpstack(2, MANHOLE_BODY[:9]), "generic_lorawan/manhole_cover"),
    ("bad_length", CS_TOPIC, chirpstack(4, DOOR_BODY + b"\0"), "generic_lorawan/door_contact"),
    (
        "missing_field",
        NB_TOPIC,
        dumps({**NB_MANHOLE, "data": {"angle": 1.0, "level": 3}}),
        "generic_nbiot/manhole_cover",
    ),
    ("no_profile", "zigbee2mqtt/d", dumps({**Z2M_DOOR, "contact": None}), None),  # null is not "present"
    ("missing_field", CS_TOPIC, chirpstack(2, MANHOLE_BODY, data=None), "generic_lorawan/manhole_cover"),
    (
        "missing_field",
        CS_TOPIC,
        chirpstack(2, MANHOLE_BODY, deduplicationId=None),
        "generic_lorawan/manhole_cover",
    ),
    ("bad_type", NB_TOPIC, dumps({**NB_MANHOLE, "bat": "87"}), "generic_nbiot/manhole_cover"),
    (
        "bad_type",
        NB_TOPIC,
        dumps({**NB_LIGHT, "data": {**NB_LIGHT["data"], "on": True}}),
        "generic_nbiot/streetlight",
    ),
    ("bad_type", "zigbee2mqtt/d", dumps({**Z2M_DOOR, "contact": "true"}), "aqara/mccgq11lm"),
    ("bad_type", NB_TOPIC, b"[1, 2, 3]", None),
    ("bad_type", NB_TOPIC, dumps({**NB_MANHOLE, "data": "none"}), None),
    ("bad_type", CS_TOPIC, chirpstack(2, MANHOLE_BODY, data=1234), "generic_lorawan/manhole_cover"),
    ("not_finite", NB_TOPIC, dumps(NB_MANHOLE).replace(b"3.2", b"1e999"), None),
    (
        "not_finite",
        NB_TOPIC,
        dumps(NB_MANHOLE).replace(b"3.2", b"123456789012345678901234567890"),
        "generic_nbiot/manhole_cover",
    ),
    ("out_of_range", NB_TOPIC, dumps(NB_MANHOLE).replace(b"3.2", b"181"), "generic_nbiot/manhole_cover"),
    (
        "out_of_range",
        CS_TOPIC,
        chirpstack(2, struct.pack(">BhHHHB", 0, 2000, 1, 1, 1, 50)),
        "generic_lorawan/manhole_cover",
    ),
    (
        "unknown_value",
        NB_TOPIC,
        dumps({**NB_MANHOLE, "data": {**NB_MANHOLE["data"], "cover": 2}}),
        "generic_nbiot/manhole_cover",
    ),
    ("unknown_value", CS_TOPIC, chirpstack(5, b"\x07\x50"), "generic_lorawan/sos_button"),
    ("unknown_value", "zigbee2mqtt/s", dumps({"action": "arm_all_zones"}), "tuya/ts0215a_sos"),
    ("bad_timestamp", NB_TOPIC, dumps({**NB_MANHOLE, "ts": 0}), "generic_nbiot/manhole_cover"),
    ("bad_timestamp", NB_TOPIC, dumps({**NB_MANHOLE, "ts": "yesterday"}), "generic_nbiot/manhole_cover"),
    ("bad_timestamp", NB_TOPIC, dumps({**NB_MANHOLE, "ts": None}), "generic_nbiot/manhole_cover"),
    (
        "bad_timestamp",
        CS_TOPIC,
        chirpstack(2, MANHOLE_BODY, time="2025-11-22T05:59:58"),
        "generic_lorawan/manhole_cover",
    ),
    (
        "bad_timestamp",
        CS_TOPIC,
        chirpstack(2, MANHOLE_BODY, time="22/11/2025"),
        "generic_lorawan/manhole_cover",
    ),
    ("bad_device_id", NB_TOPIC, dumps({**NB_MANHOLE, "imei": None}), "generic_nbiot/manhole_cover"),
    (
        "bad_device_id",
        "nbiot/12345/up",
        dumps({**NB_MANHOLE, "imei": "12345"}),
        "generic_nbiot/manhole_cover",
    ),
    ("bad_device_id", "zigbee2mqtt/" + "d" * 200, dumps(Z2M_DOOR), "aqara/mccgq11lm"),
    ("device_mismatch", f"nbiot/{IMEI[:-1]}9/up", dumps(NB_MANHOLE), "generic_nbiot/manhole_cover"),
    (
        "device_mismatch",
        CS_TOPIC.replace("a84041000181c0de", "a84041000181c0df"),
        chirpstack(4, DOOR_BODY),
        None,
    ),
]


@pytest.mark.parametrize(("reason", "topic", "payload", "profile"), CASES, ids=[c[0] for c in CASES])
def test_reason(profiles: ProfileSet, reason: str, topic: str, payload: bytes, profile: str | None) -> None:
    result = profiles.decode(topic, payload, RECEIVED)
    assert isinstance(result, DecodeError), result
    assert (result.reason, result.topic) == (reason, topic), result.message
    assert result.message
    if profile is not None:
        assert result.profile == profile


def test_every_reason_code_is_exercised() -> None:
    exercised = {c[0] for c in CASES} | {"unknown_profile"}  # unknown_profile: test_decode
    assert exercised == set(REASONS)


def test_naive_received_at(profiles: ProfileSet) -> None:
    result = profiles.decode(CS_TOPIC, chirpstack(4, DOOR_BODY), datetime(2025, 11, 22))  # noqa: DTZ001
    assert isinstance(result, DecodeError)
    assert result.reason == "bad_timestamp"


def test_float32_nan_is_not_finite(tmp_path: object) -> None:
    from pathlib import Path

    from tests.device_profiles.test_docs import worked_example_dir

    profiles = ProfileSet.load(worked_example_dir(Path(str(tmp_path))))
    body = struct.pack("<IBfBbx", 1763780000, 0, float("nan"), 50, -90)
    result = profiles.decode("acme/wl200/WL000001/data", body.hex().encode(), RECEIVED)
    assert isinstance(result, DecodeError)
    assert result.reason == "not_finite"
    not_hex = profiles.decode("acme/wl200/WL000001/data", b"zz" * 12, RECEIVED)
    assert isinstance(not_hex, DecodeError)
    assert not_hex.reason == "bad_encoding"


def test_base64_of_wrong_length_reports_length(profiles: ProfileSet) -> None:
    result = profiles.decode(
        CS_TOPIC, chirpstack(2, b"", data=base64.b64encode(b"\0" * 11).decode()), RECEIVED
    )
    assert isinstance(result, DecodeError)
    assert result.reason == "bad_length"
    assert "11 bytes, expected 10" in result.message

"""Commands in the data standard and in the profiles: checked parameters, each dialect's encoding,
and a clear refusal where a model cannot carry a command."""

from __future__ import annotations

import base64
import json
import struct

import pytest

from device_profiles import ProfileSet
from device_profiles.command_decode import decode_command, topic_filter
from device_profiles.command_encode import encode_command
from device_profiles.commands import COMMANDS, CONFIRMS, CommandError, check_command
from device_profiles.errors import ProfileError
from device_profiles.loader import profile_from_data
from device_profiles.standard import METRICS

EUI = "a84041000181c0de"
APP = "7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a"
IMEI = "861234567890123"


def frame(topic_and_payload: tuple[str, bytes]) -> tuple[str, dict[str, object], bytes]:
    topic, payload = topic_and_payload
    doc = json.loads(payload)
    return topic, doc, base64.b64decode(str(doc["data"]))


def test_parameters_are_checked_by_name_kind_and_range() -> None:
    assert check_command("streetlight", "dim", {"level_pct": 40}) == {"level_pct": 40}
    with pytest.raises(CommandError, match=r"level_pct 140 is outside 0..100 %"):
        check_command("streetlight", "dim", {"level_pct": 140})
    with pytest.raises(CommandError, match=r"switch: unknown parameter 'x'; on must be true or false, not 1"):
        check_command("streetlight", "switch", {"on": 1, "x": 2})
    with pytest.raises(CommandError, match=r"on_at must be a local time HH:MM, not '25:00'"):
        check_command(
            "streetlight", "set_schedule", {"on_at": "25:00", "off_at": "06:00", "night_dim_pct": 50}
        )
    with pytest.raises(
        CommandError, match=r"'dim' is not a command of sos_button \(acknowledge, configure\)"
    ):
        check_command("sos_button", "dim", {"level_pct": 1})
    with pytest.raises(CommandError, match="no commands for environment_sensor"):
        check_command("environment_sensor", "configure", {"report_interval_s": 600})


def test_what_confirms_a_command_is_a_metric_of_its_type() -> None:
    for command, (metric, param) in CONFIRMS.items():
        types = [t for t, table in COMMANDS.items() if command in table]
        assert types
        for t in types:
            assert metric in METRICS[t]
            assert param in COMMANDS[t][command].params


def test_chirpstack_downlinks(profiles: ProfileSet) -> None:
    light = profiles.get("generic_lorawan/streetlight")
    vars_ = {"application_id": APP}
    topic, doc, body = frame(encode_command(light, EUI, "dim", {"level_pct": 40}, topic_vars=vars_)[:2])
    assert topic == f"application/{APP}/device/{EUI}/command/down"
    assert {k: doc[k] for k in ("devEui", "confirmed", "fPort")} == {
        "devEui": EUI,
        "confirmed": True,
        "fPort": 10,
    }
    assert body == bytes([2, 40])
    _, _, body = frame(encode_command(light, EUI, "switch", {"on": False}, topic_vars=vars_)[:2])
    assert body == bytes([1, 0])
    encoded = encode_command(
        light,
        EUI,
        "set_schedule",
        {"on_at": "18:30", "off_at": "06:05", "night_dim_pct": 50},
        topic_vars=vars_,
    )
    assert encoded.confirm == "network"
    assert frame(encoded[:2])[2] == struct.pack(">BHHB", 3, 18 * 60 + 30, 6 * 60 + 5, 50)
    _, _, body = frame(
        encode_command(light, EUI, "configure", {"report_interval_s": 900}, topic_vars=vars_)[:2]
    )
    assert body == struct.pack(">BH", 4, 15)  # minutes on the wire
    with pytest.raises(CommandError, match="the topic needs application_id"):
        encode_command(light, EUI, "dim", {"level_pct": 40})
    button = profiles.get("generic_lorawan/sos_button")
    topic, doc, body = frame(encode_command(button, EUI, "acknowledge", {}, topic_vars=vars_)[:2])
    assert (doc["fPort"], body) == (11, b"\x01")


def test_nbiot_json_and_a_model_that_cannot_carry_a_command(profiles: ProfileSet) -> None:
    light = profiles.get("generic_nbiot/streetlight")
    encoded = encode_command(light, IMEI, "switch", {"on": True})
    assert (encoded.topic, json.loads(encoded.payload), encoded.qos, encoded.confirm) == (
        f"nbiot/{IMEI}/down",
        {"imei": IMEI, "cmd": "switch", "on": 1},
        1,
        "report",
    )
    encoded = encode_command(
        light, IMEI, "set_schedule", {"on_at": "18:30", "off_at": "06:00", "night_dim_pct": 30}
    )
    assert json.loads(encoded.payload) == {
        "imei": IMEI,
        "cmd": "schedule",
        "on": "18:30",
        "off": "06:00",
        "night_dim": 30,
    }
    with pytest.raises(CommandError, match=r"tuya/ts0215a_sos \(Tuya TS0215A_sos\) cannot carry acknowledge"):
        encode_command(profiles.get("tuya/ts0215a_sos"), "sos_1", "acknowledge", {})


BASE = {
    "id": "acme/lamp",
    "vendor": "Acme",
    "model": "L1",
    "device_type": "streetlight",
    "topics": ["acme/{device_id}/up"],
    "device_id": {"topic": "device_id"},
    "payload": {"format": "json"},
    "fields": [{"metric": "lamp_on", "path": "on"}],
}


@pytest.mark.parametrize(
    ("commands", "message"),
    [
        ({"blink": {"topic": "acme/{device_id}/set", "json": {}}}, "'blink' is not a command of streetlight"),
        ({"dim": {"topic": "acme/{site}/set", "json": {}}}, r"\{site\} is neither device_id nor a variable"),
        (
            {"dim": {"topic": "acme/{device_id}/set", "json": {"b": "{brightness}"}}},
            r"\{brightness\} is not a parameter of dim",
        ),
        ({"dim": {"topic": "x/{device_id}", "json": {"d": "{binary}"}}}, "go together"),
        (
            {"dim": {"topic": "x/{device_id}", "json": {"d": "{level_pct}"}, "confirm": "network"}},
            "`confirm: network` and an `ack_topic` go together",
        ),
        (
            {
                "dim": {
                    "topic": "x/{device_id}",
                    "json": {"d": "{binary}"},
                    "binary": {"length": 1, "fields": [{"at": 0, "type": "uint16", "param": "level_pct"}]},
                }
            },
            "runs past the 1-byte body",
        ),
    ],
)
def test_a_profile_with_a_bad_command_is_refused(commands: dict[str, object], message: str) -> None:
    with pytest.raises(ProfileError, match=message):
        profile_from_data({**BASE, "commands": commands})


def test_a_zigbee2mqtt_style_set_message_with_mapped_values() -> None:
    profile = profile_from_data(
        {
            **BASE,
            "commands": {
                "switch": {
                    "topic": "zigbee2mqtt/{device_id}/set",
                    "json": {"state": "{on}"},
                    "params": {"on": {"map": {True: "ON", False: "OFF"}}},
                },
                "dim": {"topic": "zigbee2mqtt/{device_id}/set", "json": {"brightness": "{level_pct}"},
                        "params": {"level_pct": {"scale": 2.54}}},
            },
        }
    )  # fmt: skip
    on = encode_command(profile, "lamp_7", "switch", {"on": True})
    assert (on.topic, json.loads(on.payload)) == ("zigbee2mqtt/lamp_7/set", {"state": "ON"})
    assert json.loads(encode_command(profile, "lamp_7", "dim", {"level_pct": 50}).payload) == {
        "brightness": 127
    }


def test_every_shipped_command_decodes_back_to_itself(profiles: ProfileSet) -> None:
    """What the simulated devices obey: each shipped dialect's message decodes to the command sent,
    and to no other command of the profile."""
    samples: dict[str, list[dict[str, object]]] = {
        "switch": [{"on": True}, {"on": False}],
        "dim": [{"level_pct": 0}, {"level_pct": 37}, {"level_pct": 100}],
        "set_schedule": [{"on_at": "18:30", "off_at": "06:05", "night_dim_pct": 30}],
        "configure": [{"report_interval_s": 900}],
        "acknowledge": [{}],
    }
    tried = 0
    for profile in profiles.profiles.values():
        device_id = IMEI if "nbiot" in profile.id else EUI
        for name in profile.commands:
            for params in samples[name]:
                sent = encode_command(profile, device_id, name, params, topic_vars={"application_id": APP})
                got = decode_command(profile, sent.topic, sent.payload)
                assert got is not None, (profile.id, name, params)
                assert (got.device_id, got.name, got.params) == (device_id, name, params)
                tried += 1
    assert tried >= 15
    light = profiles.profiles["generic_lorawan/streetlight"]
    assert topic_filter(light.commands["dim"].topic) == "application/+/device/+/command/down"
    topic = f"application/{APP}/device/{EUI}/command/down"
    assert (
        decode_command(light, topic, b'{"devEui": "x", "confirmed": true, "fPort": 10, "data": "CQE="}')
        is None
    )
    assert decode_command(light, topic, b"not json") is None
    assert (
        decode_command(
            light,
            "elsewhere",
            encode_command(light, EUI, "dim", {"level_pct": 5}, topic_vars={"application_id": APP}).payload,
        )
        is None
    )

"""``linli profiles new --from-sample`` and ``linli profiles test``: a new device model without code."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from device_profiles import SHIPPED_DIR, ProfileSet, Reading
from device_profiles.console import main
from device_profiles.errors import ProfileError
from device_profiles.loader import profile_from_data
from device_profiles.scaffold import ScaffoldError, scaffold

#: The integrator's sensor: temperature and battery as JSON on sensors/<id>/data.
SAMPLE = {
    "id": "th-0042",
    "temp": 23.5,
    "hum": 41.2,
    "bat": 87,
    "pm25": 12,
    "alarm": False,
    "mode": "auto",
    "ts": 1764820800,
    "radio": {"rssi": -71},
}


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["profiles", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_sample_to_profile_to_data(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sample.json").write_text(json.dumps(SAMPLE))
    mine = tmp_path / "my-profiles"
    mine.mkdir()
    profile_file = mine / "th100.yaml"
    code, out, err = run(
        capsys, "new", "--from-sample", str(tmp_path / "sample.json"), "--topic", "sensors/+/data",
        "--id", "acme/th100", "-o", str(profile_file),
    )  # fmt: skip
    assert (code, out) == (0, "")
    assert "acme/th100: 6 field(s), device type environment_sensor" in err
    text = profile_file.read_text()
    assert "device_type: environment_sensor   # REVIEW" in text
    assert 'mode = "auto" is not a number' in text
    assert "x_alarm" in text
    # the starter passes the checks and decodes its own sample into canonical names and units
    assert run(capsys, "check", str(mine))[0] == 0
    code, out, err = run(capsys, "test", str(profile_file), "--sample", str(tmp_path / "sample.json"))
    assert code == 0, out
    reading = json.loads(out)
    assert reading["metrics"] == {
        "temperature_c": 23.5,
        "humidity_pct": 41.2,
        "battery_pct": 87.0,
        "pm25_ugm3": 12.0,
        "x_alarm": 0.0,
        "rssi_dbm": -71.0,
    }
    assert reading["device_id"] == "sample"  # the topic was made up from the profile's pattern
    assert reading["ts"] == "2025-12-04T04:00:00Z"  # epoch seconds, from the value's size
    assert "temperature_c = 23.5 (°C)" in err
    assert "x_alarm = 0 (vendor extension)" in err
    assert "not read by the profile: id, mode" in err
    # loaded beside the shipped profiles, the sensor's messages decode on their real topic
    profiles = ProfileSet.load(SHIPPED_DIR, mine)
    result = profiles.decode("sensors/th-0042/data", json.dumps(SAMPLE).encode(), datetime.now(UTC))
    assert isinstance(result, Reading)
    assert (result.device_id, result.profile, result.metrics["temperature_c"]) == (
        "th-0042",
        "acme/th100",
        23.5,
    )
    # and `new` never overwrites a file
    again = ["new", "--from-sample", str(tmp_path / "sample.json"), "--topic", "sensors/+/data"]
    code, _, err = run(capsys, *again, "-o", str(profile_file))
    assert code == 1
    assert "cannot write" in err


def test_guesses_follow_the_values(tmp_path: Path) -> None:
    text, profile = scaffold(
        b'{"deviceId": "L-1", "time": "2026-12-01T08:00:00Z", "water_leak": true, "voltage": 3.1}',
        topic="acme/leak/up",
    )
    assert profile.device_type == "water_leak_sensor"
    assert profile.device_id.path == "deviceId"
    assert profile.timestamp is not None
    assert profile.timestamp.format == "iso8601"
    # voltage_v is a streetlight's metric: for a leak sensor it stays a vendor extension
    assert [f.metric for f in profile.fields] == ["water_leak", "x_voltage"]
    assert "no device time" not in text
    _, ms = scaffold(b'{"t": 1764820800123, "temperature": 20}', topic="th/+")
    assert ms.timestamp is not None
    assert ms.timestamp.format == "epoch_ms"


@pytest.mark.parametrize(
    ("sample", "topic", "message"),
    [
        (b"not json", "a/+", "the sample is not JSON"),
        (b"[1, 2]", "a/+", "must be one JSON object"),
        (b'{"temp": 1}', "a/#", "not #"),
        (b'{"temp": 1}', "a/b", "no device id"),
        (b'{"name": "x"}', "a/+", "no number or true/false value"),
    ],
)
def test_samples_that_cannot_make_a_profile_say_why(sample: bytes, topic: str, message: str) -> None:
    with pytest.raises(ScaffoldError, match=message):
        scaffold(sample, topic=topic)


def test_an_invented_metric_name_is_refused_for_any_device_type() -> None:
    doc = {
        "id": "acme/thermo",
        "vendor": "Acme",
        "model": "T1",
        "device_type": "thermometer",  # a type the standard does not know
        "topics": ["sensors/{device_id}/data"],
        "device_id": {"topic": "device_id"},
        "payload": {"format": "json"},
        "fields": [{"metric": "temperature", "path": "temp"}],
    }
    with pytest.raises(ProfileError, match="'temperature' is not a canonical metric"):
        profile_from_data(doc)
    doc["fields"] = [{"metric": "temperature_c", "path": "temp"}, {"metric": "x_dew_point_c", "path": "dew"}]
    assert profile_from_data(doc).device_type == "thermometer"


def test_profiles_test_reports_a_decode_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.json").write_text('{"contact": "maybe"}')
    code, out, _ = run(capsys, "test", "aqara/mccgq11lm", "--sample", str(tmp_path / "bad.json"))
    assert code == 1
    assert json.loads(out)["error"] == "bad_type"

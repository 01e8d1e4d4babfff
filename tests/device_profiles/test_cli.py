"""The `linli profiles` and `linli bench profiles` commands, in-process and once as a real process."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from device_profiles.console import main
from tests.device_profiles.conftest import NB_TOPIC, VALID


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles", "list")
    assert code == 0
    lines = out.splitlines()
    assert len(lines) == 11
    assert lines[0].split()[:3] == ["aqara/mccgq11lm", "door_contact", "json"]
    assert any(
        line.split()[:3] == ["generic_lorawan/sos_button", "sos_button", "json+base64"] for line in lines
    )
    code, out, _ = run(capsys, "profiles", "list", "--json")
    rows = json.loads(out)
    assert [r["id"] for r in rows] == sorted(VALID)
    assert rows[0]["topics"] == ["zigbee2mqtt/{device_id}"]
    assert rows[0]["report_interval_s"] == 3600.0


def test_check_shipped_and_bad_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, _ = run(capsys, "profiles", "check")
    assert code == 0
    assert "11 profile(s) valid, 0 error(s)" in out
    (tmp_path / "acme").mkdir()
    (tmp_path / "acme" / "bad.yaml").write_text("id: acme/bad\nvendor: Acme\n")
    (tmp_path / "acme" / "typo.yaml").write_text(
        (Path(__file__).parents[2] / "device_profiles/profiles/aqara/mccgq11lm.yaml")
        .read_text()
        .replace("id: aqara/mccgq11lm", "id: acme/typo")
        .replace("metric: battery_pct", "metric: battery_percent")
    )
    code, out, _ = run(capsys, "profiles", "check", str(tmp_path))
    assert code == 1
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 2
    assert str(tmp_path / "acme" / "bad.yaml") in errors[0]
    assert "model" in errors[0]
    assert (
        f"{tmp_path / 'acme' / 'typo.yaml'}: fields[1].metric: 'battery_percent' is not canonical"
        in errors[1]
    )
    assert "0 profile(s) valid, 2 error(s)" in out
    code, out, _ = run(capsys, "profiles", "check", str(tmp_path / "missing"))
    assert code == 1
    assert "not a directory" in out


def decode(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, topic: str, payload: bytes, *extra: str
) -> Any:
    file = tmp_path / "payload.bin"
    file.write_bytes(payload)
    code, out, _ = run(
        capsys,
        "profiles",
        "decode",
        "--topic",
        topic,
        "--payload-file",
        str(file),
        "--received-at",
        "2025-11-22T14:00:00+08:00",
        *extra,
    )
    assert out.count("\n") == 1  # one JSON object, one line
    return code, json.loads(out)


@pytest.mark.parametrize("profile_id", sorted(VALID))
def test_decode_every_dialect(capsys: pytest.CaptureFixture[str], tmp_path: Path, profile_id: str) -> None:
    code, doc = decode(capsys, tmp_path, *VALID[profile_id])
    assert code == 0
    assert list(doc) == [
        "device_id",
        "device_type",
        "ts",
        "received_at",
        "metrics",
        "events",
        "quality",
        "profile",
        "reading_id",
    ]
    assert doc["profile"] == profile_id
    assert doc["received_at"] == "2025-11-22T06:00:00Z"
    assert doc["ts"].endswith("Z")
    assert doc["metrics"]


@pytest.mark.parametrize("profile_id", sorted(VALID))
def test_decode_invalid_payload_of_every_dialect(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, profile_id: str
) -> None:
    topic, payload = VALID[profile_id]
    code, doc = decode(capsys, tmp_path, topic, payload[: len(payload) // 2])
    assert code == 1
    assert doc["error"] == "malformed_json"
    assert doc["message"]


def test_decode_error_with_reason_and_profile(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    topic, payload = VALID["generic_nbiot/manhole_cover"]
    code, doc = decode(capsys, tmp_path, topic, payload.replace(b'"bat": 87', b'"bat": "87"'))
    assert code == 1
    assert doc == {"error": "bad_type", "message": doc["message"], "profile": "generic_nbiot/manhole_cover"}
    assert "bat" in doc["message"]


def test_decode_from_stdin_and_forced_profile(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b'{"battery": 55}'))
    monkeypatch.setattr(sys, "stdin", stdin)
    code, out, _ = run(
        capsys, "profiles", "decode", "--topic", "zigbee2mqtt/sos", "--profile", "tuya/ts0215a_sos"
    )
    assert code == 0
    doc = json.loads(out)
    assert doc["profile"] == "tuya/ts0215a_sos"
    assert doc["metrics"] == {"battery_pct": 55.0}
    assert doc["quality"] == ["estimated_ts"]


def test_decode_bad_received_at(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    file = tmp_path / "p"
    file.write_bytes(b"{}")
    code, out, _ = run(
        capsys,
        "profiles",
        "decode",
        "--topic",
        NB_TOPIC,
        "--payload-file",
        str(file),
        "--received-at",
        "2025-11-22T14:00:00",
    )
    assert code == 1
    assert json.loads(out)["error"] == "bad_timestamp"


def test_schema(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "profiles", "schema")
    assert code == 0
    schema = json.loads(out)
    reading = schema["$defs"]["Reading"]
    assert set(reading["required"]) == {
        "device_id",
        "device_type",
        "ts",
        "received_at",
        "metrics",
        "profile",
        "reading_id",
    }
    assert reading["properties"]["ts"]["format"] == "date-time"
    assert reading["additionalProperties"] is False
    code, out, _ = run(capsys, "profiles", "schema", "--profile-format")
    assert code == 0
    assert "fields" in json.loads(out)["properties"]


def test_bench_profiles_json(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys,
        "bench",
        "profiles",
        "--json",
        "--count",
        "3000",
        "--distinct",
        "300",
        "--repeat",
        "1",
        "--profile",
        "generic_nbiot/manhole_cover",
        "--profile",
        "aqara/mccgq11lm",
    )
    assert code == 0
    doc = json.loads(out)
    assert sorted(doc) == ["aqara/mccgq11lm", "generic_nbiot/manhole_cover"]
    for figures in doc.values():
        assert figures["payloads"] == 3000
        assert figures["distinct"] == 300
        assert figures["decodes_per_s"] > 1000


def test_real_process(tmp_path: Path) -> None:
    topic, payload = VALID["generic_lorawan/manhole_cover"]
    done = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "profiles", "decode", "--topic", topic],
        input=payload,
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["reading_id"] == "3ac7e3c4-4401-4b8d-9386-a5c902f9202d"
    assert doc["events"] == ["gas_alarm", "water_alarm"]
    bad = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "profiles", "decode", "--topic", "nowhere"],
        input=b"{}",
        capture_output=True,
        check=False,
        timeout=60,
    )
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["error"] == "no_profile"


def test_bench_profiles_with_extra_dir(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    from tests.device_profiles.test_docs import worked_example_dir

    root = worked_example_dir(tmp_path)
    code, out, _ = run(
        capsys,
        "bench",
        "profiles",
        "--json",
        "--dir",
        str(root),
        "--profile",
        "acme/wl200",
        "--count",
        "2000",
        "--distinct",
        "200",
        "--repeat",
        "1",
    )
    assert code == 0
    assert json.loads(out)["acme/wl200"]["encoding"] == "hex"

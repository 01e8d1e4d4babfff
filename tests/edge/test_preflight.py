"""Misconfiguration is loud: ``check-config`` and ``run`` refuse the same problems, every one of them,
naming the file, the device and what is wrong; ``run`` refuses before it opens anything."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from device_profiles import ProfileSet
from device_profiles.inventory import Device, Inventory, Location
from edge.cli import main
from edge.config import load_config
from edge.errors import PreflightError
from edge.preflight import preflight, topic_matches, unheard_profiles

ROOT = Path(__file__).resolve().parents[2]
DOOR = "generic_lorawan/door_contact"
SOS = "generic_lorawan/sos_button"
HERE = Location(lat=31.23, lon=121.47)


def _device(device_id: str, profile: str, device_type: str, gateway_id: str = "gw-1") -> Device:
    return Device(
        device_id=device_id,
        device_type=device_type,
        profile=profile,
        community_id="c-1",
        gateway_id=gateway_id,
        location=HERE,
    )


def _config(tmp_path: Path, devices: list[Device], extra: str = "") -> Path:
    Inventory(devices).dump(tmp_path / "inv.yaml")
    path = tmp_path / "edge.toml"
    path.write_text(
        'gateway_id = "gw-1"\ncommunity_id = "c-1"\ninventory = "inv.yaml"\n'
        + extra
        + f'[cloud]\nurl = "mqtt://127.0.0.1:9"\n[buffer]\npath = "{tmp_path / "buffer.db"}"\n'
        '[http]\naddress = ""\n'
    )
    return path


def _check(path: Path) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["check-config", "--config", str(path)])
    return code, out.getvalue(), err.getvalue()


def _run(path: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINLI_EDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "edge", "run", "--config", str(path)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_device_type_contradicting_its_profile_is_refused_by_check_config_and_run(tmp_path: Path) -> None:
    path = _config(
        tmp_path,
        [_device("door-1", DOOR, "door_contact"), _device("sos-1", DOOR, "sos_button")],
    )
    code, out, err = _check(path)
    assert (code, out) == (2, "")
    for text in ("inv.yaml", "devices[1] (sos-1)", "door_contact", "sos_button"):
        assert text in err
    assert "door-1" not in err

    done = _run(path)
    assert done.returncode == 2
    for text in ("inv.yaml", "devices[1] (sos-1)", "door_contact", "sos_button"):
        assert text in done.stderr
    assert '"event":"refused"' in done.stdout
    assert not (tmp_path / "buffer.db").exists()  # refused before opening anything


def test_run_refuses_devices_whose_profiles_are_not_loaded_and_names_them_all(tmp_path: Path) -> None:
    devices = [_device(f"x-{i}", "acme/door", "door_contact") for i in range(8)]
    devices += [_device("y-1", "acme/button", "sos_button"), _device("ok-1", SOS, "sos_button")]
    devices.append(_device("elsewhere", "acme/other", "door_contact", gateway_id="gw-2"))
    path = _config(tmp_path, devices)
    done = _run(path)
    assert done.returncode == 2
    assert "2 problems" in done.stderr
    assert "unknown profile 'acme/door': devices[0] (x-0)" in done.stderr
    assert "and 3 more" in done.stderr  # eight devices: five named, the rest counted
    assert "unknown profile 'acme/button': devices[8] (y-1)" in done.stderr
    assert "acme/other" not in done.stderr  # another gateway's device is not ours to check
    assert not (tmp_path / "buffer.db").exists()
    code, _, err = _check(path)
    assert code == 2
    assert err.splitlines()[1:] == done.stderr.splitlines()[1:]  # the same problems, word for word


def test_a_profile_folder_that_does_not_load_is_refused_by_run_not_a_traceback(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles"
    profiles.mkdir()
    (profiles / "broken.yaml").write_text("id: acme/broken\nvendor: acme\n")
    path = _config(tmp_path, [_device("ok-1", SOS, "sos_button")], extra=f'profiles = ["{profiles}"]\n')
    done = _run(path)
    assert done.returncode == 2
    assert "broken.yaml" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout


def test_no_device_for_this_gateway_is_a_warning(tmp_path: Path) -> None:
    path = _config(tmp_path, [_device("d-1", DOOR, "door_contact", gateway_id="gw-9")])
    code, out, err = _check(path)
    assert code == 0
    assert out.startswith("ok: gateway gw-1")
    assert "no device to gateway 'gw-1'" in err
    assert "gw-9" in err


def test_alarm_classes_no_profile_gives_are_a_warning(tmp_path: Path) -> None:
    devices = [_device("d-1", DOOR, "door_contact")]
    fine = preflight(load_config(_config(tmp_path, devices)))
    assert fine.warnings == ()  # the defaults: every alarm event and metric is given or derived
    path = _config(
        tmp_path,
        devices,
        extra='[classes]\nalarm_events = ["sos_pressed", "sos_presed"]\n'
        "alarm_metrics = { cover_opn = 1.0 }\n",
    )
    code, out, err = _check(path)
    assert code == 0
    assert out.startswith("ok: gateway gw-1")
    assert "classes.alarm_events" in err
    assert "'sos_presed'" in err
    assert "'sos_pressed'" not in err
    assert "classes.alarm_metrics" in err
    assert "'cover_opn'" in err


def test_a_profile_no_subscription_matches_is_named_with_its_devices(tmp_path: Path) -> None:
    path = _config(tmp_path, [_device("door-1", DOOR, "door_contact"), _device("sos-1", SOS, "sos_button")])
    loaded = preflight(load_config(path))
    assert unheard_profiles(loaded.profiles, loaded.inventory, loaded.filters) == []
    door_topics = ProfileSet.shipped().get(DOOR).topics
    kept = tuple(
        f
        for f in loaded.filters
        if not any(topic_matches(f, t.replace("{", "").replace("}", "")) for t in door_topics)
    )
    problems = unheard_profiles(loaded.profiles, loaded.inventory, kept)
    door = [p for p in problems if f"profile {DOOR!r}" in p]
    assert len(door) == len(door_topics)
    assert all("door-1" in p and "sos-1" not in p and "application/{application_id}" in p for p in door)


@pytest.mark.parametrize(
    ("topic_filter", "topic", "matches"),
    [
        ("a/+/c", "a/b/c", True),
        ("a/+", "a/b/c", False),
        ("a/#", "a/b/c", True),
        ("#", "a", True),
        ("+/b", "$SYS/b", False),
        ("a/b", "a/b", True),
        ("a/b", "a/c", False),
        ("a/b/c", "a/b", False),
    ],
)
def test_topic_filter_matching(topic_filter: str, topic: str, matches: bool) -> None:
    assert topic_matches(topic_filter, topic) is matches


def test_preflight_error_lists_every_problem(tmp_path: Path) -> None:
    path = _config(tmp_path, [_device("a", "acme/a", "door_contact"), _device("b", DOOR, "streetlight")])
    with pytest.raises(PreflightError) as caught:
        preflight(load_config(path))
    assert len(caught.value.problems) == 2

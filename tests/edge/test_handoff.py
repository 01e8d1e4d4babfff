"""``linli edge run`` checks with the validating models, then runs the agent on msgspec copies of
them (`edge.handoff`): the copies hold what the models hold, the running agent has no pydantic,
and a reload is checked in a child process."""

from __future__ import annotations

import random
import signal
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr

from device_profiles.samples import sample_payloads, sample_reading
from edge.config import EdgeConfig, load_config
from edge.errors import EdgeError, PreflightError
from edge.frozen_gen import FROZEN, render
from edge.handoff import check_in_child, decode, encode, exec_agent
from edge.preflight import Loaded, preflight
from tests.edge.conftest import Dev, Fleet, Rig

DOOR = "generic_lorawan/door_contact"
LAMP = "generic_lorawan/streetlight"
#: The read-only members of the models, which the copies carry through the same base classes.
CONFIG_MEMBERS = (
    "up_topic",
    "alarm_topic",
    "status_topic",
    "down_topic",
    "progress_topic",
    "field_client_id",
    "cloud_client_id",
)


def test_the_copies_are_the_rendering_of_the_models() -> None:
    # A model changed without `python -m edge.frozen_gen` fails here.
    assert FROZEN.read_text() == render()


def _same(model: object, copy: object, where: str) -> None:
    """`copy` holds what `model` holds: the same values of the same types, all the way down."""
    if isinstance(model, BaseModel):
        assert type(copy).__name__ == type(model).__name__, where
        for name in type(model).model_fields:
            _same(getattr(model, name), getattr(copy, name), f"{where}.{name}")
    elif isinstance(model, SecretStr):
        assert copy.get_secret_value() == model.get_secret_value(), where  # type: ignore[attr-defined]
    elif isinstance(model, dict):
        assert isinstance(copy, dict), where
        assert [(type(k), k) for k in copy] == [(type(k), k) for k in model], where
        for k, v in model.items():
            _same(v, copy[k], f"{where}[{k!r}]")
    elif isinstance(model, list | tuple):
        assert type(copy) is type(model), where
        assert len(copy) == len(model), where
        for i, (a, b) in enumerate(zip(model, copy, strict=True)):
            _same(a, b, f"{where}[{i}]")
    else:
        # An unvalidated default may be an int for a float (a str enum for a str): equal values.
        widened = (type(model), type(copy)) == (int, float) or isinstance(model, str)
        assert type(copy) is type(model) or widened, (where, type(model), type(copy))
        assert copy == model, where


@pytest.fixture
def checked(tmp_path: Path) -> tuple[EdgeConfig, Loaded, Path]:
    """A configuration that sets every section (TLS files, a password, an extra profile folder),
    checked by `preflight`: the check stage's input to the hand-over."""
    for name in ("ca.pem", "client.pem", "client.key"):
        (tmp_path / name).write_text("not read by these tests\n")
    (tmp_path / "profiles").mkdir()
    fleet = Fleet({DOOR: 3, LAMP: 2})
    inventory = fleet.inventory(
        tmp_path / "inventory.yaml", extra=(Dev("ffff000000000001", DOOR, "door_contact"),)
    )
    path = tmp_path / "edge.toml"
    path.write_text(
        f"""gateway_id = "gw-test"
community_id = "c-test"
inventory = "{inventory.name}"
profiles = ["profiles"]
log_level = "DEBUG"
log_format = "text"
[field]
url = "mqtt://127.0.0.1:1884"
username = "edge"
password = "field secret"
receive_maximum = 77
[cloud]
url = "mqtts://cloud.example:8884"
client_id = "gw-test-up"
password = "cloud secret"
alarm_retry_s = 0.25
[cloud.tls]
ca_cert = "ca.pem"
client_cert = "client.pem"
client_key = "client.key"
[buffer]
path = "buffer.db"
durability = "normal"
[uplink]
telemetry_batches_in_flight = 3
telemetry_max_readings_per_s = 12.5
[classes]
alarm_events = ["sos_pressed", "door_opened"]
alarm_metrics = {{water_level_cm = 40, cover_open = 1}}
[normalise]
dedupe_ids_remembered = 123
[liveness]
report_intervals_s = {{door_contact = 600}}
[discovery]
pending = false
[commands]
confirm_timeout_s = 60
[http]
address = "[::1]:0"
"""
    )
    config = load_config(path)
    return config, preflight(config), inventory


def test_the_hand_over_holds_the_validated_configuration_and_profiles(
    checked: tuple[EdgeConfig, Loaded, Path],
) -> None:
    config, loaded, _ = checked
    copy, handed = decode(encode(config, loaded))
    _same(config, copy, "config")
    for name in CONFIG_MEMBERS:
        assert getattr(copy, name) == getattr(config, name), name
    for side in ("field", "cloud"):
        for name in ("host", "port", "uses_tls"):
            assert getattr(getattr(copy, side), name) == getattr(getattr(config, side), name), (side, name)
    assert copy.http.host_port == config.http.host_port == ("::1", 0)
    assert "secret" not in repr(copy)
    assert list(handed.profiles.profiles) == list(loaded.profiles.profiles)  # the order selects
    for pid, profile in loaded.profiles.profiles.items():
        _same(profile, handed.profiles.get(pid), pid)
        assert handed.profiles.get(pid).expected_interval_s == profile.expected_interval_s
    assert handed.profiles.sources == loaded.profiles.sources
    assert handed.inventory.devices == loaded.inventory.devices
    assert len(handed.inventory) == 5
    assert handed.inventory.owners == loaded.inventory.owners == {"ffff000000000001": "gw-other"}
    assert handed.inventory.owner("ffff000000000001") == "gw-other"
    assert (handed.filters, handed.warnings) == (loaded.filters, loaded.warnings)


def test_copied_profiles_decode_and_encode_as_the_validated_ones(
    checked: tuple[EdgeConfig, Loaded, Path],
) -> None:
    config, loaded, _ = checked
    models = loaded.profiles
    copies = decode(encode(config, loaded))[1].profiles
    rng = random.Random(5)
    received = datetime(2026, 12, 5, 8, 0, tzinfo=UTC)
    compared = 0
    for profile in models.profiles.values():
        for topic, payload in sample_payloads(profile, models.encode, rng, 10):
            for body in (payload, payload[: len(payload) // 2], payload.replace(b"1", b"x")):
                assert copies.decode(topic, body, received) == models.decode(topic, body, received)
                compared += 1
        reading = sample_reading(profile, rng)
        assert copies.encode(reading) == models.encode(reading)
    assert compared >= 30 * len(models)


def test_a_reload_is_checked_in_a_child_process(checked: tuple[EdgeConfig, Loaded, Path]) -> None:
    config, loaded, inventory = checked
    running, _ = decode(encode(config, loaded))  # what the agent runs on: the copy
    again = check_in_child(running)
    assert list(again.profiles.profiles) == list(loaded.profiles.profiles)
    assert again.inventory.devices == loaded.inventory.devices
    assert again.filters == loaded.filters
    text = inventory.read_text()
    inventory.write_text(text.replace(DOOR, "acme/no_such_profile", 1))
    with pytest.raises(PreflightError, match="no_such_profile") as refused:
        check_in_child(running)
    assert refused.value.problems


def test_an_agent_that_cannot_be_started_is_a_clear_error(
    checked: tuple[EdgeConfig, Loaded, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config, loaded, _ = checked
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-python"))
    with pytest.raises(EdgeError, match=r"cannot start the agent .*no-python.*No such file"):
        exec_agent(config, loaded)


def test_the_running_agent_has_not_loaded_pydantic(rig: Callable[..., Rig]) -> None:
    fleet = Fleet({DOOR: 1})
    _, _, _, agent, col, pub = rig(fleet)
    assert agent.proc is not None
    pid = agent.proc.pid  # the process started as `python -m edge run`: the same one, replaced
    command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    assert command[1:4] == [b"-m", b"edge.handoff", b"run"]
    maps = Path(f"/proc/{pid}/maps").read_text()
    assert "site-packages/msgspec" in maps  # the check below reads the right thing
    assert "pydantic" not in maps
    topic, payload, reading = fleet.payload(fleet.devices[0])
    pub.publish(topic, payload)
    assert col.wait_for(lambda c: reading.reading_id in c.reading_ids(), 10)
    # a reload runs the check in a child; the agent stays without pydantic
    agent.proc.send_signal(signal.SIGHUP)
    agent.wait_log("reloaded")
    assert "pydantic" not in Path(f"/proc/{pid}/maps").read_text()
    assert agent.terminate() == 0

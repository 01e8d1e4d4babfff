"""encode then decode gives the reading back, for every shipped profile (and the docs' example)."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles import EncodeError, ProfileSet, Reading, UnknownProfileError
from device_profiles.samples import sample_reading
from tests.device_profiles.conftest import RECEIVED, VALID
from tests.device_profiles.test_docs import worked_example_dir

SHIPPED = sorted(ProfileSet.shipped().profiles)


def assert_round_trip(profiles: ProfileSet, r: Reading) -> Reading:
    topic, payload = profiles.encode(r)
    back = profiles.decode(topic, payload, r.received_at)
    assert isinstance(back, Reading), (back, topic, payload)
    assert back.profile == r.profile
    assert back.device_id == r.device_id
    assert back.device_type == r.device_type
    assert back.ts == r.ts
    assert back.received_at == r.received_at
    assert back.events == r.events
    assert back.quality == r.quality
    assert back.metrics.keys() == r.metrics.keys()
    for name, value in r.metrics.items():
        # Within the profile's scale rounding: the samples are drawn on the scale grid.
        assert math.isclose(back.metrics[name], value, rel_tol=1e-9, abs_tol=1e-9), (
            name,
            back.metrics,
            r.metrics,
        )
    profile = profiles.get(r.profile)
    if profile.reading_id is not None:
        assert back.reading_id == r.reading_id
    else:
        # No vendor message id in this dialect: the id is derived from what was sent, stably.
        again = profiles.decode(topic, payload, r.received_at + timedelta(minutes=5))
        assert isinstance(again, Reading)
        assert again.reading_id == back.reading_id
    # Encoding is deterministic and the decoded reading re-encodes to the same bytes.
    assert profiles.encode(r) == (topic, payload)
    assert profiles.encode(back) == (topic, payload)
    return back


@pytest.mark.parametrize("profile_id", SHIPPED)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_round_trip(profiles: ProfileSet, profile_id: str, rng: random.Random) -> None:
    r = sample_reading(profiles.get(profile_id), rng)
    if profiles.get(profile_id).timestamp is None:
        assert r.ts == r.received_at
        assert r.quality == ("estimated_ts",)
    assert_round_trip(profiles, r)


@pytest.fixture(scope="module")
def example_profiles(tmp_path_factory: pytest.TempPathFactory) -> ProfileSet:
    return ProfileSet.load(worked_example_dir(tmp_path_factory.mktemp("profiles")))


@settings(max_examples=150, deadline=None)
@given(rng=st.randoms(use_true_random=False))
def test_round_trip_worked_example(example_profiles: ProfileSet, rng: random.Random) -> None:
    serial = f"WL{rng.randrange(10**6):06d}"
    assert_round_trip(
        example_profiles, sample_reading(example_profiles.get("acme/wl200"), rng, device_id=serial)
    )


@pytest.mark.parametrize("profile_id", SHIPPED)
def test_real_payloads_survive_decode_encode_decode(profiles: ProfileSet, profile_id: str) -> None:
    topic, payload = VALID[profile_id]
    first = profiles.decode(topic, payload, RECEIVED)
    assert isinstance(first, Reading)
    assert_round_trip(profiles, first)


def test_chirpstack_envelope_is_deterministic_from_the_reading(profiles: ProfileSet) -> None:
    r = Reading(
        device_id="a84041000181c0de",
        device_type="door_contact",
        ts=datetime(2025, 11, 22, 5, 0, 0, 250000, tzinfo=UTC),
        received_at=datetime(2025, 11, 22, 5, 0, 1, tzinfo=UTC),
        metrics={"contact_open": 1.0, "open_count": 7.0, "battery_pct": 99.0, "rssi_dbm": -90.0},
        profile="generic_lorawan/door_contact",
        reading_id="not-a-uuid",
    )
    topic, payload = profiles.encode(r)
    assert topic == "application/7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a/device/a84041000181c0de/event/up"
    doc = msgspec.json.decode(payload)
    assert doc["fPort"] == 4
    assert doc["deviceInfo"]["devEui"] == "a84041000181c0de"
    assert doc["rxInfo"][0]["rssi"] == -90
    assert doc["fCnt"] == int(r.ts.timestamp()) % 65536
    assert doc["time"] == "2025-11-22T05:00:00.250000+00:00"
    # A non-UUID reading id becomes a stable UUID.
    assert len(doc["deduplicationId"]) == 36
    assert profiles.encode(r)[1] == payload
    back = profiles.decode(topic, payload, r.received_at)
    assert isinstance(back, Reading)
    assert back.reading_id == doc["deduplicationId"]


def _reading(**changes: object) -> Reading:
    base = Reading(
        device_id="861234567890123",
        device_type="manhole_cover",
        ts=datetime(2025, 11, 22, 5, 0, tzinfo=UTC),
        received_at=datetime(2025, 11, 22, 5, 0, 1, tzinfo=UTC),
        metrics={
            "cover_open": 0.0,
            "tilt_deg": 1.5,
            "water_level_mm": 10.0,
            "h2s_ppm": 0.1,
            "ch4_pct_lel": 0.0,
        },
        profile="generic_nbiot/manhole_cover",
        reading_id="x",
    )
    return msgspec.structs.replace(base, **changes)


def test_encode_errors(profiles: ProfileSet) -> None:
    topic, payload = profiles.encode(_reading())
    assert topic == "nbiot/861234567890123/up"
    assert msgspec.json.decode(payload)["csq"] == 99  # no rssi: CSQ "unknown"
    with pytest.raises(UnknownProfileError):
        profiles.encode(_reading(profile="acme/none"))
    with pytest.raises(EncodeError, match="device_type"):
        profiles.encode(_reading(device_type="streetlight"))
    with pytest.raises(EncodeError, match="tilt_deg"):
        profiles.encode(_reading(metrics={"cover_open": 0.0}))
    with pytest.raises(EncodeError, match="cannot express"):
        profiles.encode(_reading(metrics={**_reading().metrics, "lamp_on": 1.0}))
    with pytest.raises(EncodeError, match="cannot express"):
        profiles.encode(_reading(events=("gas_alarm",)))
    with pytest.raises(EncodeError, match="map"):
        profiles.encode(_reading(metrics={**_reading().metrics, "cover_open": 0.5}))
    sos = Reading(
        device_id="a84041000181c0de",
        device_type="sos_button",
        ts=RECEIVED,
        received_at=RECEIVED,
        metrics={"battery_pct": 300.0},
        events=("sos_pressed",),
        profile="generic_lorawan/sos_button",
        reading_id="x",
    )
    with pytest.raises(EncodeError, match="does not fit uint8"):
        profiles.encode(sos)

from __future__ import annotations

import uuid

import msgspec
import pytest

from cloud.errors import EnvelopeError, UnknownVersion
from cloud.ingest.envelope import decode, reading_key, reading_uuid, topic_ids
from tests.cloud.conftest import T0_US, R, envelope, up_topic


def test_decodes_the_documented_wire_format() -> None:
    r = R("0x00158d0001a2b3c4", T0_US, {"contact_open": 1, "battery_pct": 87.5}, events=["x"])
    skewed = R("d2", T0_US, {"battery_pct": 50}, quality=["clock_skew"], device_ts_us=T0_US - 10**9)
    env = decode(up_topic(), envelope([r, skewed], batch_seq=7, batch_class="alarm"))
    assert (env.v, env.gateway_id, env.community_id, env.batch_seq, env.batch_class) == (
        1,
        "gw1",
        "c1",
        7,
        "alarm",
    )
    first, second = env.readings
    assert first.device_id == "0x00158d0001a2b3c4"
    assert first.metrics == {"contact_open": 1.0, "battery_pct": 87.5}
    assert first.events == ("x",)
    assert first.device_ts_us is None
    assert second.device_ts_us == T0_US - 10**9
    assert second.quality == ("clock_skew",)


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (b"\xc1not msgpack", "malformed"),
        (msgspec.msgpack.encode({"v": 1, "gateway_id": "gw1"}), "malformed"),
        (msgspec.msgpack.encode([1, 2, 3]), "malformed"),
    ],
)
def test_malformed_payloads_are_refused(payload: bytes, reason: str) -> None:
    with pytest.raises(EnvelopeError) as info:
        decode(up_topic(), payload)
    assert reason in info.value.reason
    assert not isinstance(info.value, UnknownVersion)


def test_unknown_version_is_named() -> None:
    with pytest.raises(UnknownVersion) as info:
        decode(up_topic(), msgspec.msgpack.encode({"v": 2, "whatever": True}))
    assert info.value.version == 2
    with pytest.raises(UnknownVersion):
        decode(up_topic(), envelope([], batch_seq=1, v=3))


def test_topic_must_name_the_envelopes_gateway() -> None:
    with pytest.raises(EnvelopeError, match="does not match"):
        decode(up_topic("c1", "gw-other"), envelope([], batch_seq=1))
    assert topic_ids("linli/v1/c1/gw1/up") == ("c1", "gw1")
    assert topic_ids("other/v1/c1/gw1/up") is None


def test_reading_ids_map_to_uuids_stably() -> None:
    hex32 = "0123456789abcdef0123456789abcdef"
    assert reading_uuid(hex32) == uuid.UUID(hex32)
    u = str(uuid.uuid4())
    assert reading_uuid(u) == uuid.UUID(u)
    assert reading_uuid("vendor-msg-42") == reading_uuid("vendor-msg-42")
    assert reading_uuid("vendor-msg-42") != reading_uuid("vendor-msg-43")


@pytest.mark.parametrize(
    ("reading", "reason"),
    [
        (R("d1", 2**64 - 2000, {"battery_pct": 1}), "out of range"),
        (R("d1", -(2**62), {"battery_pct": 1}), "out of range"),
        (R("d\x001", T0_US, {"battery_pct": 1}), "NUL"),
        (R("d1", T0_US, {"battery\x00": 1}), "NUL"),
        (R("d1", T0_US, {"battery_pct": 1}, events=["x\x00"]), "NUL"),
    ],
)
def test_what_the_database_would_refuse_is_refused_here(reading: R, reason: str) -> None:
    with pytest.raises(EnvelopeError, match=reason):
        decode(up_topic(), envelope([reading], batch_seq=1))
    with pytest.raises(EnvelopeError, match="batch_seq"):
        decode(up_topic(), envelope([], batch_seq=2**63))


def test_reading_keys_agree_with_reading_uuids() -> None:
    u = uuid.uuid4()
    for rid in (u.hex, str(u), str(u).upper(), u.hex.upper(), "vendor-msg-42", ""):
        assert reading_key(rid) == reading_uuid(rid).bytes
    assert reading_key(str(u).upper()) == reading_key(u.hex) == u.bytes

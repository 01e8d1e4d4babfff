"""The compiled encoder: the reading id it reports is the decoder's, and fixed JSON layouts render
exactly what writing each value into a copy of the template gives."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from device_profiles import ProfileSet, Reading
from device_profiles.layout import CONSTANT, JsonLayout, Write
from device_profiles.paths import parse_path, set_path
from device_profiles.samples import sample_reading
from tests.device_profiles.test_docs import worked_example_dir

SHIPPED = sorted(ProfileSet.shipped().profiles)


@pytest.mark.parametrize("profile_id", SHIPPED)
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rng=st.randoms(use_true_random=False))
def test_encode_message_reports_the_id_decoding_gives(
    profiles: ProfileSet, profile_id: str, rng: random.Random
) -> None:
    r = sample_reading(profiles.get(profile_id), rng)
    if rng.random() < 0.3:
        r = msgspec.structs.replace(r, reading_id=f"sim-{rng.randrange(10**9)}")  # not UUID-shaped
    topic, payload, reading_id = profiles.encode_message(r)
    assert profiles.encode(r) == (topic, payload)
    back = profiles.decode(topic, payload, r.received_at)
    assert isinstance(back, Reading), back
    assert back.reading_id == reading_id


def test_derived_id_follows_the_profiles_device_id_case(profiles: ProfileSet) -> None:
    # generic_lorawan devices are lowercase DevEUIs; an uppercase one in a reading decodes lowercase.
    r = sample_reading(profiles.get("generic_lorawan/door_contact"), random.Random(3))
    upper = msgspec.structs.replace(r, device_id=r.device_id.upper())
    for reading in (r, upper):
        topic, payload, reading_id = profiles.encode_message(reading)
        back = profiles.decode(topic, payload, reading.received_at)
        assert isinstance(back, Reading), back
        assert back.reading_id == reading_id


def test_encode_message_on_a_hex_dialect(tmp_path: Path) -> None:
    example = ProfileSet.load(worked_example_dir(tmp_path))
    rng = random.Random(5)
    for _ in range(200):
        r = sample_reading(example.get("acme/wl200"), rng, device_id=f"WL{rng.randrange(10**6):06d}")
        topic, payload, reading_id = example.encode_message(r)
        back = example.decode(topic, payload, r.received_at)
        assert isinstance(back, Reading), back
        assert back.reading_id == reading_id


def _replayed(template: dict[str, Any], writes: list[Write], values: list[Any]) -> bytes:
    """The reference: write every value into a fresh copy of the template, then encode it."""
    doc = msgspec.json.decode(msgspec.json.encode(template))
    it = iter(values)
    for w in writes:
        set_path(doc, w.segments, w.value if w.kind == CONSTANT else next(it))
    return msgspec.json.encode(doc)


def _writes(*specs: str | tuple[str, Any]) -> list[Write]:
    return [
        Write(parse_path(s[0]), CONSTANT, s[1]) if isinstance(s, tuple) else Write(parse_path(s), "value")
        for s in specs
    ]


LAYOUTS: list[tuple[dict[str, Any], list[Write]]] = [
    # ChirpStack-like: nested objects, a list element from a [*] path, a key the template already has.
    (
        {"deviceInfo": {"tenantId": "t"}, "rxInfo": [{"gatewayId": "g", "snr": 9.5}], "dr": 5},
        _writes(("fPort", 3), "deviceInfo.devEui", "time", "fCnt", "rxInfo[*].rssi", "data", "dr"),
    ),
    # NB-IoT-like: template of nulls filled in place, values under `data`.
    (
        {"imei": None, "ts": None, "type": None, "data": {}, "bat": None},
        _writes(("type", "manhole"), "imei", "ts", "data.angle", "data.level", "bat", "csq"),
    ),
    # A list extended by an index path, and a value written twice (the last one stays).
    ({}, _writes("a[2].b", "a[0]", "x", "x", ("y", True))),
]

VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**53), max_value=2**53),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@given(data=st.data())
def test_fixed_layout_renders_what_writing_into_the_template_gives(layout: int, data: st.DataObject) -> None:
    template, writes = LAYOUTS[layout]
    compiled = JsonLayout(template=template, writes=writes, encoder=msgspec.json.Encoder())
    assert compiled.fixed
    holes = sum(1 for w in writes if w.kind != CONSTANT)
    values = data.draw(st.lists(VALUES, min_size=holes, max_size=holes))
    assert compiled.render(values) == _replayed(template, writes, values)


def test_a_layout_that_depends_on_the_values_is_replayed() -> None:
    # "a" holds a value and "a.b" is written through it: the document's shape depends on the value.
    writes = _writes("a", "a.b")
    compiled = JsonLayout(template={}, writes=writes, encoder=msgspec.json.Encoder())
    assert not compiled.fixed
    assert compiled.render([None, 1]) == _replayed({}, writes, [None, 1]) == b'{"a":{"b":1}}'
    with pytest.raises(TypeError):
        compiled.render(["text", 1])

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from simulators.errors import FleetError
from simulators.fleet import generate_fleet, load_fleet, parse_mix, split_counts
from simulators.rand import RandomStream


def _rs(seed: int = 1) -> RandomStream:
    return RandomStream(np.random.default_rng(seed))


def test_parse_mix_and_split() -> None:
    assert parse_mix("door_contact=40, sos_button=20") == {"door_contact": 40.0, "sos_button": 20.0}
    assert split_counts(10, {"a": 1.0, "b": 1.0, "c": 1.0}) == {"a": 4, "b": 3, "c": 3}
    for bad in ("door_contact", "door_contact=x", "Door=1", "a=0"):
        with pytest.raises(FleetError):
            parse_mix(bad)


def test_generated_fleet_follows_the_mix_and_spreads_dialects(profiles: ProfileSet) -> None:
    mix = parse_mix("door_contact=40,sos_button=20,manhole_cover=10,streetlight=30")
    inventory = generate_fleet(devices=2500, mix=mix, rs=_rs(), profiles=profiles)
    types = Counter(d.device_type for d in inventory)
    assert types == {"door_contact": 1000, "sos_button": 500, "manhole_cover": 250, "streetlight": 750}
    used = Counter(d.profile for d in inventory)
    for device_type in types:
        shipped = {p.id for p in profiles.profiles.values() if p.device_type == device_type}
        assert set(used) >= shipped, f"every shipped {device_type} dialect is used"
    assert len({d.device_id for d in inventory}) == 2500
    assert inventory.communities() == ["c001", "c002", "c003"]
    assert all(len(inventory.for_gateway(g)) <= 300 for g in inventory.gateways())
    inventory.check_profiles(profiles)


def test_residents_live_in_flats(profiles: ProfileSet) -> None:
    inventory = generate_fleet(devices=400, rs=_rs(2), profiles=profiles)
    for d in inventory:
        if d.device_type in ("door_contact", "sos_button"):
            assert d.resident_id is not None
            assert d.living_alone is not None
            assert d.location.building
            assert d.location.unit
            assert d.location.room
        else:
            assert d.resident_id is None
            assert d.location.building is None
    doors = [d for d in inventory if d.device_type == "door_contact"]
    flats = {(d.community_id, d.location.building, d.location.unit, d.location.room) for d in doors}
    assert len(flats) == len(doors), "one front door per flat"
    alone = sum(bool(d.living_alone) for d in doors) / len(doors)
    assert 0.2 < alone < 0.5
    buttons = [d for d in inventory if d.device_type == "sos_button"]
    assert sum(bool(d.living_alone) for d in buttons) / len(buttons) > alone, (
        "buttons go to those alone first"
    )


def test_same_seed_same_fleet(profiles: ProfileSet) -> None:
    a = generate_fleet(devices=300, rs=_rs(5), profiles=profiles)
    b = generate_fleet(devices=300, rs=_rs(5), profiles=profiles)
    c = generate_fleet(devices=300, rs=_rs(6), profiles=profiles)
    assert a == b
    assert a != c


def test_fleet_file(tmp_path: Path, profiles: ProfileSet) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(
        """
communities:
  - id: xinhua
    lat: 31.2154
    lon: 121.4371
    gateways: 2
    devices: {door_contact: 12, sos_button: 6, streetlight: 4}
    profiles: {door_contact: [aqara/mccgq11lm]}
  - id: tianlin
    lat: 31.17
    lon: 121.42
    devices: {manhole_cover: 5}
"""
    )
    inventory = load_fleet(path, rs=_rs(), profiles=profiles)
    assert len(inventory) == 27
    assert {d.profile for d in inventory if d.device_type == "door_contact"} == {"aqara/mccgq11lm"}
    assert inventory.gateways() == ["xinhua-gw1", "xinhua-gw2", "tianlin-gw1"]
    # An inventory file is replayed as is.
    inventory.dump(tmp_path / "inventory.yaml")
    assert load_fleet(tmp_path / "inventory.yaml", rs=_rs(), profiles=profiles) == inventory


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("communities: []", "communities: List should have at least 1 item"),
        ("communities:\n  - {id: a, lat: 95, lon: 0, devices: {}}", r"communities\.0\.lat"),
        ("communities:\n  - {id: a, lat: 1, lon: 0, devices: {toaster: 3}}", "no loaded profile is for it"),
        (
            "communities:\n  - {id: a, lat: 1, lon: 0, devices: {door_contact: 1},"
            " profiles: {door_contact: [x/y]}}",
            r"communities\[0\]\.profiles\.door_contact",
        ),
        ("communities: [\n", "not valid YAML"),
    ],
)
def test_fleet_file_errors_name_file_and_field(
    tmp_path: Path, profiles: ProfileSet, text: str, match: str
) -> None:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    with pytest.raises(FleetError, match=match) as info:
        load_fleet(path, rs=_rs(), profiles=profiles)
    assert str(path) in str(info.value)


def test_bad_inventory_as_fleet(tmp_path: Path, profiles: ProfileSet) -> None:
    path = tmp_path / "inventory.json"
    path.write_text('{"version": 1, "devices": [{"device_id": "x"}]}')
    with pytest.raises(FleetError, match=r"devices\[0\] \(x\)"):
        load_fleet(path, rs=_rs(), profiles=profiles)
    assert Inventory([]) == Inventory()

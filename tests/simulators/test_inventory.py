from __future__ import annotations

from pathlib import Path

import pytest

from device_profiles import ProfileSet
from device_profiles.inventory import Device, Inventory, InventoryError, Location


def _door(device_id: str = "0x00158d0001a2b3c4", **extra: object) -> Device:
    fields: dict[str, object] = {
        "device_id": device_id,
        "device_type": "door_contact",
        "profile": "aqara/mccgq11lm",
        "community_id": "c01",
        "gateway_id": "c01-gw1",
        "location": Location(lat=31.2304, lon=121.4737, building="3", unit="2", room="401"),
        "resident_id": "c01-r0007",
        "living_alone": True,
    }
    fields.update(extra)
    return Device(**fields)  # type: ignore[arg-type]


def _light(device_id: str = "861234567890123", gateway: str = "c01-gw2") -> Device:
    return Device(
        device_id=device_id,
        device_type="streetlight",
        profile="generic_nbiot/streetlight",
        community_id="c01",
        gateway_id=gateway,
        location=Location(lat=1e-05, lon=-0.5),
    )


@pytest.mark.parametrize("suffix", ["yaml", "yml", "json"])
def test_dump_and_load_round_trip(tmp_path: Path, suffix: str) -> None:
    inventory = Inventory([_door(), _light()])
    path = tmp_path / f"inventory.{suffix}"
    inventory.dump(path)
    loaded = Inventory.load(path, profiles=ProfileSet.shipped())
    assert loaded == inventory
    assert loaded.path == path
    assert loaded["861234567890123"].location.lat == 1e-05


def test_lookups() -> None:
    inventory = Inventory([_door(), _light(), _light("861234567890124", gateway="c01-gw1")])
    assert len(inventory) == 3
    assert "861234567890123" in inventory
    assert inventory.get("nope") is None
    assert inventory.device_profile_map() == {
        "0x00158d0001a2b3c4": "aqara/mccgq11lm",
        "861234567890123": "generic_nbiot/streetlight",
        "861234567890124": "generic_nbiot/streetlight",
    }
    assert inventory.gateways() == ["c01-gw1", "c01-gw2"]
    assert [d.device_id for d in inventory.for_gateway("c01-gw1")] == [
        "0x00158d0001a2b3c4",
        "861234567890124",
    ]
    assert set(inventory.by_type()) == {"door_contact", "streetlight"}


def test_yaml_is_readable_and_canonical(tmp_path: Path) -> None:
    path = tmp_path / "inventory.yaml"
    Inventory([_door()]).dump(path)
    text = path.read_text()
    assert text.startswith('version: 1\ndevices:\n  - device_id: "0x00158d0001a2b3c4"\n')
    assert 'location: {lat: 31.2304, lon: 121.4737, building: "3", unit: "2", room: "401"}' in text
    assert "living_alone: true" in text


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(InventoryError, match=r"devices\[1\] \(0x00158d0001a2b3c4\): duplicate device_id"):
        Inventory([_door(), _door()])


def test_living_alone_goes_with_resident_id() -> None:
    with pytest.raises(InventoryError, match="living_alone"):
        Inventory([_door(living_alone=None)])
    with pytest.raises(InventoryError, match="living_alone"):
        Inventory([_light(), _door("x", resident_id=None)])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        (
            "lat: 31.2304",
            "lat: 131.2304",
            r"devices\[0\] \(0x00158d0001a2b3c4\)\.location\.lat: Expected `float` <= 90",
        ),
        (
            "profile:",
            "profil:",
            r"devices\[0\] \(0x00158d0001a2b3c4\): Object contains unknown field `profil`",
        ),
        ("version: 1", "version: 2", "unsupported version 2"),
        ("device_type: door_contact", "device_type: Door Contact", r"devices\[0\].*device_type"),
    ],
)
def test_errors_name_file_and_entry(tmp_path: Path, old: str, new: str, message: str) -> None:
    path = tmp_path / "inventory.yaml"
    Inventory([_door()]).dump(path)
    path.write_text(path.read_text().replace(old, new, 1))
    with pytest.raises(InventoryError, match=message) as info:
        Inventory.load(path)
    assert str(info.value).startswith(str(path))


def test_unknown_or_mismatched_profile(tmp_path: Path) -> None:
    path = tmp_path / "inventory.json"
    Inventory([_door(profile="acme/nothing")]).dump(path)
    with pytest.raises(InventoryError, match="unknown profile 'acme/nothing'"):
        Inventory.load(path, profiles=ProfileSet.shipped())
    Inventory([_door(profile="generic_nbiot/streetlight")]).dump(path)
    with pytest.raises(InventoryError, match="is for streetlight, the device is a door_contact"):
        Inventory.load(path, profiles=ProfileSet.shipped())


def test_unreadable_and_invalid_files(tmp_path: Path) -> None:
    with pytest.raises(InventoryError, match="cannot read"):
        Inventory.load(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(InventoryError, match="not valid JSON"):
        Inventory.load(bad)

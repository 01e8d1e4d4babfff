"""Profile files: validated once at load; every error names the file and the field."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from device_profiles import SHIPPED_DIR, Profile, ProfileError, ProfileSet
from device_profiles.loader import check_dirs, load_file
from tests.device_profiles.test_docs import worked_example_yaml

EXAMPLE: dict[str, Any] = yaml.safe_load(worked_example_yaml())
ZIGBEE: dict[str, Any] = yaml.safe_load((SHIPPED_DIR / "aqara" / "mccgq11lm.yaml").read_text())


def write(tmp_path: Path, data: Any, name: str = "acme/thing.yaml") -> Path:
    path = tmp_path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def changed(base: dict[str, Any], *edits: tuple[str, Any]) -> dict[str, Any]:
    """A deep copy of `base` with dotted keys set (``fields.2.at``); value ... deletes."""
    data = copy.deepcopy(base)
    for dotted, value in edits:
        *parents, last = dotted.split(".")
        node: Any = data
        for part in parents:
            node = node[int(part)] if isinstance(node, list) else node[part]
        key: Any = int(last) if isinstance(node, list) else last
        if value is ...:
            del node[key]
        else:
            node[key] = value
    return data


INVALID = [
    ("unknown key", changed(EXAMPLE, ("colour", "red")), "colour", "Extra inputs"),
    ("missing model", changed(EXAMPLE, ("model", ...)), "model", "Field required"),
    (
        "at past the end",
        changed(EXAMPLE, ("fields.2.at", 9)),
        "fields[2].at",
        "runs past the 12-byte payload",
    ),
    (
        "metric typo",
        changed(EXAMPLE, ("fields.3.metric", "battery_percent")),
        "fields[3].metric",
        "not canonical",
    ),
    (
        "event typo",
        changed(EXAMPLE, ("fields.1.events", {0: None, 1: "flood"})),
        "fields[1].events",
        "not canonical",
    ),
    (
        "derived event stated",
        changed(EXAMPLE, ("fields.1.events", {0: None, 1: "cover_opened"})),
        "fields[1].events",
        "derived by the edge",
    ),
    (
        "derived event in a custom type",
        changed(
            EXAMPLE, ("device_type", "flood_sensor"), ("fields.1.events", {0: None, 1: "device_offline"})
        ),
        "fields[1].events",
        "derived by the edge",
    ),
    (
        "metric and events",
        changed(EXAMPLE, ("fields.0.events", {1: "water_alarm"})),
        "fields[0]",
        "exactly one",
    ),
    ("scale zero", changed(EXAMPLE, ("fields.2.scale", 0)), "fields[2]", "must not be 0"),
    ("mask on float", changed(EXAMPLE, ("fields.2.mask", 1)), "fields[2].mask", "float32"),
    ("binary type missing", changed(EXAMPLE, ("fields.4.type", ...)), "fields[4].type", "needs a type"),
    (
        "json path on hex",
        changed(EXAMPLE, ("fields.4.at", ...), ("fields.4.type", ...), ("fields.4.path", "rssi")),
        "fields[4].path",
        "not JSON",
    ),
    (
        "topic variable",
        changed(EXAMPLE, ("topics", ["acme/{serial}/data"])),
        "device_id.topic",
        "not in topic",
    ),
    ("wildcard topic", changed(EXAMPLE, ("topics", ["acme/+/data"])), "topics[0]", "invalid pattern"),
    ("bad regex", changed(EXAMPLE, ("device_id.pattern", "WL[")), "device_id.pattern", "regular expression"),
    ("bad range", changed(EXAMPLE, ("fields.3.range", [100, 0])), "fields[3]", "low <= high"),
    ("bad path", changed(ZIGBEE, ("fields.1.path", "battery..level")), "fields[1].path", "invalid path"),
    (
        "map key type",
        changed(ZIGBEE, ("fields.0.map", {"true": 0, "false": 1})),
        "fields[0].map",
        "does not fit",
    ),
    ("reduce without [*]", changed(ZIGBEE, ("fields.1.reduce", "max")), "fields[1]", "[*]"),
    (
        "match on hex",
        changed(EXAMPLE, ("match", [{"path": "x", "present": True}])),
        "match",
        "no JSON fields",
    ),
    ("bad id", changed(EXAMPLE, ("id", "Acme WL 200")), "id", "pattern"),
    ("bad interval", changed(EXAMPLE, ("report_interval_s", -5)), "report_interval_s", "greater than 0"),
]


@pytest.mark.parametrize(("data", "field", "detail"), [c[1:] for c in INVALID], ids=[c[0] for c in INVALID])
def test_invalid_profile(tmp_path: Path, data: dict[str, Any], field: str, detail: str) -> None:
    path = write(tmp_path, data)
    with pytest.raises(ProfileError) as caught:
        load_file(path)
    err = caught.value
    assert err.path == path
    assert err.field == field
    assert detail in err.detail
    assert str(err).startswith(f"{path}: {field}: ")
    with pytest.raises(ProfileError):
        ProfileSet.load(tmp_path)


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("id: a\nid: b\n", "duplicate key 'id'"),
        ("id: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "one YAML mapping"),
        ("id: !!python/object:os.system x\n", "invalid YAML"),  # no Python objects from YAML
    ],
)
def test_unreadable_profile_files(tmp_path: Path, text: str, detail: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError, match=str(path)) as caught:
        load_file(path)
    assert detail in str(caught.value)


def test_duplicate_ids_name_both_files(tmp_path: Path) -> None:
    first = write(tmp_path, EXAMPLE, "acme/a.yaml")
    second = write(tmp_path, EXAMPLE, "acme/b.yaml")
    with pytest.raises(ProfileError) as caught:
        ProfileSet.load(tmp_path)
    assert caught.value.path == second
    assert str(first) in str(caught.value)
    ok, errors = check_dirs([tmp_path])
    assert ok == 1
    assert [e.path for e in errors] == [second]


def test_check_collects_every_error(tmp_path: Path) -> None:
    write(tmp_path, EXAMPLE, "acme/good.yaml")
    write(tmp_path, changed(EXAMPLE, ("id", "acme/x"), ("model", ...)), "acme/bad1.yaml")
    write(tmp_path, "id: [", "acme/bad2.yml")
    ok, errors = check_dirs([tmp_path])
    assert ok == 1
    assert sorted(e.path.name for e in errors if e.path) == ["bad1.yaml", "bad2.yml"]


def test_defaults_and_alias() -> None:
    profile = Profile.model_validate(changed(EXAMPLE, ("report_interval_s", ...)))
    assert profile.report_interval_s == 1800.0  # manhole_cover default
    assert profile.expected_interval_s == 1800.0
    aliased = Profile.model_validate(
        changed(EXAMPLE, ("report_interval_s", ...), ("expected_interval_s", 42))
    )
    assert aliased.report_interval_s == 42.0
    other = Profile.model_validate(
        changed(
            EXAMPLE,
            ("report_interval_s", ...),
            ("device_type", "boiler"),
            ("fields.1.events", {0: None, 1: "overheat"}),
        )
    )
    assert other.report_interval_s == 3600.0  # a type the standard does not know: any names
    vendor_extension = Profile.model_validate(changed(EXAMPLE, ("fields.4.metric", "x_snr_db")))
    assert vendor_extension.fields[4].metric == "x_snr_db"


def test_profiles_are_immutable() -> None:
    profile = Profile.model_validate(EXAMPLE)
    with pytest.raises(ValueError, match="frozen"):
        profile.id = "other"  # type: ignore[misc]


def test_every_shipped_profile_is_where_its_id_says() -> None:
    for path in sorted(SHIPPED_DIR.rglob("*.yaml")):
        profile = load_file(path)
        assert f"{path.parent.name}/{path.stem}" == profile.id

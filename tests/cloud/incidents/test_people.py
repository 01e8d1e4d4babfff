"""The people file is validated like the rule files: every problem, with its key and file."""

from __future__ import annotations

from pathlib import Path

import pytest

from cloud.errors import ConfigError
from cloud.incidents.people import load_people

ROOT = Path(__file__).resolve().parents[3]


def test_the_example_loads() -> None:
    people = load_people(ROOT / "deploy" / "people.example.yaml")
    assert people.deadline_s("c01", 1, "critical") == 120
    assert people.deadline_s("c01", 1, "info") is None
    assert people.remind_every_s("c01", "minor") == 3600
    member = people.member("s-wang")
    assert member is not None
    assert member.serves("c99")


def test_every_problem_is_reported_with_its_key(tmp_path: Path) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(
        """
version: 1
staff:
  - {id: w1, name: A, roles: [grid_worker], communities: [c01], mobile: "12ab"}
  - {id: k1, name: K, roles: [boss], communities: [c01]}
  - {id: d1, name: D, roles: [grid_worker], communities: [c02]}
communities:
  c01:
    name: X
    ladder:
      - {name: l1, staff: [w1], channels: [a]}
      - {name: l2, staff: [nobody], channels: [b]}
"""
    )
    with pytest.raises(ConfigError) as err:
        load_people(path)
    found = {(p.key, p.detail.split(" ")[0]) for p in err.value.problems}
    assert ("staff.0.mobile", "string") in found  # pydantic's words, as every configuration prints them
    assert ("staff.1.roles.0", "input") in found
    assert ("communities.c01.ladder", "tuple") in found  # 3 or 4 levels
    assert all(p.source == str(path) for p in err.value.problems)


def test_cross_references_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "people.yaml"
    path.write_text(
        """
staff:
  - {id: w1, name: A, roles: [grid_worker], communities: [c01]}
  - {id: w2, name: B, roles: [grid_worker], communities: [c02]}
  - {id: w1, name: C, roles: [committee], communities: [c01]}
communities:
  c01:
    name: X
    ladder:
      - {name: l1, staff: [w1], channels: [a]}
      - {name: l2, staff: [w2], channels: [b]}
      - {name: l3, staff: [ghost], channels: [c]}
    doctors: [w1]
"""
    )
    with pytest.raises(ConfigError) as err:
        load_people(path)
    assert [(p.key, p.detail) for p in err.value.problems] == [
        ("staff", "'w1' is listed twice"),
        ("communities.c01.ladder.1.staff", "'w2' does not serve c01"),
        ("communities.c01.ladder.2.staff", "no staff member 'ghost'"),
        ("communities.c01.doctors", "'w1' does not have the role doctor"),
    ]


def test_an_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_people(tmp_path / "missing.yaml")

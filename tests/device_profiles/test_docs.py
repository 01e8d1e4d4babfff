"""docs/data-standard.md: every canonical name is documented, and the worked example works."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from device_profiles import (
    ALL_EVENTS,
    DERIVED_EVENTS,
    EVENTS,
    LIVENESS_EVENTS,
    METRICS,
    QUALITY_FLAGS,
    REASONS,
    STATE_EVENTS,
    ProfileSet,
    Reading,
)
from device_profiles.standard import COMMAND_EVENTS, EVENT_DESCRIPTIONS
from tests.device_profiles.conftest import DOCS, RECEIVED

STANDARD = DOCS / "data-standard.md"
EXAMPLE_HEX = b"a0252169810000e03e4c9f00"


def worked_example_yaml() -> str:
    text = STANDARD.read_text()
    match = re.search(
        r"<!-- worked-example:start -->\n```yaml\n(.*?)```\n<!-- worked-example:end -->", text, re.S
    )
    assert match is not None, "the worked example block is missing from docs/data-standard.md"
    return match.group(1)


def worked_example_dir(root: Path) -> Path:
    """A profiles directory holding the docs' worked example as acme/wl200.yaml."""
    (root / "acme").mkdir(parents=True, exist_ok=True)
    (root / "acme" / "wl200.yaml").write_text(worked_example_yaml())
    return root


def test_every_name_is_documented() -> None:
    text = STANDARD.read_text()
    names = set(REASONS) | set(QUALITY_FLAGS) | set(METRICS)
    names |= {metric for table in METRICS.values() for metric in table}
    names |= {event for events in EVENTS.values() for event in events}
    names |= set(Reading.__struct_fields__)
    missing = sorted(name for name in names if f"`{name}`" not in text and f"| {name} |" not in text)
    assert missing == []


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n{heading}\n")
    end = text.find("\n#", start + len(heading) + 2)
    return text[start:end]


def test_events_section_lists_exactly_the_standard_events() -> None:
    section = _section(STANDARD.read_text(), "### Events")
    # | `name` | description |: one row per derived event and per payload event, word for word.
    described = dict(re.findall(r"^\| `([a-z_]+)` \| ([^|]+?) \|$", section, re.M))
    assert described == {str(e): text for e, text in EVENT_DESCRIPTIONS.items()}
    # | device type(s) | `event`, `event` ... |: the payload events of each canonical type.
    by_type: dict[str, set[str]] = {}
    for types, events in re.findall(r"^\| ([a-z]+_[a-z_]+(?:, [a-z_]+)*) \| ([^|]*) \|$", section, re.M):
        for device_type in types.split(", "):
            by_type[device_type] = set(re.findall(r"`([a-z_]+)`", events))
    assert by_type == {t: set(events) for t, events in EVENTS.items()}


def test_event_sets_partition_the_standard() -> None:
    payload = {e for events in EVENTS.values() for e in events}
    assert payload.isdisjoint(DERIVED_EVENTS)
    assert payload.isdisjoint(COMMAND_EVENTS)
    assert DERIVED_EVENTS.isdisjoint(COMMAND_EVENTS)
    assert payload | DERIVED_EVENTS | COMMAND_EVENTS == ALL_EVENTS == set(EVENT_DESCRIPTIONS)
    assert LIVENESS_EVENTS < DERIVED_EVENTS
    assert {e for pair in STATE_EVENTS.values() for e in pair} == DERIVED_EVENTS - LIVENESS_EVENTS
    assert set(STATE_EVENTS) <= {m for table in METRICS.values() for m in table}


def test_worked_example_loads_and_decodes(tmp_path: Path) -> None:
    profiles = ProfileSet.load(worked_example_dir(tmp_path))
    assert list(profiles.profiles) == ["acme/wl200"]
    assert profiles.topic_filters() == ["acme/wl200/+/data"]
    r = profiles.decode("acme/wl200/WL000042/data", EXAMPLE_HEX, RECEIVED)
    assert isinstance(r, Reading), r
    assert r.device_id == "WL000042"
    assert r.ts.isoformat() == "2025-11-22T02:53:20+00:00"
    assert r.metrics == {"cover_open": 1.0, "water_level_mm": 437.5, "battery_pct": 76.0, "rssi_dbm": -97.0}
    assert r.events == ("water_alarm",)
    assert r.quality == ()
    assert profiles.get("acme/wl200").report_interval_s == 600.0
    topic, payload = profiles.encode(r)
    assert (topic, payload) == ("acme/wl200/WL000042/data", EXAMPLE_HEX)


def test_worked_example_cli_output(tmp_path: Path) -> None:
    root = worked_example_dir(tmp_path / "my-profiles")
    check = subprocess.run(
        [sys.executable, "-m", "device_profiles.console", "profiles", "check", str(root)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert "1 profile(s) valid, 0 error(s)" in check.stdout
    short = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "profiles",
            "--dir",
            str(root),
            "decode",
            "--topic",
            "acme/wl200/WL000042/data",
        ],
        input=EXAMPLE_HEX[:20],
        capture_output=True,
        check=False,
    )
    assert short.returncode == 1
    assert b'"error":"bad_length"' in short.stdout
    assert b"binary payload is 10 bytes, expected 12" in short.stdout

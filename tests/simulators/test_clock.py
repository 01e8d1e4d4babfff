from __future__ import annotations

from datetime import UTC, datetime

import pytest

from simulators.clock import SimClock, from_ms, iso, parse_duration, parse_start, to_ms
from simulators.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("90", 90_000),
        ("90s", 90_000),
        ("15m", 900_000),
        ("1h30m", 5_400_000),
        ("2d", 172_800_000),
        ("250ms", 250),
    ],
)
def test_parse_duration(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize("text", ["", "h", "1x", "1h junk", "-"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ConfigError, match="not a duration"):
        parse_duration(text)


def test_parse_start_and_conversions() -> None:
    assert parse_start("2025-06-01T08:00:00+08:00") == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_start("2025-06-01T00:00:00") == datetime(2025, 6, 1, tzinfo=UTC)
    assert parse_start("now").tzinfo is UTC
    with pytest.raises(ConfigError):
        parse_start("yesterday")
    ms = to_ms(datetime(2025, 6, 1, 2, 13, 0, 123000, tzinfo=UTC))
    assert from_ms(ms) == datetime(2025, 6, 1, 2, 13, 0, 123000, tzinfo=UTC)
    assert iso(ms) == "2025-06-01T02:13:00.123Z"


def test_accelerated_clock_paces_simulated_time() -> None:
    now = [100.0]
    clock = SimClock(start_ms=0, speed=3600, monotonic=lambda: now[0])
    assert clock.wall_delay(3_600_000) == pytest.approx(1.0)  # a simulated hour is a second
    now[0] += 0.5
    assert clock.wall_delay(3_600_000) == pytest.approx(0.5)
    assert clock.now_ms() == 1_800_000
    unpaced = SimClock(start_ms=0, speed=None)
    assert not unpaced.paced
    assert unpaced.wall_delay(10**12) == 0.0
    with pytest.raises(ConfigError):
        SimClock(start_ms=0, speed=0)

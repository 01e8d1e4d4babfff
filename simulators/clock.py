"""Simulated time: an epoch-millisecond clock that runs in real time, faster, or as fast as possible.

All of the simulator works in integer milliseconds since the Unix epoch (UTC), so schedules are exact
and reproducible. `SimClock` maps them to wall-clock time for pacing:

- ``speed=1``: real time; ``speed=3600``: a simulated hour per second;
- ``speed=None``: no pacing at all (benchmarks, file output, tests).
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Final

from simulators.errors import ConfigError

MS_PER_S: Final = 1000
MS_PER_HOUR: Final = 3_600_000
MS_PER_DAY: Final = 86_400_000

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)", re.IGNORECASE)
_UNIT_MS: Final = {"ms": 1, "s": 1000, "m": 60_000, "h": MS_PER_HOUR, "d": MS_PER_DAY, "w": 7 * MS_PER_DAY}


def to_ms(moment: datetime) -> int:
    """Epoch milliseconds of an aware datetime."""
    if moment.tzinfo is None:
        raise ValueError("a naive datetime has no defined instant; give a UTC offset")
    return (moment - _EPOCH) // timedelta(milliseconds=1)


def from_ms(ms: int) -> datetime:
    """The UTC datetime of epoch milliseconds (exact: no float rounding)."""
    return _EPOCH + timedelta(milliseconds=ms)


def iso(ms: int) -> str:
    """ISO 8601 in UTC with milliseconds: ``2025-06-01T02:13:00.000Z``."""
    return from_ms(ms).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_duration(text: str, *, option: str = "duration") -> int:
    """``90s``, ``15m``, ``1h30m``, ``2d``, or a bare number of seconds -> milliseconds."""
    value = text.strip()
    try:
        return round(float(value) * MS_PER_S) if value else _bad_duration(text, option)
    except ValueError:
        pass
    total = 0
    pos = 0
    for match in _DURATION.finditer(value):
        if value[pos : match.start()].strip():
            _bad_duration(text, option)
        total += round(float(match.group(1)) * _UNIT_MS[match.group(2).lower()])
        pos = match.end()
    if pos == 0 or value[pos:].strip():
        _bad_duration(text, option)
    return total


def _bad_duration(text: str, option: str) -> int:
    raise ConfigError(None, option, f"{text!r} is not a duration (examples: 90s, 15m, 1h30m, 2d)")


def parse_start(text: str) -> datetime:
    """``now``, or ISO 8601 (``2025-06-01T00:00:00Z``, ``2025-06-01T08:00+08:00``; no offset means UTC)."""
    value = text.strip()
    if value.lower() == "now":
        return datetime.now(UTC).replace(microsecond=0)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ConfigError(None, "start", f"{text!r} is not 'now' or an ISO 8601 time") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


class SimClock:
    """Maps simulated epoch milliseconds to wall-clock seconds, for pacing.

    Args:
        start_ms: simulated time at which the run begins.
        speed: simulated seconds per wall-clock second, or None for no pacing.
        monotonic: the wall clock (injectable for tests).
    """

    def __init__(
        self, *, start_ms: int, speed: float | None, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        if speed is not None and not speed > 0:
            raise ConfigError(None, "speed", f"must be positive, got {speed}")
        self.start_ms = start_ms
        self.speed = speed
        self._monotonic = monotonic
        self._wall0 = monotonic()

    @property
    def paced(self) -> bool:
        return self.speed is not None

    def restart(self) -> None:
        """Make the current wall-clock instant correspond to `start_ms`."""
        self._wall0 = self._monotonic()

    def wall_delay(self, sim_ms: int) -> float:
        """Seconds of wall time until the simulation should reach `sim_ms` (<= 0: due now)."""
        if self.speed is None:
            return 0.0
        due = self._wall0 + (sim_ms - self.start_ms) / MS_PER_S / self.speed
        return due - self._monotonic()

    def now_ms(self) -> int | None:
        """The simulated time that corresponds to now, when paced."""
        if self.speed is None:
            return None
        return self.start_ms + round((self._monotonic() - self._wall0) * self.speed * MS_PER_S)

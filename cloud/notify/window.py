"""A robot's rate limit, mirrored: at most N messages in any sliding window, like the vendors
count them (a token bucket would allow twice the limit in the first minute and be refused).

`RateWindow.allows(critical=False)` keeps ``reserve`` sends of each minute for critical messages:
minor ones stop while the reserve is all that is left (the sender merges them into digests), so
an SOS is never refused or delayed because of them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable


class RateWindow:
    """Sends in the last `per_minute` seconds (and `per_second`), from an injected clock."""

    def __init__(self, *, per_minute: int | None, per_second: int | None, reserve: int = 0) -> None:
        self.per_minute = per_minute
        self.per_second = per_second
        self.reserve = reserve if per_minute is not None else 0
        self._sent: deque[float] = deque()
        self._blocked_until = 0.0

    def seed(self, sent_at: Iterable[float]) -> None:
        """Start again from the sends recorded before (so a restart does not burst past the limit)."""
        self._sent = deque(sorted(sent_at))

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0] <= now - 60.0:
            self._sent.popleft()

    def _limit(self, critical: bool) -> int | None:
        if self.per_minute is None:
            return None
        return self.per_minute if critical else self.per_minute - self.reserve

    def allows(self, now: float, *, critical: bool) -> bool:
        return self.wait_s(now, critical=critical) == 0.0

    def wait_s(self, now: float, *, critical: bool) -> float:
        """Seconds until a send of this kind is allowed (0: now)."""
        self._trim(now)
        wait = max(0.0, self._blocked_until - now)
        limit = self._limit(critical)
        if limit is not None and len(self._sent) >= limit:
            # the (len - limit + 1)-th oldest send must leave the window
            wait = max(wait, self._sent[len(self._sent) - limit] + 60.0 - now)
        if self.per_second is not None:
            recent = [t for t in self._sent if t > now - 1.0]
            if len(recent) >= self.per_second:
                wait = max(wait, recent[len(recent) - self.per_second] + 1.0 - now)
        return wait

    def spare(self, now: float, *, critical: bool) -> int:
        """How many sends of this kind the window allows now (a large number when unlimited)."""
        if self.wait_s(now, critical=critical) > 0:
            return 0
        limit = self._limit(critical)
        spare = 1 << 30 if limit is None else limit - len(self._sent)
        if self.per_second is not None:
            spare = min(spare, self.per_second - sum(1 for t in self._sent if t > now - 1.0))
        return max(0, spare)

    def record(self, now: float) -> None:
        self._sent.append(now)

    def block(self, now: float, seconds: float) -> None:
        """The robot said "too fast": nothing goes out for `seconds`."""
        self._blocked_until = max(self._blocked_until, now + seconds)

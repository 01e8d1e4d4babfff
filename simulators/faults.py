"""Fault injection: malformed, duplicated and reordered messages, skewed device clocks, silent devices.

Shares are per original message (a duplicate is an extra message, not an original):

- ``malformed``: the payload is damaged so that no profile can decode it (cut short, not UTF-8, or
  wrapped in a JSON array); it is still sent.
- ``duplicate``: the message is sent twice, back to back (same topic, payload and reading id).
- ``reordered``: the message is held back and sent right after the same device's next message.
  Only dialects that carry a device time can be reordered (without one, the receive time is the
  reading's time and nothing is out of order), so the share counts those messages only.
- ``clock_skew_min``: a share (``skew_share``) of the devices whose dialect carries a device time
  get a clock offset drawn uniformly from [-skew, +skew] minutes.
- ``silent_share``: that share of devices stops sending for good at a random time within
  ``silent_within`` of the start.

Every injected fault is recorded in the ground truth: per message (``malformed``, ``duplicate``,
``reordered``, ``skew_s``) and as ``fault`` records for skewed and silenced devices.
"""

from __future__ import annotations

from typing import Final

import msgspec

from simulators.errors import ConfigError
from simulators.rand import RandomStream

MALFORM_KINDS: Final = ("truncated", "not_utf8", "json_array")


class FaultOptions(msgspec.Struct, frozen=True, kw_only=True):
    """What faults to inject (all off by default). Shares are fractions in [0, 1]."""

    malformed: float = 0.0
    duplicate: float = 0.0
    reordered: float = 0.0
    clock_skew_min: float = 0.0
    skew_share: float = 0.1
    silent_share: float = 0.0
    #: silenced devices stop within this many ms of the start (default: a day).
    silent_within_ms: int = 86_400_000

    def __post_init__(self) -> None:
        for name in ("malformed", "duplicate", "reordered", "skew_share", "silent_share"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(
                    None, name.replace("_", "-"), f"must be a share between 0 and 1, got {value}"
                )
        if self.malformed + self.duplicate > 1.0:
            raise ConfigError(None, "malformed", "malformed and duplicate shares add up to more than 1")
        if not 0.0 <= self.clock_skew_min <= 7 * 24 * 60:
            raise ConfigError(None, "clock-skew", f"must be 0 to 10080 minutes, got {self.clock_skew_min}")
        if self.silent_within_ms <= 0:
            raise ConfigError(None, "silent-within", "must be positive")

    @property
    def any_message_faults(self) -> bool:
        return self.malformed > 0 or self.duplicate > 0 or self.reordered > 0


def corrupt(payload: bytes, rs: RandomStream, *, is_json: bool = True) -> tuple[bytes, str]:
    """A damaged copy of `payload` that no profile decodes, and how it was damaged.

    A binary payload is always cut short (its length is fixed); a JSON one is cut short, made
    invalid UTF-8, or wrapped in an array.
    """
    kind = MALFORM_KINDS[rs.integer(0, len(MALFORM_KINDS))] if is_json else "truncated"
    if kind == "truncated" and len(payload) > 1:
        return payload[: rs.integer(1, len(payload) - 1)], kind
    if kind == "not_utf8":
        return b"\xff\xfe" + payload[2:], kind
    return b"[" + payload + b"]", "json_array"

"""How well the loop is worked (考核): per community and per staff member, over a period, the
times from detection to accept, handle and close, the share of incidents over their targets,
escalations, false alarms and the residents' satisfaction.

An incident counts in the period it was detected in. A stage not reached yet counts as overdue
once its target has passed (an incident nobody accepts is the worst case, not a missing figure).
Staff are credited with what they did: the acceptance to whoever accepted, handling, closing and
the rating to the handler.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from cloud.incidents.people import People

_STAGES = ("accept", "handle", "close")


@dataclass(frozen=True, slots=True)
class Worked:
    """One incident as the figures need it (times are those of its row)."""

    community_id: str
    severity: str
    state: str
    created_at: datetime
    accepted_at: datetime | None
    accepted_by: str | None
    handler: str | None
    handled_at: datetime | None
    closed_at: datetime | None
    rejected_at: datetime | None
    escalation_level: int
    rating: int | None


@dataclass(slots=True)
class _Tally:
    incidents: int = 0
    overdue: int = 0
    escalated: int = 0
    rejected: int = 0
    times: dict[str, list[float]] = field(default_factory=lambda: {s: [] for s in _STAGES})
    ratings: list[int] = field(default_factory=list)
    accepted: int = 0
    handled: int = 0

    def figures(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "incidents": self.incidents,
            "accepted": self.accepted,
            "handled": self.handled,
            "overdue": self.overdue,
            "overdue_share": round(self.overdue / self.incidents, 4) if self.incidents else None,
            "escalated": self.escalated,
            "rejected": self.rejected,
            "ratings": len(self.ratings),
            "satisfaction": round(statistics.fmean(self.ratings), 2) if self.ratings else None,
        }
        for stage in _STAGES:
            took = sorted(self.times[stage])
            out[f"to_{stage}_median_s"] = round(statistics.median(took), 1) if took else None
            out[f"to_{stage}_p90_s"] = (
                round(took[min(len(took) - 1, int(0.9 * len(took)))], 1) if took else None
            )
        return out


def _took(at: datetime | None, start: datetime) -> float | None:
    return None if at is None else max(0.0, (at - start).total_seconds())


def _overdue(w: Worked, people: People, now: datetime) -> bool:
    if w.rejected_at is not None:  # a false alarm is not late work
        return False
    targets = people.targets(w.community_id, w.severity)
    if targets is None:
        return False
    for at, target in (
        (w.accepted_at, targets.accept_s),
        (w.handled_at, targets.handle_s),
        (w.closed_at, targets.close_s),
    ):
        if ((at if at is not None else now) - w.created_at).total_seconds() > target:
            return True
    return False


def figures(worked: Iterable[Worked], people: People, *, now: datetime) -> dict[str, list[dict[str, Any]]]:
    """The figures per community and per staff member (sorted by id)."""
    communities: dict[str, _Tally] = {}
    staff: dict[str, _Tally] = {}
    for w in worked:
        late = _overdue(w, people, now)
        took = {
            "accept": _took(w.accepted_at, w.created_at),
            "handle": _took(w.handled_at, w.created_at),
            "close": _took(w.closed_at, w.created_at) if w.rejected_at is None else None,
        }
        c = communities.setdefault(w.community_id, _Tally())
        c.incidents += 1
        c.overdue += late
        c.escalated += w.escalation_level >= 2
        c.rejected += w.rejected_at is not None
        c.accepted += w.accepted_at is not None
        c.handled += w.handled_at is not None
        for stage, seconds in took.items():
            if seconds is not None:
                c.times[stage].append(seconds)
        if w.rating is not None:
            c.ratings.append(w.rating)
        if w.accepted_by and took["accept"] is not None:
            s = staff.setdefault(w.accepted_by, _Tally())
            s.accepted += 1
            s.times["accept"].append(took["accept"])
        if w.handler:
            s = staff.setdefault(w.handler, _Tally())
            s.incidents += 1
            s.overdue += late
            s.escalated += w.escalation_level >= 2
            s.rejected += w.rejected_at is not None
            s.handled += w.handled_at is not None
            for stage in ("handle", "close"):
                seconds = took[stage]
                if seconds is not None:
                    s.times[stage].append(seconds)
            if w.rating is not None:
                s.ratings.append(w.rating)
    return {
        "communities": [
            {
                "community_id": cid,
                "name": people.communities[cid].name if cid in people.communities else None,
                **communities[cid].figures(),
            }
            for cid in sorted(communities)
        ],
        "staff": [
            {
                "staff_id": sid,
                "name": member.name if (member := people.member(sid)) is not None else None,
                **staff[sid].figures(),
            }
            for sid in sorted(staff)
        ],
    }

"""The loop's figures (考核) from incidents as they were worked: times, overdue by target (a stage
not reached counts once its target passed), escalations, false alarms, satisfaction, and who is
credited with what."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from cloud.incidents.people import People
from cloud.incidents.performance import Worked, figures
from tests.cloud.incidents.conftest import PEOPLE

T0 = datetime(2026, 11, 2, 8, tzinfo=UTC)


def _people() -> People:
    raw: dict[str, Any] = copy.deepcopy(PEOPLE)
    raw["communities"]["c01"]["targets"] = {"critical": {"accept_s": 60, "handle_s": 1800, "close_s": 3600}}
    return People.model_validate(raw)


def _worked(**kw: Any) -> Worked:
    base: dict[str, Any] = {
        "community_id": "c01",
        "severity": "critical",
        "state": "detected",
        "created_at": T0,
        "accepted_at": None,
        "accepted_by": None,
        "handler": None,
        "handled_at": None,
        "closed_at": None,
        "rejected_at": None,
        "escalation_level": 1,
        "rating": None,
    }
    base.update(kw)
    return Worked(**base)


def test_figures_per_community_and_staff() -> None:
    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    worked = [
        # on time all along, rated 5
        _worked(state="rated", accepted_at=at(30), accepted_by="w-zhang", handler="w-zhang",
                handled_at=at(600), closed_at=at(1200), rating=5),
        # accepted late (90 s > 60 s), escalated to the committee, rated 3
        _worked(state="rated", accepted_at=at(90), accepted_by="k-li", handler="w-zhao",
                handled_at=at(900), closed_at=at(2000), rating=3, escalation_level=2),
        # still open, nobody accepted, its 60 s passed long ago: overdue
        _worked(created_at=at(100)),
        # a false alarm: not late work, not a closing time
        _worked(state="rejected", accepted_at=at(20), accepted_by="w-zhang", rejected_at=at(50),
                closed_at=at(50)),
        # another community: the default targets, long passed
        _worked(community_id="c02", created_at=at(0)),
    ]  # fmt: skip
    out = figures(worked, _people(), now=T0 + timedelta(days=5))
    c01, c02 = out["communities"]
    assert (c01["community_id"], c01["name"], c02["community_id"], c02["name"]) == (
        "c01",
        "阳光小区",
        "c02",
        None,
    )
    assert (c01["incidents"], c01["accepted"], c01["handled"]) == (4, 3, 2)
    assert (c01["overdue"], c01["overdue_share"]) == (2, 0.5)
    assert (c01["escalated"], c01["rejected"], c01["ratings"], c01["satisfaction"]) == (1, 1, 2, 4.0)
    assert c01["to_accept_median_s"] == 30.0  # 20, 30, 90
    assert c01["to_accept_p90_s"] == 90.0
    assert (c01["to_handle_median_s"], c01["to_close_median_s"]) == (750.0, 1600.0)
    assert (c02["incidents"], c02["overdue"], c02["to_accept_median_s"]) == (1, 1, None)
    staff = {s["staff_id"]: s for s in out["staff"]}
    assert sorted(staff) == ["k-li", "w-zhang", "w-zhao"]
    assert (staff["k-li"]["accepted"], staff["k-li"]["incidents"], staff["k-li"]["to_accept_median_s"]) == (
        1,
        0,
        90.0,
    )
    zhang, zhao = staff["w-zhang"], staff["w-zhao"]
    assert (zhang["name"], zhang["accepted"], zhang["incidents"], zhang["satisfaction"]) == (
        "张伟",
        2,
        1,
        5.0,
    )
    assert (zhao["incidents"], zhao["overdue"], zhao["escalated"], zhao["satisfaction"]) == (1, 1, 1, 3.0)
    assert zhao["to_handle_median_s"] == 900.0

"""``/api/v1/performance``: how well the caller's communities work their incidents over a period
(考核), per community and per staff member (cloud.incidents.performance defines the figures)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.responses import Response
from pydantic import BaseModel

from cloud.api import pages
from cloud.api.access import community_clause
from cloud.api.deps import Db, IncidentReader, State
from cloud.api.problems import Instant
from cloud.incidents.performance import Worked, figures

router = APIRouter(tags=["incidents"])

#: the longest period one request may cover
MAX_PERIOD = timedelta(days=400)


class Figures(BaseModel):
    incidents: int
    accepted: int
    handled: int
    #: incidents over a target (accept, handle or close), a stage not reached counting once its
    #: target has passed
    overdue: int
    overdue_share: float | None
    #: incidents that went past the ladder's first level
    escalated: int
    #: rejected as false alarms
    rejected: int
    ratings: int
    #: the mean satisfaction score (1-5) of the rated incidents
    satisfaction: float | None
    to_accept_median_s: float | None
    to_accept_p90_s: float | None
    to_handle_median_s: float | None
    to_handle_p90_s: float | None
    to_close_median_s: float | None
    to_close_p90_s: float | None


class CommunityFigures(Figures):
    community_id: str
    name: str | None


class StaffFigures(Figures):
    """A staff member's acceptances, and the incidents dispatched to them."""

    staff_id: str
    name: str | None


class Performance(BaseModel):
    start: datetime
    end: datetime
    communities: list[CommunityFigures]
    staff: list[StaffFigures]


@router.get("/performance", response_model=Performance)
def performance(
    db: Db,
    state: State,
    principal: IncidentReader,
    start: Annotated[Instant, Query(description="incidents detected at or after this time")],
    end: Annotated[Instant, Query(description="and before this time")],
    community_id: Annotated[str | None, Query(max_length=128)] = None,
) -> Response:
    """Times to accept, handle and close, overdue share, escalations, false alarms and
    satisfaction of the incidents detected in [start, end), per community and staff member."""
    if end <= start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, "end must be after start")
    if end - start > MAX_PERIOD:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_CONTENT,
            f"a period of at most {MAX_PERIOD.days} days: ask for a shorter one",
        )
    scope, params = community_clause(principal)
    rows = db.execute(
        "SELECT community_id, severity, state, created_at, accepted_at, accepted_by, handler, handled_at,"  # noqa: S608 - scope from access
        " closed_at, rejected_at, escalation_level, rating FROM incidents"
        f" WHERE {scope} AND (%s::text IS NULL OR community_id = %s)"
        " AND created_at >= %s AND created_at < %s",
        [*params, community_id, community_id, start, end],
    ).fetchall()
    answer = figures((Worked(*r) for r in rows), state.context.people, now=state.clock())
    return pages.json_answer({"start": start, "end": end, **answer})

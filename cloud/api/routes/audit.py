"""``/api/v1/audit/pii``: who read personal data unmasked, what, when and from where (PIPL), for
administrators. Newest first, with cursor pagination."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from cloud.api.deps import Auditor, Db
from cloud.api.problems import Instant

router = APIRouter(tags=["audit"])


class PiiRead(BaseModel):
    audit_id: int
    at: datetime
    principal: str
    role: str
    resource: str
    subject: str
    fields: list[str]
    address: str


class PiiReads(BaseModel):
    items: list[PiiRead]
    #: pass as ``after`` for the next (older) page; null at the end
    next: int | None


@router.get("/audit/pii")
def pii_reads(
    db: Db,
    _admin: Auditor,
    principal: Annotated[str | None, Query(max_length=200, description="one reader")] = None,
    subject: Annotated[str | None, Query(max_length=200, description="one device or incident id")] = None,
    since: Annotated[Instant | None, Query(description="reads at or after this time")] = None,
    after: Annotated[int | None, Query(ge=1, description="the `next` of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> PiiReads:
    """Unmasked reads of personal data, newest first."""
    rows = db.execute(
        "SELECT audit_id, at, principal, role, resource, subject, fields, address FROM api_pii_audit"
        " WHERE (%(principal)s::text IS NULL OR principal = %(principal)s)"
        " AND (%(subject)s::text IS NULL OR subject = %(subject)s)"
        " AND (%(since)s::timestamptz IS NULL OR at >= %(since)s)"
        " AND (%(after)s::bigint IS NULL OR audit_id < %(after)s)"
        " ORDER BY audit_id DESC LIMIT %(limit)s",
        {"principal": principal, "subject": subject, "since": since, "after": after, "limit": limit + 1},
    ).fetchall()
    items = [
        PiiRead(
            audit_id=r[0],
            at=r[1],
            principal=r[2],
            role=r[3],
            resource=r[4],
            subject=r[5],
            fields=list(r[6]),
            address=r[7],
        )
        for r in rows[:limit]
    ]
    return PiiReads(items=items, next=items[-1].audit_id if len(rows) > limit else None)

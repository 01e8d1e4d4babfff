"""The bodies of refusals, as the OpenAPI document describes them, and the strict parameter
types that keep refusals and documents in agreement."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AwareDatetime, BaseModel, BeforeValidator


class Problem(BaseModel):
    """What every refusal says: why, for a person."""

    detail: str


class Invalid(BaseModel):
    """A request that cannot be answered as asked: FastAPI's list of problems (where and why)
    for a malformed parameter or body, or one sentence for a refusal that needs the whole request
    (start after end, more points than one answer holds, a cursor of another list)."""

    detail: str | list[dict[str, Any]]


_ISO_START = re.compile(r"\d{4}-\d{2}-\d{2}[Tt ]")


def _iso_only(value: object) -> object:
    """pydantic also takes a number of seconds for a datetime; the API's documents promise ISO 8601
    (``date-time``), so a number is refused rather than read as a time in 1970."""
    if isinstance(value, str) and not _ISO_START.match(value):
        raise ValueError("expected an ISO 8601 time with its zone, such as 2026-12-03T08:00:00+08:00")
    return value


#: A point in time in a query: ISO 8601 with a zone offset (``Z`` or ``+08:00``).
Instant = Annotated[AwareDatetime, BeforeValidator(_iso_only)]

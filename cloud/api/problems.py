"""The bodies of refusals, as the OpenAPI document describes them."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


class Problem(BaseModel):
    """What every refusal says: why, for a person."""

    detail: str


class Invalid(BaseModel):
    """A request that cannot be answered as asked: FastAPI's list of problems (where and why)
    for a malformed parameter or body, or one sentence for a refusal that needs the whole request
    (start after end, more points than one answer holds, a cursor of another list)."""

    detail: str | list[dict[str, Any]]

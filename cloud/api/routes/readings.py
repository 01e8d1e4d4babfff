"""``/api/v1``: readings (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["readings"])

"""``/api/v1``: events (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["events"])

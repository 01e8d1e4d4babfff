"""``/api/v1``: live (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["live"])

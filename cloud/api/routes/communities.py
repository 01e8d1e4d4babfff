"""``/api/v1``: communities (being built)."""

from __future__ import annotations

from fastapi import APIRouter

router = APIRouter(tags=["communities"])

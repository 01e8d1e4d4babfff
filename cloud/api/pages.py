"""Cursor pagination shared by the list operations: a page answers ``next``, an opaque token
the caller passes back as ``after`` to get the following page. The token is the sort key of the
page's last row, so a page is one index range scan however deep the caller goes."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime

import msgspec
from fastapi import HTTPException, status
from fastapi.responses import Response

_SEP = "\x1f"


def encode(*parts: str | int | datetime) -> str:
    """The cursor of a row whose sort key is `parts` (datetimes must be aware)."""
    text = _SEP.join(p.isoformat() if isinstance(p, datetime) else str(p) for p in parts)
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def bad_cursor() -> HTTPException:
    return HTTPException(
        status_code=status.HTTP_422_UNPROCESSABLE_CONTENT,
        detail="after: not a cursor of this list (pass the `next` of the previous page)",
    )


def decode(cursor: str, count: int) -> list[str]:
    """The `count` parts of `cursor`; a 422 for anything this API did not hand out."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise bad_cursor() from exc
    parts = text.split(_SEP)
    if len(parts) != count or "\x00" in text:
        raise bad_cursor()
    return parts


def decode_time(text: str) -> datetime:
    try:
        at = datetime.fromisoformat(text)
    except ValueError as exc:
        raise bad_cursor() from exc
    if at.tzinfo is None:
        raise bad_cursor()
    return at


def decode_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise bad_cursor() from exc
    if not 0 < value < 2**63:
        raise bad_cursor()
    return value


_JSON = msgspec.json.Encoder()


def json_answer(body: object) -> Response:
    """`body` encoded by msgspec (the route's response model documents its shape)."""
    return Response(content=_JSON.encode(body), media_type="application/json")

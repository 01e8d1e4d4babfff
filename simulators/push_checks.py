"""The checks the stand-in robot APIs of `simulators.pushes` make, as the vendors document them:
signatures and their time windows, sliding-window rate limits, JSON bodies, and the text a
Feishu post or card carries (for keyword rules and for the tests to read)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections import deque
from collections.abc import Iterator, Mapping
from http import HTTPStatus
from typing import Any, Final

#: the longest rate window: older sends are forgotten
MINUTE: Final = 60.0
#: DingTalk and Feishu accept a signature whose timestamp is within an hour of their clock.
SIGN_WINDOW_S: Final = 3600.0
#: linli's generic webhook: a signature older (or newer) than this is refused as a replay.
WEBHOOK_WINDOW_S: Final = 300.0


def positive(**limits: int) -> None:
    for name, value in limits.items():
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")


def over(sent: deque[float], now: float, window_s: float, limit: int) -> bool:
    """Whether `limit` messages were already accepted in the sliding window ending now. Forgets what
    is older than a minute (the longest window), so `sent` stays small."""
    while sent and sent[0] <= now - MINUTE:
        sent.popleft()
    return sum(1 for at in sent if at > now - window_s) >= limit


def json_object(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError are both ValueErrors
        return None
    return value if isinstance(value, dict) else None


def strings(value: object) -> tuple[str, ...]:
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


def phrase(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def dingtalk_sign_problem(secret: str, timestamp: str | None, sign: str | None, now: float) -> str:
    """What is wrong with a DingTalk signature ("" when nothing). `sign` is the parsed (URL-decoded)
    query parameter, so it is compared with the plain base64 of the HMAC."""
    if not timestamp or not sign:
        return "timestamp and sign are required"
    try:
        ms = int(timestamp)
    except ValueError:
        return f"timestamp {timestamp!r} is not epoch milliseconds"
    if abs(now * 1000 - ms) > SIGN_WINDOW_S * 1000:
        return f"timestamp {ms} is more than an hour from the server's time"
    digest = hmac.new(secret.encode(), f"{timestamp}\n{secret}".encode(), hashlib.sha256).digest()
    if not same(sign, base64.b64encode(digest).decode()):
        return "the signature does not match the robot's secret"
    return ""


def feishu_sign_ok(secret: str, body: Mapping[str, Any], now: float) -> bool:
    timestamp, sign = body.get("timestamp"), body.get("sign")
    if isinstance(timestamp, bool) or not isinstance(timestamp, str | int) or not isinstance(sign, str):
        return False
    try:
        seconds = int(timestamp)
    except ValueError:
        return False
    if abs(now - seconds) > SIGN_WINDOW_S:
        return False
    key = f"{timestamp}\n{secret}".encode()
    return same(sign, base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode())


def webhook_sign_ok(
    secret: str, timestamp: str | None, signature: str | None, raw: bytes, now: float
) -> bool:
    if not timestamp or not signature:
        return False
    try:
        seconds = int(timestamp)
    except ValueError:
        return False
    if abs(now - seconds) > WEBHOOK_WINDOW_S:
        return False
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256)
    return same(signature, "sha256=" + mac.hexdigest())


# -- Feishu's message types as text ---------------------------------------------------------------

_CARD_TEXT_TAGS: Final = frozenset({"plain_text", "lark_md", "markdown"})


def feishu_text(msg_type: str, body: Mapping[str, Any]) -> str:
    """The visible text of a Feishu ``text``, ``post`` or ``interactive`` message ("" if none)."""
    content = body.get("content")
    content = content if isinstance(content, dict) else {}
    if msg_type == "text":
        text = content.get("text")
        return text if isinstance(text, str) else ""
    if msg_type == "post":
        return post_text(content.get("post"))
    card = body.get("card", content.get("card"))
    return "\n".join(text for text in card_texts(card) if text) if isinstance(card, dict) else ""


def post_text(post: object) -> str:
    """A rich-text post in one language (zh_cn preferred) as lines: the title, then one line per
    paragraph with its ``text``, ``a`` and ``at`` elements run together."""
    if not isinstance(post, dict) or not post:
        return ""
    language = post.get("zh_cn") or post.get("en_us") or next(iter(post.values()))
    if not isinstance(language, dict):
        return ""
    title = language.get("title")
    lines = [title] if isinstance(title, str) and title else []
    paragraphs = language.get("content")
    for paragraph in paragraphs if isinstance(paragraphs, list) else []:
        parts: list[str] = []
        for element in paragraph if isinstance(paragraph, list) else []:
            if not isinstance(element, dict):
                continue
            if element.get("tag") in ("text", "a") and isinstance(element.get("text"), str):
                parts.append(element["text"])
            elif element.get("tag") == "at":
                parts.append(f"@{element.get('user_name') or element.get('user_id') or ''}")
        lines.append("".join(parts))
    return "\n".join(lines)


def card_texts(node: object) -> Iterator[str]:
    """Every text of a message card, in document order (header first): the ``content`` of each
    ``plain_text``, ``lark_md`` or ``markdown`` node (or of an untagged one, as a header title may
    be), wherever it sits (div text, fields, notes, buttons, a v2 card's body)."""
    if isinstance(node, dict):
        content = node.get("content")
        if isinstance(content, str) and node.get("tag", "plain_text") in _CARD_TEXT_TAGS:
            yield content
        header = node.get("header")
        if header is not None:
            yield from card_texts(header)
        for name, value in node.items():
            if name != "header" and isinstance(value, dict | list):
                yield from card_texts(value)
    elif isinstance(node, list):
        for item in node:
            yield from card_texts(item)

"""What a notification says, independent of the channel that carries it.

`Message` is stored in the outbox (``notify_outbox.message``) when the change that causes it
commits; each channel renders it (`text`, `markdown`) when it sends, masking the resident as the
channel's ``pii`` setting says. Chinese first: the people who read these are community staff.
"""

from __future__ import annotations

from typing import Final, Literal

import msgspec

Pii = Literal["full", "masked", "none"]
Reason = Literal[
    "escalate", "remind", "family", "doctor", "dispatch", "accepted", "cancelled", "digest", "test"
]

SEVERITY_ZH: Final = {"critical": "紧急", "major": "重要", "minor": "一般", "info": "提示"}
_REASON_ZH: Final = {
    "escalate": "请立即受理",
    "remind": "仍未受理，请尽快处理",
    "family": "您的家人可能需要帮助",
    "doctor": "请社区医生关注",
    "dispatch": "已派单给您",
    "accepted": "已有人受理",
    "cancelled": "居民已取消呼叫，请电话确认",
    "digest": "汇总",
    "test": "测试消息",
}


class Message(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """One notification's content."""

    reason: Reason
    severity: str
    title_zh: str
    title_en: str = ""
    incident_id: int | None = None
    community_id: str = ""
    community_name: str = ""
    building: str | None = None
    unit: str | None = None
    room: str | None = None
    device_id: str | None = None
    resident_id: str | None = None
    #: when the condition began, ISO 8601 in the community's time zone
    time: str = ""
    #: the ladder level told (1-based) and its name
    level: int | None = None
    level_name: str | None = None
    #: who accepted, or to whom it was dispatched
    actor: str | None = None
    #: a link to the incident in the console ('' when no base URL is configured)
    link: str = ""
    #: lines of a digest (one per incident it carries)
    lines: tuple[str, ...] = ()


def mask_resident(resident_id: str | None, pii: Pii) -> str | None:
    """The resident as a channel may show it: in full, masked (``c0****07``), or not at all."""
    if resident_id is None or pii == "none":
        return None
    if pii == "full" or len(resident_id) <= 4:
        return resident_id if pii == "full" else "****"
    keep = max(2, len(resident_id) // 4)
    return resident_id[:keep] + "****" + resident_id[-2:]


def place(message: Message, pii: Pii) -> str:
    """``阳光小区 3栋2单元`` (the room only with full PII: it identifies the home)."""
    parts = [message.community_name or message.community_id]
    flat = ""
    if message.building:
        flat += f"{message.building}栋"
    if message.unit:
        flat += f"{message.unit}单元"
    if message.room and pii == "full":
        flat += f"{message.room}室"
    if flat:
        parts.append(flat)
    return " ".join(p for p in parts if p)


def headline(message: Message) -> str:
    """``【紧急】SOS 求助 · 请立即受理``"""
    sev = SEVERITY_ZH.get(message.severity, message.severity)
    return f"【{sev}】{message.title_zh} · {_REASON_ZH[message.reason]}"


def text(message: Message, pii: Pii, *, mentions: tuple[str, ...] = (), max_bytes: int | None = None) -> str:
    """Plain text (WeCom/DingTalk/Feishu text, email's text part, SMS). A digest lists as many of
    its incidents as `max_bytes` (UTF-8) leaves room for and counts the rest."""
    lines = [headline(message)]
    if message.reason == "digest":
        lines.extend(_digest_lines(message, pii, mentions, max_bytes))
    else:
        where = place(message, pii)
        if where:
            lines.append(f"地点：{where}")
        if message.device_id:
            lines.append(f"设备：{message.device_id}")
        resident = mask_resident(message.resident_id, pii)
        if resident:
            lines.append(f"居民：{resident}")
        if message.time:
            lines.append(f"时间：{message.time}")
        if message.level is not None:
            lines.append(f"通知层级：{message.level} {message.level_name or ''}".rstrip())
        if message.actor:
            lines.append(f"处理人：{message.actor}")
        if message.incident_id is not None:
            lines.append(f"事件编号：{message.incident_id}")
    if message.link:
        lines.append(message.link)
    if mentions:
        lines.append(" ".join(f"@{m}" for m in mentions))
    return "\n".join(lines)


def _digest_lines(message: Message, pii: Pii, mentions: tuple[str, ...], max_bytes: int | None) -> list[str]:
    if max_bytes is None:
        return list(message.lines)
    fixed = text(
        Message(reason="digest", severity=message.severity, title_zh=message.title_zh, link=message.link),
        pii,
        mentions=mentions,
    )
    budget = max_bytes - len(fixed.encode()) - 64  # the "and N more" line
    shown: list[str] = []
    for line in message.lines:
        cost = len(line.encode()) + 1
        if cost > budget:
            break
        shown.append(line)
        budget -= cost
    rest = len(message.lines) - len(shown)
    if rest:
        shown.append(f"……另有 {rest} 条，请在控制台查看")
    return shown


def markdown(message: Message, pii: Pii, *, max_bytes: int | None = None) -> str:
    """Markdown (WeCom markdown, DingTalk markdown, email's HTML is built from `text`)."""
    body = text(message, pii, max_bytes=None if max_bytes is None else max_bytes - 256).split("\n")
    head, rest = body[0], body[1:]
    if message.link:
        rest = [line if line != message.link else f"[查看事件]({message.link})" for line in rest]
    return "\n".join([f"**{head}**", *(f"> {line}" for line in rest)])

"""A real SMTP server (aiosmtpd) and helpers to fill the outbox."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

import msgspec
import psycopg
import pytest
from aiosmtpd.controller import Controller
from psycopg.types.json import Jsonb

from cloud.notify.message import Message
from simulators.services import free_port


class Mailbox:
    """aiosmtpd handler: keeps every message it accepted."""

    def __init__(self) -> None:
        self.messages: list[EmailMessage] = []
        self.envelopes: list[tuple[str, list[str]]] = []
        self.changed = threading.Condition()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        with self.changed:
            parsed = message_from_bytes(envelope.content, policy=policy.default)
            assert isinstance(parsed, EmailMessage)
            self.messages.append(parsed)
            self.envelopes.append((envelope.mail_from, list(envelope.rcpt_tos)))
            self.changed.notify_all()
        return "250 OK"

    def wait(self, n: int, timeout: float = 10.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: len(self.messages) >= n, timeout)


@pytest.fixture
def smtp_server() -> Iterator[tuple[str, int, Mailbox]]:
    box = Mailbox()
    port = free_port("127.0.0.1")
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield "127.0.0.1", port, box
    finally:
        controller.stop()


def owe(
    url: str,
    channel: str,
    *,
    n: int = 1,
    severity: str = "critical",
    title: str = "SOS 求助",
    recipients: list[dict[str, str]] | None = None,
    at: datetime | None = None,
) -> list[int]:
    """Put `n` notifications for `channel` in the outbox, due at `at`; their ids."""
    at = at or datetime.now(UTC)
    ids = []
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(n):
            message = Message(
                reason="escalate",
                severity=severity,
                title_zh=title,
                incident_id=1000 + i,
                community_id="c01",
                community_name="阳光小区",
                building="3",
                unit="2",
                room="401",
                device_id=f"sos-{i}",
                resident_id="c01-r0007",
                level=1,
                level_name="网格员",
            )
            row = conn.execute(
                "INSERT INTO notify_outbox (created_at, reason, channel, severity, recipients, message,"
                " next_attempt_at) VALUES (%s, 'escalate', %s, %s, %s, %s, %s) RETURNING notification_id",
                (at, channel, severity, Jsonb(recipients or []), Jsonb(msgspec.to_builtins(message)), at),
            ).fetchone()
            assert row is not None
            ids.append(int(row[0]))
    return ids


def states(url: str) -> dict[int, tuple[str, int, str | None]]:
    """notification id -> (state, attempts, last_code)."""
    with psycopg.connect(url) as conn:
        return {
            r[0]: (r[1], r[2], r[3])
            for r in conn.execute("SELECT notification_id, state, attempts, last_code FROM notify_outbox")
        }

"""The demo screen's open incidents (counts by severity and the latest few, read from
``incidents``) and the latest pushes (what the local robots and webhooks received).

The alert service (``linli cloud alerts``) writes the table; the demo only reads it, and shows zeros
while it is empty. A database migrated before the ``incidents`` table existed reads as empty too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

import psycopg
import psycopg.errors
from rich.table import Table

from simulators.pushes import Received

#: Most severe first; the order of the counts on the screen and in the summary line.
SEVERITIES: Final = ("critical", "major", "minor", "info")
#: How many of the newest open incidents the screen lists.
LATEST: Final = 5

_SEVERITY_STYLE: Final = {"critical": "bold red", "major": "red", "minor": "yellow", "info": "dim"}


@dataclass(frozen=True, slots=True)
class IncidentLine:
    detected_at: datetime
    severity: str
    rule: str
    title: str
    subject: str


@dataclass(slots=True)
class OpenIncidents:
    """Incidents with ``closed_at IS NULL``."""

    by_severity: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SEVERITIES, 0))
    latest: list[IncidentLine] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.by_severity.values())

    def counts_text(self) -> str:
        return ", ".join(f"{severity} {self.by_severity.get(severity, 0)}" for severity in SEVERITIES)


def read_open_incidents(conn: psycopg.Connection[Any], *, latest: int = LATEST) -> OpenIncidents:
    """The open incidents' counts and the `latest` newest (by ``detected_at``).

    `conn` must be in autocommit mode (a missing table then leaves it usable).
    Raises ``psycopg.Error`` for anything but a missing ``incidents`` table.
    """
    found = OpenIncidents()
    try:
        rows = conn.execute(
            "SELECT severity, count(*) FROM incidents WHERE closed_at IS NULL GROUP BY severity"
        ).fetchall()
        newest = conn.execute(
            "SELECT detected_at, severity, rule, title_en, coalesce(device_id, resident_id, subject)"
            " FROM incidents WHERE closed_at IS NULL ORDER BY detected_at DESC, incident_id DESC LIMIT %s",
            (latest,),
        ).fetchall()
    except psycopg.errors.UndefinedTable:
        return found
    for severity, n in rows:
        found.by_severity[str(severity)] = int(n)
    found.latest = [
        IncidentLine(detected_at=at, severity=str(sev), rule=str(rule), title=str(title), subject=str(subj))
        for at, sev, rule, title, subj in newest
    ]
    return found


def incidents_table(incidents: OpenIncidents) -> Table:
    """The latest open incidents (one row saying "none" while there are none)."""
    table = Table(title=f"open incidents (latest {LATEST})", expand=True)
    for col in ("detected (UTC)", "severity", "rule", "title", "device"):
        table.add_column(col)
    if not incidents.latest:
        table.add_row("none", "", "", "", "")
    for line in incidents.latest:
        table.add_row(
            line.detected_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S"),
            line.severity,
            line.rule,
            line.title,
            line.subject,
            style=_SEVERITY_STYLE.get(line.severity),
        )
    return table


#: How many of the latest pushes the screen lists.
LATEST_PUSHES: Final = 5
_KIND_LABEL: Final = {"wecom": "WeCom", "dingtalk": "DingTalk", "feishu": "Feishu", "webhook": "webhook"}


@dataclass(frozen=True, slots=True)
class PushLine:
    at: datetime
    kind: str
    robot: str
    headline: str
    mentions: tuple[str, ...]


def push_lines(received: Sequence[Received]) -> list[PushLine]:
    """What the screen shows of each push: when, where, its first line, whom it mentions."""
    return [
        PushLine(
            at=datetime.fromtimestamp(r.at, tz=UTC),
            kind=_KIND_LABEL.get(r.kind, r.kind),
            robot=r.robot,
            headline=(r.text.splitlines() or [""])[0],
            mentions=r.mentions,
        )
        for r in received
    ]


def pushes_table(lines: Sequence[PushLine], total: int) -> Table:
    """The latest pushes, newest first (one row saying "none" while there are none)."""
    table = Table(title=f"pushes ({total:,} received; latest {LATEST_PUSHES})", expand=True)
    for col in ("time (UTC)", "channel", "robot", "message", "@"):
        table.add_column(col)
    if not lines:
        table.add_row("none", "", "", "", "")
    for line in reversed(lines):
        table.add_row(
            line.at.strftime("%H:%M:%S"),
            line.kind,
            line.robot,
            line.headline,
            " ".join(line.mentions),
            style="bold red" if "【紧急】" in line.headline else None,
        )
    return table

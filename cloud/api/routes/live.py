"""``/api/v1/live``: new incidents and every change of one (a transition, an escalation, an
auto-close), as Server-Sent Events, scoped and masked like the rest of the API.

    event: ready        the feed is live; its id is where it starts
    event: incident     a new incident (data: the incident as ``GET /incidents`` lists it)
    event: change       an audit trail entry (data: the entry and the incident after it)

Every event's ``id`` is the feed position (``<incident_id>.<audit_id>``): a client that
reconnects with ``Last-Event-ID`` gets what it missed. Ids that commit out of order (a
transaction that took an earlier id committing later) are still sent, within ``[api]
live_lookback_s`` (`Lookback`). The feed polls the database (a pooled
connection for each poll, none held between them), sends a comment when idle so proxies keep
the connection, and ends after ``[api] live_max_s`` so a disabled account stops receiving.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import msgspec
import psycopg
from fastapi import APIRouter, Header, Request
from fastapi.responses import StreamingResponse
from psycopg_pool import PoolTimeout

from cloud.api.access import Disclosure, Principal, community_clause
from cloud.api.deps import ApiState, IncidentReader, State, address_of
from cloud.api.routes.incidents import ITEM_COLUMNS, ITEM_FROM, columns, incident_item

router = APIRouter(tags=["incidents"])

_JSON = msgspec.json.Encoder()
#: most rows of each kind one poll reads (the rest come at the next poll, without a pause)
BATCH = 500


@dataclass(slots=True)
class Position:
    """How far the feed has read: the last incident id and the last audit entry id."""

    incident_id: int = 0
    audit_id: int = 0

    def __str__(self) -> str:
        return f"{self.incident_id}.{self.audit_id}"

    @classmethod
    def parse(cls, text: str | None) -> Position | None:
        if not text:
            return None
        first, sep, second = text.strip().partition(".")
        if not sep or not first.isdigit() or not second.isdigit() or len(text) > 40:
            return None
        return cls(int(first), int(second))


@dataclass(slots=True)
class Lookback:
    """Ids of one table that commit out of order: the transaction that took id 10 may commit after
    the one that took 11. Each poll reads every id above `floor` that was not sent yet; an id sent
    `window_s` ago raises the floor to it (a gap below it that long is a rolled-back id)."""

    floor: int
    window_s: float
    sent: dict[int, float] = field(default_factory=dict)

    def settle(self, now: float) -> None:
        expired = [i for i, at in self.sent.items() if now - at >= self.window_s]
        if expired:
            self.floor = max(self.floor, *expired)
            self.sent = {i: at for i, at in self.sent.items() if i > self.floor}

    @property
    def last(self) -> int:
        return max(self.floor, *self.sent) if self.sent else self.floor


def _event(kind: str, position: Position, data: object) -> bytes:
    return b"id: %s\nevent: %s\ndata: %s\n\n" % (str(position).encode(), kind.encode(), _JSON.encode(data))


def _start(state: ApiState) -> Position:
    with state.pool.connection(timeout=state.settings.api.pool_timeout_s) as db:
        row = db.execute(
            "SELECT (SELECT coalesce(max(incident_id), 0) FROM incidents),"
            " (SELECT coalesce(max(audit_id), 0) FROM incident_audit)"
        ).fetchone()
    assert row is not None  # noqa: S101 - an aggregate answers one row
    return Position(row[0], row[1])


def _poll(
    state: ApiState, principal: Principal, incidents: Lookback, changes: Lookback, address: str
) -> tuple[list[bytes], bool]:
    """The events of what committed since the last poll; whether more is waiting."""
    scope, params = community_clause(principal, "i.community_id")
    now = time.monotonic()
    incidents.settle(now)
    changes.settle(now)
    with state.pool.connection(timeout=state.settings.api.pool_timeout_s) as db:
        seen = Disclosure(principal)
        cur = db.execute(
            f"SELECT {ITEM_COLUMNS}{ITEM_FROM} WHERE i.incident_id > %s AND NOT i.incident_id = ANY(%s)"
            f" AND {scope} ORDER BY i.incident_id LIMIT %s",
            [incidents.floor, list(incidents.sent), *params, BATCH],
        )
        names = columns(cur)
        new = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
        entries = db.execute(
            "SELECT a.audit_id, a.incident_id, a.at, a.actor, a.actor_role, a.action, a.from_state,"  # noqa: S608
            " a.to_state, a.note FROM incident_audit a JOIN incidents i USING (incident_id)"
            f" WHERE a.audit_id > %s AND NOT a.audit_id = ANY(%s) AND {scope} ORDER BY a.audit_id LIMIT %s",
            [changes.floor, list(changes.sent), *params, BATCH],
        ).fetchall()
        after: dict[int, dict[str, Any]] = {}
        changed = sorted({c[1] for c in entries})
        if changed:
            cur = db.execute(f"SELECT {ITEM_COLUMNS}{ITEM_FROM} WHERE i.incident_id = ANY(%s)", (changed,))
            names = columns(cur)
            after = {r[0]: dict(zip(names, r, strict=True)) for r in cur.fetchall()}
        events: list[bytes] = []
        for row in new:
            incidents.sent[row["incident_id"]] = now
            position = Position(incidents.last, changes.last)
            events.append(_event("incident", position, incident_item(row, seen)))
        for c in entries:
            changes.sent[c[0]] = now
            entry = {
                "audit_id": c[0],
                "incident_id": c[1],
                "at": c[2],
                "actor": c[3],
                "actor_role": c[4],
                "action": c[5],
                "from_state": c[6],
                "to_state": c[7],
                "note": c[8],
                "incident": incident_item(after[c[1]], seen) if c[1] in after else None,
            }
            events.append(_event("change", Position(incidents.last, changes.last), entry))
        seen.flush(db, resource="incident", address=address)
    return events, len(new) == BATCH or len(entries) == BATCH


@router.get(
    "/live",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {"schema": {"type": "string"}}}}},
)
async def live(
    request: Request,
    state: State,
    principal: IncidentReader,
    last_event_id: Annotated[
        str | None, Header(max_length=40, description="resume after this event (its id)")
    ] = None,
) -> StreamingResponse:
    """New incidents and their changes, as they happen (Server-Sent Events)."""
    position = Position.parse(last_event_id)
    address = address_of(request)
    api = state.settings.api

    async def stream() -> AsyncIterator[bytes]:
        began = last_sent = time.monotonic()
        yield b"retry: 2000\n\n"
        start = position
        while start is None:
            try:
                start = await anyio.to_thread.run_sync(_start, state)
            except (PoolTimeout, psycopg.OperationalError):
                yield b": database unavailable, retrying\n\n"
                await anyio.sleep(api.live_poll_s)
        yield _event("ready", start, {"position": str(start)})
        incidents = Lookback(floor=start.incident_id, window_s=api.live_lookback_s)
        changes = Lookback(floor=start.audit_id, window_s=api.live_lookback_s)
        while time.monotonic() - began < api.live_max_s:
            try:
                events, more = await anyio.to_thread.run_sync(
                    _poll, state, principal, incidents, changes, address
                )
            except (PoolTimeout, psycopg.OperationalError):
                # the database is away: say so, keep the position, try again at the next poll
                events, more = [b": database unavailable, retrying\n\n"], False
            for event in events:
                yield event
            clock = time.monotonic()
            if events:
                last_sent = clock
            elif clock - last_sent >= api.live_keepalive_s:
                last_sent = clock
                yield b": keepalive\n\n"
            if not more:
                await anyio.sleep(api.live_poll_s)
        yield (
            b"event: end\ndata: " + json.dumps({"reason": "live_max_s reached; reconnect"}).encode() + b"\n\n"
        )

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )

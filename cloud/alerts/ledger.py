"""The alert service's one transaction: incidents, the engine's state and the checkpoint, together.

`commit` writes, in one transaction:

1. each `Action` of the engine: a ``fire`` opens an incident, or (one open incident per rule and
   subject: the partial unique index ``incidents_open_key``) adds an occurrence to the open one and
   un-clears it; a ``repeat`` adds an occurrence (or opens a new incident if the workflow closed
   the old one meanwhile); a ``clear`` sets ``cleared_at`` of the open, uncleared incident; a
   ``note`` adds a ``noted`` occurrence to the open incident (none open: nothing) for the incidents
   service to tell. Every action is one ``incident_occurrences`` row naming the feed row that
   caused it;
2. the engine's changed state keys (``alert_state``), and
3. the partition's checkpoint (``alert_checkpoints``);

and notifies `INCIDENT_CHANNEL` for each incident opened or fired again (JSON: incident_id, rule,
subject, severity, community_id, started_at), delivered by PostgreSQL only if the transaction
commits. A kill -9 before the commit leaves everything as it was before: the service restores
the old state and reads the same feed rows again; after it, nothing is read twice. So no
incident is lost or repeated.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import psycopg
from psycopg.types.json import Jsonb

from cloud.alerts.feed import Partition
from cloud.alerts.model import Action, Evidence
from cloud.errors import StoreUnavailable

#: Notified (after commit) for every incident opened or fired again.
INCIDENT_CHANNEL: Final = "linli_incident"

#: A fire or a repeat, one statement: open the incident or add an occurrence to the open one (a
#: fire also un-clears it), write the occurrence, and notify when it fired (after commit).
_UPSERT = """
WITH inc AS (
    INSERT INTO incidents (rule, subject, subject_kind, severity, latched, community_id, gateway_id,
        device_id, resident_id, title_zh, title_en, detail_zh, detail_en, started_at, detected_at,
        last_occurrence_at, evidence, feed_seq)
    VALUES (%(rule)s, %(subject)s, %(subject_kind)s, %(severity)s, %(latched)s, %(community_id)s,
        %(gateway_id)s, %(device_id)s, %(resident_id)s, %(title_zh)s, %(title_en)s, %(detail_zh)s,
        %(detail_en)s, %(started)s, %(at)s, %(at)s, %(evidence)s, %(feed_seq)s)
    ON CONFLICT (rule, subject) WHERE closed_at IS NULL DO UPDATE SET
        occurrences = incidents.occurrences + 1,
        last_occurrence_at = greatest(incidents.last_occurrence_at, EXCLUDED.last_occurrence_at),
        cleared_at = CASE WHEN %(repeat)s THEN incidents.cleared_at END,
        severity = EXCLUDED.severity
    RETURNING incident_id, (xmax = 0) AS opened
), occ AS (
    INSERT INTO incident_occurrences (incident_id, at, kind, feed_seq, evidence)
    SELECT incident_id, %(at)s, CASE WHEN %(repeat)s AND NOT opened THEN 'repeated' ELSE 'fired' END,
        %(feed_seq)s, %(evidence)s
    FROM inc
)
SELECT pg_notify(%(channel)s, json_build_object(
    'incident_id', incident_id, 'rule', %(rule)s, 'subject', %(subject)s, 'severity', %(severity)s,
    'community_id', %(community_id)s, 'started_at', %(started)s)::text)
FROM inc WHERE NOT %(repeat)s OR opened
"""

_CLEAR = """
WITH upd AS (
    UPDATE incidents SET cleared_at = %(at)s
    WHERE rule = %(rule)s AND subject = %(subject)s AND closed_at IS NULL AND cleared_at IS NULL
    RETURNING incident_id
)
INSERT INTO incident_occurrences (incident_id, at, kind, feed_seq, evidence)
SELECT incident_id, %(at)s, 'cleared', %(feed_seq)s, %(evidence)s FROM upd
"""

#: A note: an occurrence of the open incident (none open: nothing), which the incidents service
#: tells everyone already told (`told_at`); notified so it wakes at once.
_NOTE = """
WITH occ AS (
    INSERT INTO incident_occurrences (incident_id, at, kind, feed_seq, evidence)
    SELECT incident_id, %(at)s, 'noted', %(feed_seq)s, %(evidence)s FROM incidents
    WHERE rule = %(rule)s AND subject = %(subject)s AND closed_at IS NULL
    RETURNING incident_id
)
SELECT pg_notify(%(channel)s, json_build_object('incident_id', incident_id, 'noted', true)::text) FROM occ
"""
#: A fire's command (`Action.command`): queued in the commands outbox with its audit entry, for
#: the incident just written, in the incident's transaction; its id is derived from the fire, so
#: a fire written again (after a crash, before the checkpoint) queues nothing twice.
_COMMAND = """
WITH ins AS (
    INSERT INTO commands (command_id, device_id, community_id, gateway_id, name, params, confirm, state,
        requested_by, requested_at, expires_at, updated_at, incident_id)
    SELECT %(command_id)s, d.device_id, d.community_id, d.gateway_id, %(name)s, %(params)s, %(confirm)s,
        'queued', %(actor)s, %(now)s, %(expires)s, %(now)s,
        (SELECT incident_id FROM incidents WHERE rule = %(rule)s AND subject = %(subject)s
         AND closed_at IS NULL)
    FROM devices d WHERE d.device_id = %(device_id)s AND d.gateway_id IS NOT NULL
    ON CONFLICT (command_id) DO NOTHING
    RETURNING command_id, gateway_id
), audit AS (
    INSERT INTO command_audit (command_id, at, actor, state, detail)
    SELECT command_id, %(now)s, %(actor)s, 'queued', %(detail)s FROM ins
)
SELECT pg_notify('linli_commands', gateway_id) FROM ins
"""
#: Namespace of the fires' command ids.
_COMMAND_NS: Final = uuid.UUID("6c696e6c-692d-7275-6c65-2d636d640000")

_STATE_UPSERT = """
INSERT INTO alert_state (partition, key, state) VALUES (%s, %s, %s)
ON CONFLICT (partition, key) DO UPDATE SET state = EXCLUDED.state
"""

_STATE_DELETE = "DELETE FROM alert_state WHERE partition = %s AND key = %s"

_CHECKPOINT = """
INSERT INTO alert_checkpoints (partition, feed_seq, updated_at) VALUES (%s, %s, now())
ON CONFLICT (partition) DO UPDATE SET feed_seq = EXCLUDED.feed_seq, updated_at = now()
"""


def to_datetime(us: int) -> datetime:
    """Unix microseconds as an aware UTC datetime."""
    return datetime.fromtimestamp(us / 1_000_000, tz=UTC)


def evidence_json(evidence: Iterable[Evidence]) -> list[dict[str, Any]]:
    """The evidence as stored: ``[{"time": iso, "device_id", "metric"|"event", "value"?, ...}]``."""
    out = []
    for e in evidence:
        item: dict[str, Any] = {"time": to_datetime(e.time_us).isoformat()}
        for name in ("device_id", "gateway_id", "metric", "event", "value", "note"):
            value = getattr(e, name)
            if value is not None:
                item[name] = value
        out.append(item)
    return out


class Checkpoint:
    """Where a partition stands: its checkpoint and its engine state, as last committed."""

    def __init__(self, *, feed_seq: int, states: list[tuple[str, bytes]]) -> None:
        self.feed_seq = feed_seq
        self.states = states


def load(conn: psycopg.Connection[Any], partition: Partition) -> Checkpoint:
    """The partition's committed checkpoint (0: from the start of the feed) and engine state."""
    try:
        row = conn.execute(
            "SELECT feed_seq FROM alert_checkpoints WHERE partition = %s", (str(partition),)
        ).fetchone()
        states = conn.execute(
            "SELECT key, state FROM alert_state WHERE partition = %s ORDER BY key", (str(partition),)
        ).fetchall()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while loading the alert state: {exc}") from exc
    return Checkpoint(feed_seq=int(row[0]) if row else 0, states=[(k, bytes(s)) for k, s in states])


def commit(
    conn: psycopg.Connection[Any],
    *,
    partition: Partition,
    feed_seq: int,
    actions: Iterable[tuple[int, Action]],
    states: Mapping[str, bytes | None],
) -> int:
    """Write `actions` (each with the feed_seq that caused it), `states` and the checkpoint
    `feed_seq` in one transaction; returns how many actions were written.

    One statement per action, sent in pipeline mode (no round trip per action), in order. Raises
    `StoreUnavailable` when the database is gone or refuses the transaction (nothing was written
    then; the service retries from its committed state).
    """
    part = str(partition)
    n = 0
    try:
        with conn.transaction(), conn.pipeline(), conn.cursor() as cur:
            now = datetime.now(UTC)
            for seq, action in actions:
                cur.execute(_SQL.get(action.kind, _UPSERT), _params(action, seq))
                if action.command is not None and action.device_id is not None:
                    cur.execute(_COMMAND, _command(action, now))
                n += 1
            upserts = [(part, k, v) for k, v in states.items() if v is not None]
            deletes = [(part, k) for k, v in states.items() if v is None]
            if upserts:
                cur.executemany(_STATE_UPSERT, upserts)
            if deletes:
                cur.executemany(_STATE_DELETE, deletes)
            cur.execute(_CHECKPOINT, (part, feed_seq))
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while committing incidents: {exc}") from exc
    except psycopg.Error as exc:  # refused: nothing was written; logged and retried with backoff
        raise StoreUnavailable(f"the database refused the incidents' transaction: {exc}") from exc
    return n


def _command(action: Action, now: datetime) -> dict[str, Any]:
    command = action.command
    assert command is not None  # noqa: S101 - the caller checked
    detail = " ".join(
        f"{k}={str(v).lower() if isinstance(v, bool) else v}" for k, v in command.params.items()
    )
    return {
        "command_id": uuid.uuid5(
            _COMMAND_NS, f"{action.rule}|{action.subject}|{action.started_us}|{command.name}"
        ),
        "device_id": action.device_id,
        "name": command.name,
        "params": Jsonb(command.params),
        "confirm": command.confirm,
        "actor": f"rule {action.rule}",
        "now": now,
        "expires": now + timedelta(seconds=command.ttl_s),
        "rule": action.rule,
        "subject": action.subject,
        "detail": f"{command.name} {detail}".strip(),
    }


_SQL: Final = {"clear": _CLEAR, "note": _NOTE}


def _params(action: Action, feed_seq: int) -> dict[str, Any]:
    at = to_datetime(max(action.at_us, action.started_us))  # never detected before it began
    evidence = Jsonb(evidence_json(action.evidence))
    if action.kind in _SQL:
        return {
            "at": at,
            "rule": action.rule,
            "subject": action.subject,
            "feed_seq": feed_seq,
            "evidence": evidence,
            "channel": INCIDENT_CHANNEL,
        }
    return {
        "rule": action.rule,
        "subject": action.subject,
        "subject_kind": action.subject_kind,
        "severity": action.severity,
        "latched": action.latched,
        "community_id": action.community_id,
        "gateway_id": action.gateway_id,
        "device_id": action.device_id,
        "resident_id": action.resident_id,
        "title_zh": action.title_zh,
        "title_en": action.title_en,
        "detail_zh": action.detail_zh,
        "detail_en": action.detail_en,
        "started": to_datetime(action.started_us),
        "at": at,
        "evidence": evidence,
        "feed_seq": feed_seq,
        "repeat": action.kind == "repeat",
        "channel": INCIDENT_CHANNEL,
    }

"""The alert feed: what the ingest committed, in commit order, for the alert service to read.

The ingest writer (`cloud.store.writer`) appends one ``alert_feed`` row per (transaction,
community) in the transaction that stores the readings, under the transaction advisory lock
`FEED_LOCK_KEY`, and notifies `FEED_CHANNEL` with the highest ``feed_seq`` it wrote. So
``feed_seq`` order is commit order, and a reader that has seen ``feed_seq`` N committed has seen
every committed row below N: it can keep one number, its checkpoint, and read ``feed_seq >
checkpoint`` (numbers of rolled-back transactions are gaps that never fill; nothing waits for
them).

The alert service runs in partitions ``K/N``: partition K owns the communities whose
`community_hash` modulo N is K. Each partition keeps its checkpoint in ``alert_checkpoints``;
`prune_feed` deletes only what every partition has passed.
"""

from __future__ import annotations

import zlib
from datetime import datetime, timedelta
from typing import Any, Final

import msgspec
import psycopg
from psycopg import sql as pgsql

from cloud.alerts.model import GatewayObservation
from cloud.errors import FeedError, PartitionError, StoreUnavailable
from cloud.ingest.envelope import Envelope

#: The channel the ingest notifies after appending to the feed (payload: the highest feed_seq).
FEED_CHANNEL: Final = "linli_alert_feed"
#: Key of the transaction advisory lock the ingest holds from allocating its feed_seq to its
#: commit: "linlia" in ASCII (the migration lock is "linli").
FEED_LOCK_KEY: Final = 0x6C696E6C6961


def community_hash(community_id: str) -> int:
    """The non-negative 31-bit hash stored in ``alert_feed.community_hash``."""
    return zlib.crc32(community_id.encode()) & 0x7FFFFFFF


class Partition(msgspec.Struct, frozen=True, kw_only=True):
    """Partition ``k`` of ``n`` (0 <= k < n): the communities whose hash modulo n is k."""

    k: int
    n: int

    def __post_init__(self) -> None:
        if not 0 <= self.k < self.n:
            raise PartitionError(f"{self.k}/{self.n}", "needs 0 <= K < N")

    @classmethod
    def parse(cls, text: str) -> Partition:
        """``"K/N"``, e.g. ``"0/1"`` (everything) or ``"1/2"``; raises `PartitionError`."""
        k, sep, n = text.strip().partition("/")
        if not sep or not k.isdigit() or not n.isdigit():
            raise PartitionError(text, "expected K/N with non-negative integers, e.g. 0/1 or 1/2")
        return cls(k=int(k), n=int(n))

    def __str__(self) -> str:
        return f"{self.k}/{self.n}"

    def owns(self, community_id: str) -> bool:
        return community_hash(community_id) % self.n == self.k

    @property
    def sql(self) -> pgsql.Composed:
        """The ``WHERE`` condition on ``alert_feed`` that selects this partition's rows."""
        return pgsql.SQL("community_hash % {} = {}").format(pgsql.Literal(self.n), pgsql.Literal(self.k))


class FeedRow(msgspec.Struct, frozen=True, kw_only=True):
    """One ``alert_feed`` row, decoded."""

    feed_seq: int
    community_id: str
    committed_at: datetime
    envelopes: list[Envelope]
    statuses: list[GatewayObservation]


class _Status(msgspec.Struct, frozen=True):
    gateway_id: str
    state: str
    at_us: int


_batches: Final = msgspec.msgpack.Decoder(list[Envelope])
_statuses: Final = msgspec.json.Decoder(list[_Status])

_READ = """
SELECT feed_seq, community_id, committed_at, batches, statuses::text FROM (
    SELECT feed_seq, community_id, committed_at, batches, statuses,
        sum(readings) OVER (ORDER BY feed_seq) - readings AS before_row
    FROM (
        SELECT feed_seq, community_id, committed_at, batches, statuses, readings FROM alert_feed
        WHERE feed_seq > {after} AND feed_seq < {before} AND {partition}
        ORDER BY feed_seq
        LIMIT {limit}
    ) head
) counted
WHERE before_row < {limit_readings}
ORDER BY feed_seq
"""

_PRUNE = """
DELETE FROM alert_feed
WHERE feed_seq <= %s
  AND feed_seq <= (SELECT min(feed_seq) FROM alert_checkpoints)  -- NULL (none): nothing
  AND committed_at < now() - %s
"""


def read_feed(
    conn: psycopg.Connection[Any],
    *,
    after: int,
    partition: Partition,
    limit_rows: int,
    limit_readings: int = 2**62,
    before: int = 2**63 - 1,
) -> list[FeedRow]:
    """Up to `limit_rows` rows of `partition` with ``after < feed_seq < before``, in feed_seq order,
    and no more rows once `limit_readings` readings are reached (the first row always comes).

    Raises `StoreUnavailable` when the database is gone and `FeedError` when a row does not decode.
    """
    query = pgsql.SQL(_READ).format(
        after=pgsql.Literal(after),
        before=pgsql.Literal(before),
        partition=partition.sql,
        limit=pgsql.Literal(limit_rows),
        limit_readings=pgsql.Literal(limit_readings),
    )
    try:
        rows = conn.execute(query).fetchall()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while reading the alert feed: {exc}") from exc
    out: list[FeedRow] = []
    for feed_seq, community_id, committed_at, batches, statuses in rows:
        try:
            envelopes = _batches.decode(batches)
            observed = _statuses.decode(statuses)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise FeedError(int(feed_seq), str(exc)) from exc
        out.append(
            FeedRow(
                feed_seq=int(feed_seq),
                community_id=community_id,
                committed_at=committed_at,
                envelopes=envelopes,
                statuses=[GatewayObservation(community_id, s.gateway_id, s.state, s.at_us) for s in observed],
            )
        )
    return out


def feed_horizon(conn: psycopg.Connection[Any]) -> int:
    """The highest ``feed_seq`` committed (0: none). Every row below it is committed too, so a
    partition that has read all its rows up to it may move its checkpoint there."""
    try:
        row = conn.execute("SELECT coalesce(max(feed_seq), 0) FROM alert_feed").fetchone()
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while reading the alert feed: {exc}") from exc
    return int(row[0]) if row else 0


def prune_feed(conn: psycopg.Connection[Any], *, keep_after: int, older_than: timedelta) -> int:
    """Delete the feed rows every partition's checkpoint has passed (and at most up to
    `keep_after`) that committed more than `older_than` ago; returns how many.

    With no checkpoint at all nothing is deleted. A partition that no longer runs (the partition
    count changed) keeps its checkpoint row, and with it everything after it, until that row is
    deleted.
    """
    try:
        cur = conn.execute(_PRUNE, (keep_after, older_than))
    except psycopg.OperationalError as exc:
        raise StoreUnavailable(f"database unavailable while pruning the alert feed: {exc}") from exc
    return cur.rowcount

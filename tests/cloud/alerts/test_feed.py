"""The alert feed: what the ingest writer appends, in commit order, and what the reader gets."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import psycopg
import pytest

from cloud.alerts.feed import FEED_CHANNEL, Partition, community_hash, prune_feed, read_feed
from cloud.alerts.model import GatewayObservation
from cloud.errors import PartitionError
from cloud.ingest.envelope import Envelope, decode
from cloud.store.writer import FEED_APPEND_SQL, FEED_LOCK_SQL, BatchWriter, GatewayStatus
from tests.cloud.conftest import T0_US, R, count, door_readings, envelope, named, up_topic, wait_blocked

pytestmark = pytest.mark.integration

ALL = Partition(k=0, n=1)


def batch(readings: list[R], seq: int, *, community: str = "c1", gateway: str = "gw1") -> Envelope:
    return decode(
        up_topic(community, gateway),
        envelope(readings, batch_seq=seq, community_id=community, gateway_id=gateway),
    )


def feed_rows(url: str, partition: Partition = ALL) -> list[Any]:
    with psycopg.connect(url, autocommit=True) as conn:
        return read_feed(conn, after=0, partition=partition, limit_rows=10_000)


def append_raw(conn: psycopg.Connection[Any], community_id: str) -> int:
    """What the writer does at the end of its transaction, by hand: take the feed lock and
    append one (empty) feed row; returns its feed_seq (uncommitted)."""
    conn.execute(FEED_LOCK_SQL)
    row = conn.execute(
        FEED_APPEND_SQL,
        (
            [community_id],
            [community_hash(community_id)],
            [0],
            [msgspec.msgpack.encode([])],
            ["[]"],
            FEED_CHANNEL,
        ),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_feed_rows_hold_the_batches_as_stored_and_the_statuses(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    first = door_readings(20)
    b1 = batch(first, 1)
    b2 = batch(door_readings(3, prefix="e"), 1, community="c2", gateway="gw2")
    res1 = writer.write([b1, b2, b1])
    at = datetime(2026, 1, 1, 0, 0, 1, 5, tzinfo=UTC)
    # A resend: 5 readings already stored, one repeated inside the batch, 4 new; and statuses,
    # one of a community with no readings in this transaction.
    new = door_readings(4, start_us=T0_US + 10**9, prefix="n")
    b3 = batch([*first[15:], *new, new[0]], 2)
    statuses = [
        GatewayStatus("c1", "gw1", "online", {"state": "online"}, at),
        GatewayStatus("c3", "gw3", "offline", {"state": "offline"}, at + timedelta(seconds=1)),
    ]
    res2 = writer.write([b3, b1], statuses=statuses)
    writer.close()
    assert (res2.readings, res2.duplicate_readings, res2.feed_rows) == (4, 6, 2)

    rows = feed_rows(migrated_url)
    assert [(r.feed_seq, r.community_id) for r in rows] == [
        (res1.feed_seq - 1, "c1"),
        (res1.feed_seq, "c2"),
        (res2.feed_seq - 1, "c1"),
        (res2.feed_seq, "c3"),
    ]
    assert rows[0].envelopes == [b1]  # the duplicate batch once
    assert rows[1].envelopes == [b2]
    assert rows[2].envelopes == [msgspec.structs.replace(b3, readings=b3.readings[5:9])]
    assert rows[3].envelopes == []
    at_us = (T0_US // 10**6 + 1) * 10**6 + 5
    assert rows[2].statuses == [GatewayObservation("c1", "gw1", "online", at_us)]
    assert rows[3].statuses == [GatewayObservation("c3", "gw3", "offline", at_us + 10**6)]
    assert [r.statuses for r in rows[:2]] == [[], []]
    with psycopg.connect(migrated_url) as conn:
        raw = conn.execute(
            "SELECT batches, readings, community_hash FROM alert_feed ORDER BY feed_seq"
        ).fetchall()
    # The bytes are the wire format: the envelope decoder reads them back equal.
    assert msgspec.msgpack.Decoder(list[Envelope]).decode(raw[0][0]) == [b1]
    assert [r[1] for r in raw] == [20, 3, 4, 0]
    assert [r[2] for r in raw] == [community_hash(c) for c in ("c1", "c2", "c1", "c3")]


def test_a_transaction_with_nothing_new_appends_nothing(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    b1 = batch(door_readings(2), 1)
    writer.write([b1])
    res = writer.write([b1])
    writer.close()
    assert (res.batches, res.feed_rows, res.feed_seq) == (0, 0, 0)
    assert count(migrated_url, "SELECT count(*) FROM alert_feed") == 1


def test_notify_arrives_after_commit_and_not_before(migrated_url: str) -> None:
    with (
        psycopg.connect(migrated_url, autocommit=True) as listener,
        psycopg.connect(migrated_url) as raw,
    ):
        listener.execute(f"LISTEN {FEED_CHANNEL}")
        seq = append_raw(raw, "c1")
        listener.execute("SELECT 1")  # a round trip: anything already sent is read by now
        assert list(listener.notifies(timeout=0)) == []
        raw.commit()
        got = list(listener.notifies(timeout=10, stop_after=1))
        assert [(n.channel, n.payload) for n in got] == [(FEED_CHANNEL, str(seq))]
        # The writer's own transaction notifies its highest feed_seq, once.
        writer = BatchWriter(database_url=migrated_url)
        res = writer.write(
            [batch(door_readings(2), 1), batch(door_readings(2, prefix="x"), 1, community="c2", gateway="g")]
        )
        writer.close()
        got = list(listener.notifies(timeout=10, stop_after=1))
        listener.execute("SELECT 1")
        got += listener.notifies(timeout=0)
        assert res.feed_rows == 2
        assert [n.payload for n in got] == [str(res.feed_seq)]


def test_partitions_split_the_communities(migrated_url: str) -> None:
    communities = [f"community-{i}" for i in range(12)]
    writer = BatchWriter(database_url=migrated_url)
    writer.write([batch(door_readings(1, prefix=c), 1, community=c, gateway=f"g{c}") for c in communities])
    writer.close()
    halves = [Partition.parse("0/2"), Partition.parse(" 1/2 ")]
    parts = [feed_rows(migrated_url, p) for p in halves]
    got = [{r.community_id for r in rows} for rows in parts]
    assert got[0] | got[1] == set(communities)
    assert not got[0] & got[1]
    assert got[0], "crc32 put all twelve on one side"
    assert got[1], "crc32 put all twelve on one side"
    for p, ids in zip(halves, got, strict=True):
        assert ids == {c for c in communities if p.owns(c)}
    assert len(feed_rows(migrated_url, Partition.parse("0/1"))) == 12
    assert str(halves[1]) == "1/2"


@pytest.mark.parametrize("text", ["", "1", "1/", "a/2", "-1/2", "2/2", "0/0", "1/2/3"])
def test_a_bad_partition_is_refused(text: str) -> None:
    with pytest.raises(PartitionError, match="partition"):
        Partition.parse(text)


def test_prune_keeps_what_some_partition_has_not_read(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    seqs = [writer.write([batch(door_readings(1, prefix=f"p{i}"), i)]).feed_seq for i in range(6)]
    writer.close()
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        assert prune_feed(conn, keep_after=seqs[-1], older_than=timedelta(0)) == 0  # no checkpoint
        conn.execute(
            "INSERT INTO alert_checkpoints (partition, feed_seq) VALUES ('0/2', %s), ('1/2', %s)",
            (seqs[4], seqs[2]),
        )
        assert prune_feed(conn, keep_after=seqs[-1], older_than=timedelta(hours=1)) == 0  # too new
        assert prune_feed(conn, keep_after=seqs[0], older_than=timedelta(0)) == 1
        assert prune_feed(conn, keep_after=seqs[-1], older_than=timedelta(0)) == 2  # up to 1/2's
        left = conn.execute("SELECT feed_seq FROM alert_feed ORDER BY feed_seq").fetchall()
    assert [r[0] for r in left] == seqs[3:]


def test_feed_order_is_commit_order_between_two_writers(migrated_url: str) -> None:
    """Writer A has drawn its feed_seq and not committed; writer B reaches the feed lock and
    waits there (seen in pg_locks and pg_stat_activity); a reader then sees neither. A commits,
    then B: the reader sees both, A's first, nothing skipped."""
    errors: list[BaseException] = []
    done: dict[str, int] = {}

    def write_b() -> None:
        writer = BatchWriter(database_url=named(migrated_url, "feed-b"))
        try:
            done["b"] = writer.write([batch(door_readings(5, prefix="b"), 1, gateway="gwb")]).feed_seq
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            errors.append(exc)
        finally:
            writer.close()

    b = threading.Thread(target=write_b, name="feed-writer-b")
    with (
        psycopg.connect(named(migrated_url, "feed-a")) as a,
        psycopg.connect(migrated_url, autocommit=True) as watch,
    ):
        a_pid = a.info.backend_pid
        a_seq = append_raw(a, "ca")
        try:
            b.start()
            b_pid, b_wait, b_blockers = wait_blocked(watch, "feed-b", a_pid)
            assert (b_wait, b_blockers) == ("Lock", [a_pid]), "B did not wait for A's feed lock"
            waiting = watch.execute(
                "SELECT locktype, objid FROM pg_locks WHERE pid = %s AND NOT granted", (b_pid,)
            ).fetchall()
            assert [w[0] for w in waiting] == ["advisory"]
            assert read_feed(watch, after=0, partition=ALL, limit_rows=100) == []
            assert count(migrated_url, "SELECT count(*) FROM ingested_batches") == 0
        finally:
            a.commit()
            b.join(30)
    assert not errors
    assert not b.is_alive()
    rows = feed_rows(migrated_url)
    assert [(r.feed_seq, r.community_id) for r in rows] == [(a_seq, "ca"), (done["b"], "c1")]
    assert a_seq < done["b"]


def test_a_polling_reader_sees_every_batch_exactly_once(migrated_url: str) -> None:
    """Two writers commit many transactions (resends included, so both sometimes race for the
    same batch) while a reader follows the feed with a moving checkpoint, woken by NOTIFY."""
    transactions = 40
    errors: list[BaseException] = []

    def run(name: str) -> None:
        writer = BatchWriter(database_url=migrated_url)
        try:
            for i in range(transactions):
                group = [
                    batch(
                        door_readings(3, prefix=f"{name}{i}-{g}"), i, community=f"c{g}", gateway=f"{name}{g}"
                    )
                    for g in range(3)
                ]
                # A resend of the other writer's batch of the same step: one of the two stores it.
                other = "y" if name == "x" else "x"
                resend = door_readings(3, prefix=f"{other}{i}-0")
                group.append(batch(resend, i, community="c0", gateway=f"{other}0"))
                writer.write(group)
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            errors.append(exc)
        finally:
            writer.close()

    writers = [threading.Thread(target=run, args=(n,), name=f"feed-writer-{n}") for n in ("x", "y")]
    seen: Counter[tuple[str, int]] = Counter()
    checkpoint = 0
    reads = rows_seen = 0
    with psycopg.connect(migrated_url, autocommit=True) as reader:
        reader.execute(f"LISTEN {FEED_CHANNEL}")
        for t in writers:
            t.start()
        while True:
            finished = not any(t.is_alive() for t in writers)  # before the read: nothing after it
            rows = read_feed(reader, after=checkpoint, partition=ALL, limit_rows=5)
            reads += bool(rows)
            rows_seen += len(rows)
            for r in rows:
                assert r.feed_seq > checkpoint
                checkpoint = r.feed_seq
                seen.update((e.gateway_id, e.batch_seq) for e in r.envelopes)
            if rows:
                continue
            if finished:
                break
            for _ in reader.notifies(timeout=1, stop_after=1):
                pass
        for t in writers:
            t.join()
        claimed = reader.execute("SELECT gateway_id, batch_seq FROM ingested_batches").fetchall()
        stored = reader.execute("SELECT count(*) FROM alert_feed").fetchone()
    assert not errors
    assert set(seen) == {(str(g), int(s)) for g, s in claimed}
    assert set(seen.values()) == {1}
    assert len(seen) == 2 * transactions * 3
    assert stored == (rows_seen,)
    assert reads >= rows_seen // 5  # the checkpoint moved in steps of at most 5 rows


def test_a_read_stops_at_the_readings_limit_but_takes_at_least_one_row(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    for seq, n in enumerate((30, 50, 40, 10), start=1):
        writer.write([batch(door_readings(n, prefix=f"s{seq}-"), seq)])
    writer.close()
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        sizes = [
            [sum(len(e.readings) for e in r.envelopes) for r in read_feed(
                conn, after=0, partition=ALL, limit_rows=10, limit_readings=limit
            )]
            for limit in (1, 30, 31, 80, 81, 10_000)
        ]  # fmt: skip
    assert sizes == [[30], [30], [30, 50], [30, 50], [30, 50, 40], [30, 50, 40, 10]]

"""The alert service's mechanics against a real PostgreSQL: following the feed in commit order,
exactly once into the committed state, resuming from its checkpoint, partitions, a hot standby,
and undecodable feed rows. The rules here are a small counting engine (the shipped rule engine
has its own tests, and the end-to-end tests run the two together)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import pytest

from cloud.alerts.feed import FeedRow, Partition
from cloud.alerts.model import Action
from cloud.alerts.rules import Rule
from cloud.alerts.service import AlertService
from cloud.config import AlertsConfig
from cloud.ingest.envelope import Envelope, decode
from cloud.store.writer import BatchWriter
from tests.cloud.alerts.test_inventory_reload import until
from tests.cloud.conftest import T0_US, R, envelope, up_topic

pytestmark = pytest.mark.integration


class CountingEngine:
    """Fires ``sos`` for each ``sos_pressed`` event; its state counts presses per community (so a
    row evaluated twice, or lost, shows in the state as well as in the incidents)."""

    def __init__(self) -> None:
        self.presses: dict[str, int] = {}
        self.dirty: set[str] = set()
        self.ticks = 0

    def restore(self, states: Iterable[tuple[str, bytes]]) -> None:
        for key, blob in states:
            self.presses[key] = msgspec.msgpack.decode(blob, type=int)

    def step(self, row: FeedRow, *, wall_us: int) -> list[Action]:
        out = []
        for env in row.envelopes:
            for r in env.readings:
                if "sos_pressed" in r.events:
                    self.presses[row.community_id] = self.presses.get(row.community_id, 0) + 1
                    self.dirty.add(row.community_id)
                    out.append(_action(r.device_id, row.community_id, env.gateway_id, r.ts_us, wall_us))
        return out

    def tick(self, *, wall_us: int) -> list[Action]:
        self.ticks += 1
        return []

    def take_dirty(self) -> dict[str, bytes | None]:
        out: dict[str, bytes | None] = {k: msgspec.msgpack.encode(self.presses[k]) for k in self.dirty}
        self.dirty.clear()
        return out

    def clocks(self, *, wall_us: int) -> dict[str, int]:
        return dict.fromkeys(self.presses, wall_us)

    def rules_of(self, community_id: str) -> tuple[Rule, ...]:
        return ()

    def snapshot(self) -> dict[str, int]:
        return {"communities": len(self.presses)}


def _action(device: str, community: str, gateway: str, ts_us: int, wall_us: int) -> Action:
    return Action(
        kind="fire",
        rule="sos",
        subject=device,
        subject_kind="device",
        severity="critical",
        latched=True,
        community_id=community,
        gateway_id=gateway,
        device_id=device,
        resident_id=None,
        title_zh="紧急呼叫",
        title_en="SOS",
        detail_zh="",
        detail_en="",
        started_us=ts_us,
        at_us=wall_us,
    )


def sos_batch(n: int, seq: int, *, community: str = "c1", gateway: str = "gw1", first: int = 0) -> Envelope:
    readings = [
        R(
            f"sos{first + i:05d}",
            T0_US + (first + i) * 1000,
            {},
            events=["sos_pressed"],
            device_type="sos_button",
        )
        for i in range(n)
    ]
    return decode(
        up_topic(community, gateway),
        envelope(readings, batch_seq=seq, community_id=community, gateway_id=gateway, batch_class="alarm"),
    )


def config(**overrides: Any) -> AlertsConfig:
    values: dict[str, Any] = {"poll_interval_s": 0.2, "tick_interval_s": 0.2, "max_feed_rows_per_txn": 7}
    return AlertsConfig(**(values | overrides))


@contextmanager
def running(
    url: str, cfg: AlertsConfig, engines: list[CountingEngine] | None = None
) -> Iterator[AlertService]:
    made = engines if engines is not None else []

    def make() -> CountingEngine:
        made.append(CountingEngine())
        return made[-1]

    service = AlertService(database_url=url, config=cfg, make_engine=make)
    stop = threading.Event()
    thread = threading.Thread(target=service.run, args=(stop,), name="alerts")
    thread.start()
    try:
        yield service
    finally:
        stop.set()
        thread.join(20)
        assert not thread.is_alive()


def wait_checkpoint(url: str, partition: str, at_least: int, timeout: float = 30.0) -> None:
    """Block on the database until the partition's checkpoint reaches `at_least` (LISTEN on the
    incident channel would miss checkpoints without incidents: poll the committed value)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET statement_timeout = '60s'")
        got = conn.execute(
            """
            DO $$ DECLARE t0 timestamptz := clock_timestamp(); BEGIN
              LOOP
                EXIT WHEN coalesce((SELECT feed_seq FROM alert_checkpoints WHERE partition = %s), 0) >= %s;
                IF clock_timestamp() - t0 > make_interval(secs => %s) THEN
                  RAISE EXCEPTION 'checkpoint not reached';
                END IF;
                PERFORM pg_sleep(0.02);
              END LOOP;
            END $$
            """.replace("%s", "{}").format(f"'{partition}'", int(at_least), float(timeout))
        )
        assert got is not None


def incidents(url: str, rule: str = "sos") -> Counter[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT subject, occurrences FROM incidents WHERE rule = %s", (rule,)).fetchall()
    return Counter(dict(rows))


def test_two_writers_every_committed_row_once_in_commit_order(migrated_url: str) -> None:
    """Two ingest writers commit concurrently (feed_seq allocated at commit, under the feed lock):
    the service sees every press exactly once, whatever the interleaving."""
    per_writer, batch_size = 30, 3
    results: list[int] = []

    def write(w: int) -> None:
        writer = BatchWriter(database_url=migrated_url)
        for i in range(per_writer):
            first = (w * per_writer + i) * batch_size
            res = writer.write([sos_batch(batch_size, first + 1, gateway=f"gw{w}", first=first)])
            results.append(res.feed_seq)
        writer.close()

    with running(migrated_url, config()) as service:
        threads = [threading.Thread(target=write, args=(w,)) for w in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        wait_checkpoint(migrated_url, "0/1", max(results))
        assert service.counters["alerts_incidents_fired_total"] == 2 * per_writer * batch_size
    got = incidents(migrated_url)
    assert len(got) == 2 * per_writer * batch_size
    assert set(got.values()) == {1}
    with psycopg.connect(migrated_url) as conn:
        state = conn.execute(
            "SELECT state FROM alert_state WHERE partition = '0/1' AND key = 'c1'"
        ).fetchone()
    assert state is not None
    assert msgspec.msgpack.decode(state[0]) == 2 * per_writer * batch_size


def test_restart_resumes_from_checkpoint_with_state(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    first = writer.write([sos_batch(5, 1)]).feed_seq
    engines: list[CountingEngine] = []
    with running(migrated_url, config(), engines):
        wait_checkpoint(migrated_url, "0/1", first)
    second = writer.write([sos_batch(4, 2, first=100)]).feed_seq
    writer.close()
    with running(migrated_url, config(), engines):
        wait_checkpoint(migrated_url, "0/1", second)
    assert engines[-1].presses == {"c1": 9}  # restored 5, then 4 new: nothing evaluated twice
    assert sum(incidents(migrated_url).values()) == 9


def test_partitions_own_their_communities(migrated_url: str) -> None:
    communities = [f"community-{i}" for i in range(10)]
    writer = BatchWriter(database_url=migrated_url)
    last = writer.write(
        [sos_batch(1, 1, community=c, gateway=f"g{c}", first=i) for i, c in enumerate(communities)]
    ).feed_seq
    writer.close()
    e0: list[CountingEngine] = []
    e1: list[CountingEngine] = []
    with (
        running(migrated_url, config(partition="0/2"), e0),
        running(migrated_url, config(partition="1/2"), e1),
    ):
        wait_checkpoint(migrated_url, "0/2", last)
        wait_checkpoint(migrated_url, "1/2", last)
    seen0, seen1 = set(e0[-1].presses), set(e1[-1].presses)
    assert seen0 | seen1 == set(communities)
    assert not seen0 & seen1
    assert seen0 == {c for c in communities if Partition(k=0, n=2).owns(c)}


def test_a_second_process_of_a_partition_stands_by(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    first = writer.write([sos_batch(3, 1)]).feed_seq
    with running(migrated_url, config()) as active:
        wait_checkpoint(migrated_url, "0/1", first)
        with running(migrated_url, config()) as standby:
            # the standby has found the partition taken before anything is written
            assert until(lambda: standby.role == "standby"), standby.role
            second = writer.write([sos_batch(2, 2, first=10)]).feed_seq
            wait_checkpoint(migrated_url, "0/1", second)
            assert standby.snapshot().health["role"] == "standby"
            assert standby.counters["alerts_feed_rows_total"] == 0
        assert active.snapshot().health["role"] == "active"
    writer.close()
    assert sum(incidents(migrated_url).values()) == 5


def test_an_undecodable_feed_row_is_skipped_and_counted(migrated_url: str) -> None:
    writer = BatchWriter(database_url=migrated_url)
    a = writer.write([sos_batch(2, 1)]).feed_seq
    b = writer.write([sos_batch(2, 2, first=10)]).feed_seq
    c = writer.write([sos_batch(2, 3, first=20)]).feed_seq
    writer.close()
    with psycopg.connect(migrated_url) as conn:
        conn.execute("UPDATE alert_feed SET batches = '\\x00c1ff'::bytea WHERE feed_seq = %s", (b,))
    with running(migrated_url, config()) as service:
        wait_checkpoint(migrated_url, "0/1", c)
        assert service.counters["alerts_feed_rows_skipped_total"] == 1
    assert a < b < c
    assert sum(incidents(migrated_url).values()) == 4


def test_kill_9_never_loses_or_repeats_an_incident(migrated_url: str, tmp_path: Path) -> None:
    """The real command with the shipped rules, SIGKILLed three times while presses are being
    stored: every press is one incident with one occurrence."""
    from simulators.demo.children import Child
    from simulators.demo.configs import write_cloud_config

    toml = write_cloud_config(
        tmp_path / "cloud.toml",
        database_url=migrated_url,
        mqtt_url="mqtt://127.0.0.1:1",  # not used by the alert service
        overrides={"alerts": {"poll_interval_s": 0.05, "max_feed_rows_per_txn": 3, "http": {"address": ""}}},
    )
    alerts = Child.python(
        name="alerts",
        module="cloud",
        args=["cloud", "alerts", "--config", str(toml)],
        log=tmp_path / "alerts.log",
    )
    writer = BatchWriter(database_url=migrated_url)
    presses = 0
    alerts.start()
    try:
        for round_ in range(4):
            seqs = []
            for i in range(40):
                seqs.append(writer.write([sos_batch(2, round_ * 40 + i + 1, first=presses)]).feed_seq)
                presses += 2
            if round_ < 3:
                # kill it mid-round: some of this round's rows are committed, most are not (it
                # commits three rows per transaction)
                wait_checkpoint(migrated_url, "0/1", seqs[len(seqs) // 4], timeout=60)
                alerts.kill()
                with psycopg.connect(migrated_url) as conn:
                    at_kill = conn.execute("SELECT feed_seq FROM alert_checkpoints").fetchone()
                assert at_kill is not None
                assert at_kill[0] < seqs[-1], "killed after it had caught up: nothing tested"
                alerts.start()
        last = writer.write([sos_batch(1, 999, first=presses)]).feed_seq
        presses += 1
        wait_checkpoint(migrated_url, "0/1", last, timeout=60)
    finally:
        writer.close()
        alerts.stop(timeout=20)
    got = incidents(migrated_url, rule="sos_pressed")
    assert len(got) == presses
    assert set(got.values()) == {1}


def test_a_critical_incident_ends_the_transaction_early(migrated_url: str) -> None:
    """Rows after a critical fire wait for the next transaction: the incident commits at once,
    not after the evaluation of everything read with it."""
    from tests.cloud.conftest import door_readings

    def doors(seq: int) -> Envelope:
        return decode(up_topic(), envelope(door_readings(5, prefix=f"d{seq}-"), batch_seq=seq))

    writer = BatchWriter(database_url=migrated_url)
    seqs = [
        writer.write([b]).feed_seq
        for b in (doors(1), sos_batch(1, 2), doors(3), doors(4), sos_batch(1, 5, first=1), doors(6))
    ]
    writer.close()
    with running(migrated_url, config(max_feed_rows_per_txn=50)) as service:
        wait_checkpoint(migrated_url, "0/1", seqs[-1])
        # doors+sos | doors+doors+sos | doors: three transactions, not one
        assert service.counters["alerts_transactions_total"] == 3
        assert service.counters["alerts_feed_rows_total"] == 6
    with psycopg.connect(migrated_url) as conn:
        fired_at = [r[0] for r in conn.execute("SELECT feed_seq FROM incident_occurrences ORDER BY feed_seq")]
    assert fired_at == [seqs[1], seqs[4]]
    assert incidents(migrated_url) == Counter({"sos00000": 1, "sos00001": 1})

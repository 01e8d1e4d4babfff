"""``linli bench notify --json``: from an SOS press to the push, under load and during a drain,
and the sender's throughput.

The chain of `simulators.demo.chain` with pushes: field broker, edge agent, cloud broker, ingest,
alert service, ``linli cloud incidents`` and ``linli cloud notify`` delivering to a local webhook
receiver (`simulators.pushes.PushServer`) that is the first level of the ladder.

1. **under load**: ``--background`` readings/s of ordinary telemetry through the edge agent while
   one SOS button is pressed ``--presses`` times at random pauses; per press, the time from the
   ``publish`` call at the field broker to the receiver accepting the push
   (``sos_to_push_p50_ms``, ``_p99_ms``; ``background_stored_readings_per_s``: what the ingest
   stored meanwhile). The devices' messages are generated beforehand and sent by a lean publisher
   pinned with the gateway side: deployed, the devices are not on the gateway. Between presses
   the incident is rejected through the workflow (a false alarm), so each press opens a new
   incident and owes a new push.
2. **during a drain**: the cloud broker is stopped, ``--backlog`` readings are published through
   the edge agent (they wait in its buffer), the broker is started again, and while the agent
   drains the backlog the button is pressed every 0.4 s (``sos_to_push_p99_ms_during_drain``;
   ``drain_s``: from the restart to the backlog stored). ``slowest_during_drain_ms`` says where
   the slowest of those presses spent its time, from the press: when the ingest's transaction
   holding it began (``ingest``), the incident's transaction began (``incident``), the
   escalator's step that owed the notification (``owed``: its clock, read just before it looked
   for due incidents, so it can precede ``incident`` by a little), the sender recorded it sent
   (``sent``), and the receiver had it (``push``).
3. **throughput**: ``--notifications`` critical notifications are put in the outbox in one
   transaction; ``notifications_per_s`` is their number divided by the time from that commit to
   the receiver accepting the last.
"""

from __future__ import annotations

import argparse
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from cloud.incidents import transitions
from cloud.incidents.people import People
from cloud.incidents.record import Context
from cloud.notify.message import Message
from simulators.benchrun import run_in_workdir
from simulators.demo.chain import Chain, running_chain
from simulators.pushes import PushServer


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "notify", help="SOS press to push, under load and during a drain; sender throughput"
    )
    parser.add_argument("--json", action="store_true", help="print only the JSON figures")
    parser.add_argument("--background", type=int, default=10_000, help="telemetry readings/s during presses")
    parser.add_argument("--presses", type=int, default=60)
    parser.add_argument("--backlog", type=int, default=100_000, help="readings buffered during the outage")
    parser.add_argument("--drain-presses", type=int, default=10, help="presses during each drain")
    parser.add_argument("--drains", type=int, default=2)
    parser.add_argument("--notifications", type=int, default=3000, help="for the throughput part")
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run")
    parser.add_argument("--workdir", type=Path, help="keep everything here instead of a temporary folder")
    parser.set_defaults(handler=_run)


def _push_for(server: PushServer, device_id: str, mark: int, timeout: float) -> tuple[float, int]:
    """Arrival (the server's perf_counter) and incident id of the first escalation push about
    `device_id` after `mark` received messages."""
    found: list[tuple[float, int]] = []

    def arrived(p: PushServer) -> bool:
        for r in p.received[mark:]:
            if r.body.get("reason") == "escalate" and f"设备：{device_id}" in r.text:
                found.append((r.at, int(r.body["incident_id"])))
                return True
        return False

    if not server.wait_for(arrived, timeout):
        raise RuntimeError(f"no push for {device_id} within {timeout} s")
    return found[0]


class _Presser:
    def __init__(self, chain: Chain) -> None:
        assert chain.pushes is not None  # noqa: S101 - a chain with pushes
        self.chain = chain
        self.server = chain.pushes
        self.conn = psycopg.connect(chain.url, autocommit=True)
        people = People.model_validate(msgspec.yaml.decode((chain.root / "people.yaml").read_bytes()))
        self.ctx = Context(people=people)
        #: the receiver stamps arrivals with the wall clock; presses are timed with perf_counter
        self.offset = time.time() - time.perf_counter()
        #: per press: incident id, pressed and pushed (wall clock seconds)
        self.log: list[tuple[int, float, float]] = []

    def once(self) -> float:
        """Press, wait for the push, reject the incident; milliseconds from press to push."""
        mark = len(self.server.received)
        start = self.chain.press()
        at, incident = _push_for(self.server, self.chain.button.device_id, mark, 60)
        transitions.reject(self.conn, incident, actor="w1", note="benchmark press", ctx=self.ctx)
        self.log.append((incident, start + self.offset, at))
        return (at - self.offset - start) * 1000

    def stages(self, incident: int, pressed: float, pushed: float) -> dict[str, float]:
        """Milliseconds from the press to each step of `incident` (see the module's doc)."""
        row = self.conn.execute(_STAGES, (incident,)).fetchone()
        if row is None or None in row:
            raise RuntimeError(f"incident {incident} lacks its feed row or notification")
        marks = dict(zip(("ingest", "incident", "owed", "sent"), (float(x) for x in row), strict=True))
        marks["push"] = pushed
        return {k: round((v - pressed) * 1000, 1) for k, v in marks.items()}

    def close(self) -> None:
        self.conn.close()


_STAGES = (
    "SELECT extract(epoch FROM f.committed_at), extract(epoch FROM i.created_at),"
    " extract(epoch FROM o.created_at), extract(epoch FROM o.sent_at)"
    " FROM incidents i JOIN alert_feed f USING (feed_seq)"
    " JOIN LATERAL (SELECT created_at, sent_at FROM notify_outbox WHERE incident_id = i.incident_id"
    " ORDER BY notification_id LIMIT 1) o ON true WHERE i.incident_id = %s"
)


def _stored(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute("SELECT coalesce(sum(readings), 0) FROM ingested_batches").fetchone()
    return int(row[0]) if row else 0


def measure(root: Path, *, background: int, presses: int, backlog: int, drains: int, drain_presses: int,
            notifications: int) -> dict[str, Any]:  # fmt: skip
    with running_chain(root, pushes=True) as chain:
        presser = _Presser(chain)
        try:
            rng = random.Random(5)  # noqa: S311 - pacing
            samples: list[float] = []
            presser.once()  # warm: the first incident of a community loads its state
            with chain.background(background, seconds=10 + presses * 1.2):
                time.sleep(3.0)  # the background reaches its pace before the first press
                stored, began = _stored(presser.conn), time.perf_counter()
                for _ in range(presses):
                    time.sleep(rng.uniform(0.2, 0.6))  # presses at random phases of the background
                    samples.append(presser.once())
                achieved = (_stored(presser.conn) - stored) / (time.perf_counter() - began)
            chain.check()
            during: list[float] = []
            drain_s: list[float] = []
            first_drain_press = len(presser.log)
            for _ in range(drains):
                before = _stored(presser.conn)
                chain.cloud.stop()
                readings = chain.backlog(backlog)
                time.sleep(1.0)  # the agent buffers the tail of the backlog
                chain.cloud.start()
                restarted = time.perf_counter()
                time.sleep(0.2)
                for _ in range(drain_presses):
                    during.append(presser.once())
                    time.sleep(0.4)
                while _stored(presser.conn) < before + readings:
                    if time.perf_counter() - restarted > 300:
                        raise RuntimeError("the backlog did not drain within 300 s")
                    time.sleep(0.1)
                drain_s.append(time.perf_counter() - restarted)
            slowest = max(presser.log[first_drain_press:], key=lambda x: x[2] - x[1])
            stages = presser.stages(*slowest)
            chain.check()
            rate = _throughput(chain, presser.server, notifications)
        finally:
            presser.close()
    return {
        "sos_to_push_p50_ms": round(float(np.percentile(samples, 50)), 1),
        "sos_to_push_p99_ms": round(float(np.percentile(samples, 99)), 1),
        "sos_to_push_max_ms": round(max(samples), 1),
        "sos_to_push_p99_ms_during_drain": round(float(np.percentile(during, 99)), 1),
        "sos_to_push_max_ms_during_drain": round(max(during), 1),
        "notifications_per_s": round(rate, 1),
        "presses": len(samples),
        "presses_during_drain": len(during),
        "background_readings_per_s": background,
        "background_stored_readings_per_s": round(achieved),
        "backlog_readings": backlog,
        "drain_s": [round(x, 1) for x in drain_s],
        "slowest_during_drain_ms": stages,
    }


def _throughput(chain: Chain, server: PushServer, n: int) -> float:
    message = Message(reason="escalate", severity="critical", title_zh="吞吐测试", community_id="bench")
    body = Jsonb(msgspec.to_builtins(message))
    mark = len(server.received)
    with psycopg.connect(chain.url, autocommit=True) as conn:
        now = datetime.now(UTC)
        with conn.transaction(), conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO notify_outbox (created_at, reason, channel, severity, message, next_attempt_at)"
                " VALUES (%s, 'escalate', 'grid', 'critical', %s, %s)",
                [(now, body, now)] * n,
            )
            cur.execute("SELECT pg_notify('linli_outbox', 'grid')")
        start = time.time()
    if not server.wait_for(lambda p: len(p.received) >= mark + n, 600):
        raise RuntimeError(f"the sender did not deliver {n} notifications within 600 s")
    return n / (server.received[mark + n - 1].at - start)


def _run(args: argparse.Namespace) -> int:
    if args.quick:
        args.background, args.presses, args.backlog, args.drains, args.drain_presses = 2000, 8, 20_000, 1, 3
        args.notifications = 300

    def measured(root: Path) -> dict[str, Any]:
        return measure(
            root,
            background=args.background,
            presses=args.presses,
            backlog=args.backlog,
            drains=args.drains,
            drain_presses=args.drain_presses,
            notifications=args.notifications,
        )

    return run_in_workdir(args.workdir, measured, prefix="linli-bench-notify-")

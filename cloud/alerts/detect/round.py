"""The alert service's detection rounds: each community's due detectors, on its stored history.

On every tick (``tick_interval_s``) that has no backlog of feed rows to evaluate, the service
asks `DetectionRound.run` for actions. A round goes through the partition's communities in
turn, starting where the last one stopped, and for each runs the detector rules whose ``every``
has passed on the community's clock (the wall clock, or a simulation's data clock): it reads
the history those rules need (`cloud.alerts.detect.source`), runs them
(`cloud.alerts.detect.runner`) and turns the findings into fire and clear actions. It stops once
it has spent ``budget_s``: the rest waits for the next tick, so an SOS committed meanwhile waits
at most one community's detection. The service commits the actions with its checkpoint and the
detection state, in one transaction.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Final, Protocol

import psycopg

from cloud.alerts.detect.finding import Place
from cloud.alerts.detect.runner import US, DetectionState, detector_rules, run_detectors
from cloud.alerts.detect.source import SeriesCache, load_history
from cloud.alerts.feed import FeedRow, Partition
from cloud.alerts.model import Action, DeviceInfo, Directory
from cloud.alerts.rules import Rule

#: Seconds of detection per tick, at most (the community in progress finishes).
BUDGET_S: Final = 0.25


class RulesOf(Protocol):
    def rules_of(self, community_id: str) -> tuple[Rule, ...]: ...


class DetectionRound:
    """Detection over one partition's communities (those of the inventory)."""

    def __init__(
        self,
        *,
        directory: Directory,
        partition: Partition,
        budget_s: float = BUDGET_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._state = DetectionState(directory=directory)
        members: dict[str, list[DeviceInfo]] = defaultdict(list)
        for d in directory.devices.values():
            if partition.owns(d.community_id):
                members[d.community_id].append(d)
        self._members = {c: sorted(ds, key=lambda d: d.device_id) for c, ds in sorted(members.items())}
        self._places = {c: Place.of(directory, c, ds) for c, ds in self._members.items()}
        self._caches = {c: SeriesCache() for c in self._members}
        self._late: dict[str, int] = {}
        self._order = list(self._members)
        self._next = 0
        self._budget_s = budget_s
        self._monotonic = monotonic
        #: CPU seconds spent in the detectors themselves (not the queries), for /metrics.
        self.cpu_s = 0.0

    def restore(self, states: Iterable[tuple[str, bytes]]) -> None:
        self._state.restore(states)

    def observe(self, row: FeedRow) -> None:
        """A feed row evaluated: remember its oldest reading, so the next round of its community
        reads the history from there (readings stored late, after a gateway's outage)."""
        oldest = min((r.ts_us for env in row.envelopes for r in env.readings), default=None)
        if oldest is not None:
            known = self._late.get(row.community_id)
            self._late[row.community_id] = oldest if known is None else min(known, oldest)

    def take_dirty(self) -> dict[str, bytes | None]:
        return self._state.take_dirty()

    def run(self, conn: psycopg.Connection[Any], clocks: dict[str, int], engine: RulesOf) -> list[Action]:
        """The actions of the communities due, until the budget is spent."""
        out: list[Action] = []
        began = self._monotonic()
        for _ in range(len(self._order)):
            cid = self._order[self._next]
            self._next = (self._next + 1) % len(self._order)
            now_us = clocks.get(cid, 0)
            if now_us <= 0:
                continue
            now = now_us // US
            due = self._state.due(cid, detector_rules(engine.rules_of(cid)), now)
            if not due:
                continue
            late_us = self._late.pop(cid, None)
            history = load_history(
                conn,
                devices=self._members[cid],
                rules=due,
                now=now,
                cache=self._caches[cid],
                late=None if late_us is None else late_us // US,
            )
            cpu = time.process_time()
            findings = run_detectors(due, history, now, self._places[cid])
            self.cpu_s += time.process_time() - cpu
            out.extend(self._state.apply(cid, due, findings, now))
            if self._monotonic() - began >= self._budget_s:
                break
        return out

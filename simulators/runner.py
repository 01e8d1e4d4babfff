"""Running a simulation: pacing to simulated time, output, ground truth, progress, a clean Ctrl-C.

    summary = run_simulation(sim, sink=FileSink("out.jsonl"), truth=TruthWriter("truth.jsonl"),
                             clock=SimClock(start_ms=sim.start_ms, speed=None), until_ms=...)

The order of work per message is fixed: wait for its simulated time (when paced), hand it to the
output, then record it in the ground truth, so the ground truth lists exactly what was handed over.
Stopping (``stop`` set, or SIGINT with `interruptible`) ends the loop between two messages; the
output is then closed (waiting for PUBACKs at QoS 1) and the ground truth flushed, in that order.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import TYPE_CHECKING, Final

import msgspec
from msgspec import UNSET

from simulators.clock import SimClock, iso
from simulators.errors import OutputError
from simulators.message import Emission
from simulators.output import Sink
from simulators.progress import Progress
from simulators.simulation import Simulation
from simulators.truth import EndRecord, TruthWriter

if TYPE_CHECKING:
    from simulators.commands import CommandListener


class Summary(msgspec.Struct, frozen=True, kw_only=True):
    """What a run did."""

    messages: int
    malformed: int
    duplicates: int
    reordered: int
    conditions: int
    errors: int
    sim_start: str
    sim_end: str
    wall_s: float
    messages_per_s: float
    interrupted: bool
    failure: str | None = None


#: The longest a paced run waits before looking for commands the devices received (seconds).
OBEY_WAIT_S: Final = 0.01


@contextmanager
def sigint_sets(stop: threading.Event) -> Iterator[None]:
    """While active (main thread only), the first Ctrl-C sets `stop`; a second one interrupts."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_simulation(
    sim: Simulation,
    *,
    sink: Sink,
    truth: TruthWriter,
    clock: SimClock,
    until_ms: int | None = None,
    count: int | None = None,
    progress: Progress | None = None,
    stop: threading.Event | None = None,
    interruptible: bool = False,
    listener: CommandListener | None = None,
) -> Summary:
    """Run until `until_ms` (simulated), `count` messages, or `stop`; always closes sink and truth."""
    stop = stop or threading.Event()
    last_ms = sim.start_ms
    failure: str | None = None
    interrupted = False
    wall0 = time.monotonic()
    clock.restart()
    try:
        with sigint_sets(stop) if interruptible else _nothing():
            _, last_ms, interrupted = _loop(
                sim, sink, truth, clock, until_ms, count, progress, stop, listener
            )
    except OutputError as exc:
        failure = str(exc)
    finally:
        if progress is not None:
            progress.close()
        try:
            sink.close(timeout=10.0)
        except OutputError as exc:
            failure = failure or str(exc)
        wall = time.monotonic() - wall0
        c = sim.counts
        summary = Summary(
            messages=truth.messages,
            malformed=c["malformed"],
            duplicates=c["duplicates"],
            reordered=c["reordered"],
            conditions=c["conditions"],
            errors=sink.errors,
            sim_start=iso(sim.start_ms),
            sim_end=iso(last_ms),
            wall_s=round(wall, 3),
            messages_per_s=round(truth.messages / wall, 1) if wall > 0 else 0.0,
            interrupted=interrupted,
            failure=failure,
        )
        end = EndRecord(
            messages=summary.messages,
            conditions=summary.conditions,
            sim_end=summary.sim_end,
            interrupted=interrupted,
            failure=UNSET if failure is None else failure,
        )
        truth.note(end)
        truth.close()
    return summary


def _obey(
    sim: Simulation,
    listener: CommandListener,
    truth: TruthWriter,
    publish: Callable[[str, bytes], None],
    t_ms: int,
) -> int:
    """Act on the commands heard; returns the messages sent (reports and acknowledgements)."""
    items, acks = sim.obey(t_ms, listener.take())
    sent = 0
    for item in items:
        if type(item) is Emission:
            publish(item.topic, item.payload)
            truth.message(item)
            sent += 1
        else:
            truth.note(item.record)  # type: ignore[union-attr]
    for topic, payload in acks:
        publish(topic, payload)
    return sent


@contextmanager
def _nothing() -> Iterator[None]:
    yield


def _loop(
    sim: Simulation,
    sink: Sink,
    truth: TruthWriter,
    clock: SimClock,
    until_ms: int | None,
    count: int | None,
    progress: Progress | None,
    stop: threading.Event,
    listener: CommandListener | None = None,
) -> tuple[int, int, bool]:
    sent = 0
    # With devices that obey commands the paced wait is cut short often, so a command is acted
    # on within ``OBEY_WAIT_S`` of its arrival (the devices' reaction time).
    chunk = OBEY_WAIT_S if listener is not None else 0.2
    last_ms = sim.start_ms
    paced = clock.paced
    publish = sink.publish
    record = truth.message
    limit = count if count is not None else -1
    items = sim.run(until_ms=until_ms)
    for item in items:
        if type(item) is not Emission:
            truth.note(item.record)  # type: ignore[union-attr]
            continue
        t = item.t_ms
        if listener is not None and listener.pending:
            sent += _obey(sim, listener, truth, publish, clock.now_ms() or t)
        if paced:
            delay = clock.wall_delay(t)
            while delay > 0.001:
                sink.idle(min(delay, chunk))
                if listener is not None and listener.pending:
                    sent += _obey(sim, listener, truth, publish, clock.now_ms() or t)
                if stop.is_set():
                    return sent, last_ms, True
                if progress is not None:
                    progress.update(sent=sent, errors=sink.errors, sim_ms=clock.now_ms() or t)
                delay = clock.wall_delay(t)
        publish(item.topic, item.payload)
        record(item)
        sent += 1
        last_ms = t
        if sent == limit:
            return sent, last_ms, False
        if sent & 255 == 0:
            if stop.is_set():
                return sent, last_ms, True
            if progress is not None:
                progress.update(sent=sent, errors=sink.errors, sim_ms=t)
    if stop.is_set():
        return sent, last_ms, True
    for em in sim.flush_held():
        publish(em.topic, em.payload)
        record(em)
        sent += 1
    if until_ms is not None:
        last_ms = max(last_ms, until_ms)
    return sent, last_ms, False

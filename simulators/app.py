"""What ``linli sim`` does once its options are parsed (kept out of `cli` so importing that is cheap)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

import numpy as np

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory, InventoryError
from simulators.clock import SimClock, iso, parse_duration, parse_start, to_ms
from simulators.errors import ConfigError, OutputError, SimulatorsError
from simulators.faults import FaultOptions
from simulators.fleet import generate_fleet, load_fleet, parse_mix
from simulators.output import open_sink
from simulators.progress import Progress
from simulators.rand import RandomStream
from simulators.runner import Summary, run_simulation
from simulators.scenarios import load_scenario, shipped_scenarios
from simulators.simulation import Simulation
from simulators.truth import TruthWriter

if TYPE_CHECKING:
    from simulators.commands import CommandListener

DEFAULT_BROKER = "mqtt://127.0.0.1:1883"


def parse_speed(text: str | None, *, to_file: bool) -> float | None:
    if text is None:
        return None if to_file else 1.0
    if text.strip().lower() in ("max", "inf", "0"):
        return None
    try:
        speed = float(text)
    except ValueError:
        raise ConfigError(None, "speed", f"{text!r} is not a number or 'max'") from None
    if not speed > 0:
        raise ConfigError(None, "speed", f"must be positive, got {text}")
    return speed


def build(args: argparse.Namespace) -> tuple[Simulation, Inventory, int | None]:
    """The simulation the options describe, its inventory, and the simulated end (or None)."""
    profiles = ProfileSet.shipped()
    rs = RandomStream(np.random.default_rng(args.seed))
    if args.fleet:
        inventory = load_fleet(args.fleet, rs=rs, profiles=profiles)
    else:
        inventory = generate_fleet(
            devices=args.devices,
            mix=parse_mix(args.mix),
            communities=args.communities,
            rs=rs,
            profiles=profiles,
        )
    faults = FaultOptions(
        malformed=args.malformed,
        duplicate=args.duplicate,
        reordered=args.reordered,
        clock_skew_min=args.clock_skew,
        skew_share=args.skew_share,
        silent_share=args.silent,
    )
    start = parse_start(args.start)
    scenarios = [load_scenario(s) for s in args.scenario]
    sim = Simulation(
        inventory=inventory,
        start=start,
        seed=args.seed,
        profiles=profiles,
        scenarios=scenarios,
        faults=faults,
        rs=rs,
    )
    until = to_ms(start) + parse_duration(args.duration) if args.duration else None
    return sim, inventory, until


def main_with_args(args: argparse.Namespace, *, stdout: TextIO, stderr: TextIO) -> int:
    if args.list_scenarios:
        from simulators.scenarios import load_scenario as load

        for name in shipped_scenarios():
            description = " ".join(load(name).description.split())
            stdout.write(f"{name:18s} {description}\n")
        return 0
    try:
        if args.count is not None and args.count < 1:
            raise ConfigError(None, "count", "must be at least 1")
        if args.output and args.broker:
            raise ConfigError(None, "output", "give --output or --broker, not both")
        to_file = args.output is not None
        speed = parse_speed(args.speed, to_file=to_file)
        if speed is None and not args.duration and args.count is None:
            raise ConfigError(
                None, "duration", "without pacing (--speed max, or a file) give --duration or --count"
            )
        if args.tls_key and not args.tls_cert:
            raise ConfigError(None, "tls-key", "needs --tls-cert")
        sim, inventory, until = build(args)
        if args.inventory:
            inventory.dump(args.inventory)
        sink = open_sink(
            output=args.output,
            broker=None if to_file else (args.broker or DEFAULT_BROKER),
            qos=args.qos,
            tls_ca=args.tls_ca,
            tls_cert=args.tls_cert,
            tls_key=args.tls_key,
            client_id=args.client_id,
        )
    except (ConfigError, InventoryError) as exc:
        stderr.write(f"linli sim: error: {exc}\n")
        return 2
    except (SimulatorsError, OSError) as exc:
        stderr.write(f"linli sim: error: {exc}\n")
        return 1
    try:
        truth = TruthWriter(args.truth)
    except OutputError as exc:
        sink.close(timeout=1.0)
        stderr.write(f"linli sim: error: {exc}\n")
        return 1
    listener = None
    if getattr(args, "obey", False):
        listener = _listener(args, sim, inventory, stderr)
        if listener is None:
            sink.close(timeout=1.0)
            truth.close()
            return 1
    progress = None if args.quiet else Progress(stream=stderr)
    clock = SimClock(start_ms=sim.start_ms, speed=speed)
    try:
        summary = run_simulation(
            sim,
            sink=sink,
            truth=truth,
            clock=clock,
            until_ms=until,
            count=args.count,
            progress=progress,
            interruptible=True,
            listener=listener,
        )
    finally:
        if listener is not None:
            listener.stop()
    if not args.quiet:
        stdout.write(
            format_summary(summary, sink_target=sink.target, truth=args.truth, inventory=args.inventory)
        )
    if summary.failure is not None:
        stderr.write(f"linli sim: error: {summary.failure}\n")
        return 1
    return 130 if summary.interrupted else 0


def _listener(
    args: argparse.Namespace, sim: Simulation, inventory: Inventory, stderr: TextIO
) -> CommandListener | None:
    """The devices' ears on the broker (``--obey``), subscribed; None (said why) if it fails."""
    from urllib.parse import urlsplit

    from simulators.commands import CommandListener

    if args.output or args.tls_ca:
        stderr.write("linli sim: error: --obey needs a plain --broker (no --output, no TLS)\n")
        return None
    url = urlsplit(args.broker or DEFAULT_BROKER)
    listener = CommandListener(
        inventory=inventory, profiles=sim.profiles, host=url.hostname or "127.0.0.1", port=url.port or 1883
    )
    if not listener.start():
        listener.stop()
        stderr.write(f"linli sim: error: no subscription to the command topics on {url.geturl()}\n")
        return None
    return listener


def format_summary(summary: Summary, *, sink_target: str, truth: str | None, inventory: str | None) -> str:
    s = summary
    faults = f"malformed {s.malformed:,}, duplicates {s.duplicates:,}, reordered {s.reordered:,}"
    lines = [
        f"linli sim: {s.messages:,} messages ({faults}), {s.conditions:,} conditions, {s.errors:,} errors"
        + (" [interrupted]" if s.interrupted else ""),
        f"  simulated {s.sim_start} .. {s.sim_end} in {s.wall_s:.1f} s ({s.messages_per_s:,.0f} msg/s)",
        f"  output: {sink_target}",
    ]
    if truth:
        lines.append(f"  ground truth: {Path(truth)}")
    if inventory:
        lines.append(f"  inventory: {Path(inventory)}")
    return "\n".join(lines) + "\n"


__all__ = ["build", "format_summary", "iso", "main_with_args", "parse_speed"]

"""``linli bench sim``: messages per second from one process to a private Mosquitto.

Method: start a private Mosquitto (no subscribers), generate a seeded fleet (10,000 devices by
default), and run the simulation unpaced (``--speed max``) for ``--messages`` messages per QoS,
publishing with `MqttSink`; the clock runs from the first message to the moment the last one was
written (QoS 0) or acknowledged (QoS 1). Ground truth is not written (``--truth`` would add a
file write per message). ``--memory`` instead measures peak resident memory of a run that builds
the fleet and generates ``--messages`` messages without publishing (use ``--devices 100000``).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("sim", help="simulator throughput to a private Mosquitto, or its memory")
    parser.add_argument("--json", action="store_true", help="print one JSON object per line (per QoS)")
    parser.add_argument("--devices", type=int, default=10_000, help="fleet size (default 10000)")
    parser.add_argument("--messages", type=int, default=200_000, help="messages per run (default 200000)")
    parser.add_argument(
        "--qos",
        type=int,
        choices=(0, 1),
        action="append",
        help="QoS to measure (repeatable; default 0 and 1)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--memory", action="store_true", help="measure peak memory instead (no broker)")
    parser.set_defaults(handler=_run)


def _fleet(devices: int, seed: int) -> Any:
    from datetime import UTC, datetime

    import numpy as np

    from device_profiles import ProfileSet
    from simulators.fleet import generate_fleet
    from simulators.rand import RandomStream
    from simulators.simulation import Simulation

    profiles = ProfileSet.shipped()
    rs = RandomStream(np.random.default_rng(seed))
    inventory = generate_fleet(devices=devices, rs=rs, profiles=profiles)
    return Simulation(
        inventory=inventory, start=datetime(2025, 6, 1, tzinfo=UTC), seed=seed, profiles=profiles, rs=rs
    )


def measure_throughput(*, devices: int, messages: int, qos: int, url: str, seed: int = 1) -> dict[str, Any]:
    from simulators.clock import SimClock
    from simulators.output import MqttSink
    from simulators.runner import run_simulation
    from simulators.truth import TruthWriter

    sim = _fleet(devices, seed)
    sink = MqttSink(url=url, qos=qos, client_id=f"linli-bench-sim-q{qos}")
    summary = run_simulation(
        sim,
        sink=sink,
        truth=TruthWriter(None),
        clock=SimClock(start_ms=sim.start_ms, speed=None),
        count=messages,
    )
    if summary.failure:
        raise RuntimeError(summary.failure)
    return {
        "messages_per_s": round(summary.messages / summary.wall_s),
        "devices": devices,
        "qos": qos,
        "messages": summary.messages,
        "seconds": summary.wall_s,
        "errors": summary.errors,
    }


def measure_memory(*, devices: int, messages: int, seed: int = 1) -> dict[str, Any]:
    import resource
    import time

    from simulators.clock import SimClock
    from simulators.output import NullSink
    from simulators.runner import run_simulation
    from simulators.truth import TruthWriter

    t0 = time.perf_counter()
    sim = _fleet(devices, seed)
    build_s = time.perf_counter() - t0
    summary = run_simulation(
        sim,
        sink=NullSink(),
        truth=TruthWriter(None),
        clock=SimClock(start_ms=sim.start_ms, speed=None),
        count=messages,
    )
    peak_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "devices": devices,
        "peak_rss_mb": round(peak_kb / 1024, 1),
        "messages": summary.messages,
        "build_s": round(build_s, 2),
        "generate_messages_per_s": round(summary.messages / summary.wall_s),
    }


def _run(args: argparse.Namespace) -> int:
    import json
    import tempfile
    from pathlib import Path

    from simulators.services import MosquittoBroker

    results: list[dict[str, Any]] = []
    if args.memory:
        results.append(measure_memory(devices=args.devices, messages=args.messages, seed=args.seed))
    else:
        with (
            tempfile.TemporaryDirectory(prefix="linli-bench-sim-") as tmp,
            MosquittoBroker(workdir=Path(tmp)) as broker,
        ):
            for qos in args.qos or [0, 1]:
                results.append(
                    measure_throughput(
                        devices=args.devices, messages=args.messages, qos=qos, url=broker.url, seed=args.seed
                    )
                )
    for result in results:
        if args.json:
            sys.stdout.write(json.dumps(result) + "\n")
        else:
            sys.stdout.write("  ".join(f"{k}={v}" for k, v in result.items()) + "\n")
    return 0

"""``linli bench profiles``: decode throughput per profile, on one core (one Python thread).

For each profile, `distinct` sample messages (distinct devices and values) are encoded from random
valid readings (fixed seed), then decoded in a loop through `ProfileSet.decode` with normal
selection (topic, then match rules; no device map) until `count` decodes have run, `repeat`
times. ``decodes_per_s`` is count / the best run's CPU time of this thread (`time.thread_time`):
throughput on one core, which other processes on a busy machine do not dilute the way they do
wall-clock time; ``wall_decodes_per_s`` is the same from the best wall-clock run. Best of N, as
`timeit` does, since interference only ever adds time. Every sample must decode to a `Reading` of
its profile, or the benchmark fails.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from device_profiles.engine import ProfileSet


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("profiles", help="decodes per second for each shipped profile")
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by profile id")
    parser.add_argument("--count", type=int, default=200_000, help="decodes per run and profile (200000)")
    parser.add_argument("--distinct", type=int, default=2_000, help="distinct payloads per profile (2000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs per profile; the best counts (5)")
    parser.add_argument("--profile", action="append", default=[], metavar="ID", help="only this profile")
    parser.add_argument(
        "--dir",
        dest="dirs",
        action="append",
        type=Path,
        default=[],
        metavar="DIR",
        help="also load the profiles under DIR (repeatable)",
    )
    parser.set_defaults(handler=_run)


def measure(
    profiles: ProfileSet, profile_id: str, count: int, distinct: int, repeat: int, seed: int = 1
) -> dict[str, Any]:
    """Time `count` decodes of `distinct` sample payloads of one profile."""
    import random
    import time

    from device_profiles.reading import Reading
    from device_profiles.samples import sample_payloads

    profile = profiles.get(profile_id)
    rng = random.Random(f"{seed}:{profile_id}")  # noqa: S311 - sample data, not secrets
    messages = sample_payloads(profile, profiles.encode, rng, distinct)
    received_at = sample_received_at()
    decode = profiles.decode
    for topic, payload in messages:
        result = decode(topic, payload, received_at)
        if not isinstance(result, Reading) or result.profile != profile_id:
            raise RuntimeError(f"{profile_id}: sample payload did not decode: {result!r}")
    rounds, rest = divmod(count, len(messages))
    work = messages * rounds + messages[:rest]
    cpu_runs: list[float] = []
    wall_runs: list[float] = []
    for _ in range(repeat):
        wall, cpu = time.perf_counter(), time.thread_time()
        for topic, payload in work:
            decode(topic, payload, received_at)
        cpu_runs.append(time.thread_time() - cpu)
        wall_runs.append(time.perf_counter() - wall)
    best = min(cpu_runs)
    sizes = sorted(len(p) for _, p in messages)
    return {
        "decodes_per_s": round(len(work) / best),
        "us_per_decode": round(best / len(work) * 1e6, 3),
        "wall_decodes_per_s": round(len(work) / min(wall_runs)),
        "payloads": len(work),
        "distinct": len(messages),
        "cpu_runs_s": [round(r, 4) for r in cpu_runs],
        "wall_runs_s": [round(r, 4) for r in wall_runs],
        "median_payload_bytes": sizes[len(sizes) // 2],
        "encoding": profile.payload.format
        if profile.payload.binary is None or profile.payload.format != "json"
        else f"json+{profile.payload.binary.encoding}",
    }


def sample_received_at() -> Any:
    from datetime import UTC, datetime

    return datetime(2025, 11, 22, 6, 0, tzinfo=UTC)


def _run(args: argparse.Namespace) -> int:
    from device_profiles.engine import ProfileSet
    from device_profiles.loader import SHIPPED_DIR

    profiles = ProfileSet.load(SHIPPED_DIR, *args.dirs) if args.dirs else ProfileSet.shipped()
    ids = args.profile or sorted(profiles.profiles)
    results = {}
    for profile_id in ids:
        results[profile_id] = measure(profiles, profile_id, args.count, args.distinct, args.repeat)
        if not args.json:
            r = results[profile_id]
            print(
                f"{profile_id:<32} {r['encoding']:<12} {r['decodes_per_s']:>9,} decodes/s "
                f"({r['us_per_decode']:.2f} us, {r['payloads']:,} payloads)",
                flush=True,
            )
    if args.json:
        import msgspec

        sys.stdout.write(msgspec.json.encode(results).decode() + "\n")
    return 0

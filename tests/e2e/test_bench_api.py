"""``linli bench api --json`` on a small data set runs end to end and prints every figure: the
data loaded by COPY, the API as ``linli cloud api`` with two processes, every query answered
without an error (a smoke run of the benchmark's machinery, not a timing test: the targets live
in docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from tests.bench import bench_figures

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_bench_api_small_prints_every_query() -> None:
    figures = bench_figures(
        "api", "--rows", "100000", "--devices", "40", "--communities", "2", "--days", "3",
        "--clients", "4", "--seconds", "1", "--workers", "2", "--pool-max", "2",
    )  # fmt: skip
    assert figures["rows"] > 90_000
    assert (figures["workers"], figures["pool_max"], figures["clients"]) == (2, 2, 4)
    for query in ("history_hourly_30d", "history_raw_24h", "incidents_community"):
        q = figures[query]
        assert q["errors"] == 0, (query, q)
        assert q["requests"] > 0, (query, q)
        assert 0 < q["p50_ms"] <= q["p95_ms"], (query, q)

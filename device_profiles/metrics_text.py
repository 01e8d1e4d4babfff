"""The Prometheus text exposition format (0.0.4) for the edge agent's and the cloud's ``/metrics``.

Both endpoints serve a handful of unlabelled counters and gauges read from a snapshot at scrape
time, so the format is written here in a few lines instead of loading a client library (and the
HTTP and WSGI modules it brings) into the gateway's process::

    # HELP linli_edge_evicted_total linli edge agent: evicted
    # TYPE linli_edge_evicted_total counter
    linli_edge_evicted_total 12.0
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Final

CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


def _value(v: float) -> str:
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    return repr(float(v))


def exposition(
    *, prefix: str, help_prefix: str, counters: Mapping[str, float], gauges: Mapping[str, float]
) -> bytes:
    """Counters (``<prefix><name>_total``, as the client library writes them) and gauges
    (``<prefix><name>``), each with its HELP and TYPE lines, sorted by name."""
    lines: list[str] = []
    for name, value in sorted(counters.items()):
        family = prefix + name.removesuffix("_total") + "_total"
        lines += (
            f"# HELP {family} {help_prefix}{name.removesuffix('_total').replace('_', ' ')}",
            f"# TYPE {family} counter",
            f"{family} {_value(value)}",
        )
    for name, value in sorted(gauges.items()):
        family = prefix + name
        lines += (
            f"# HELP {family} {help_prefix}{name.replace('_', ' ')}",
            f"# TYPE {family} gauge",
            f"{family} {_value(value)}",
        )
    return ("\n".join(lines) + "\n").encode() if lines else b""

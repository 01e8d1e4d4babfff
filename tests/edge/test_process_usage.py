"""The status message's CPU and memory figures, read from the kernel without psutil."""

from __future__ import annotations

import time
from pathlib import Path

from edge.status import ProcessUsage


def _vmrss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_rss_is_the_kernels_resident_set() -> None:
    usage = ProcessUsage()
    before = usage.rss_bytes()
    block = b"\x01" * (32 << 20)  # written, so resident: 32 MiB
    after = usage.rss_bytes()
    assert abs(after - _vmrss_bytes()) < 1 << 20
    assert after - before >= 30 << 20
    del block


def test_cpu_percent_is_cpu_time_over_wall_time() -> None:
    usage = ProcessUsage()
    start = time.process_time()
    while time.process_time() - start < 0.3:  # busy: CPU time is spent
        pass
    busy = usage.cpu_percent()
    assert busy > 0
    idle_from = time.monotonic()
    while time.monotonic() - idle_from < 0.3:
        time.sleep(0.05)  # idle: wall time passes, almost no CPU time
    assert usage.cpu_percent() < busy

"""Loopback ports: pick a free one, wait until a service listens on it."""

from __future__ import annotations

import random
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

#: Where service ports are drawn from when the kernel's ephemeral range cannot be read.
_SERVICE_PORTS: Final = (20_000, 32_767)
_handed_out: set[int] = set()


def ephemeral_port_range() -> tuple[int, int]:
    """The kernel's range for ports it picks itself (outgoing connections, `bind(0)`)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32_768, 60_999  # Linux's default


def service_port_range() -> tuple[int, int]:
    """The ports `free_port` draws from: below the kernel's ephemeral range (or above it when
    that leaves too few), so no outgoing connection is ever given one as its local port."""
    low, high = ephemeral_port_range()
    if low - 1 >= _SERVICE_PORTS[0] + 1000:
        return _SERVICE_PORTS[0], min(_SERVICE_PORTS[1], low - 1)
    return high + 1, 65_535


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now, outside the ephemeral range.

    A port the kernel hands out for `bind(0)` is an ephemeral one, and while a service on it is
    stopped (a broker or database restarted by a test) any outgoing connection may get it as its
    local port; a client reconnecting to that very port may even connect to itself (TCP
    simultaneous open). Either way the restarted service cannot bind ("did not start"). Ports
    below the ephemeral range are never given to outgoing connections. Within one process a port
    is handed out once.
    """
    low, high = service_port_range()
    rng = random.SystemRandom()
    for _ in range(200):
        port = rng.randint(low, high)
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    raise OSError(f"no free TCP port on {host} in {low}-{high}")


def wait_for_port(host: str, port: int, *, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll until `host:port` accepts a TCP connection; False on timeout or when `alive()` turns False."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.02)
    return False

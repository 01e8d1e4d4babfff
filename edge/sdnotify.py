"""systemd's notification protocol, for the unit's ``Type=notify`` and ``WatchdogSec``.

systemd passes ``NOTIFY_SOCKET`` (a datagram socket; a leading ``@`` is the abstract namespace)
and, with a watchdog, ``WATCHDOG_USEC`` (and ``WATCHDOG_PID``, the process meant). The agent sends
``READY=1`` once its tasks run, ``WATCHDOG=1`` every half watchdog period while its loop turns and
its buffer writer keeps committing (a wedged writer or a blocked loop stops the pings, and systemd
restarts the agent), and ``STOPPING=1`` when it begins to shut down. Outside systemd (no
``NOTIFY_SOCKET``) nothing is sent. A failed send is logged once, never raised: the agent's work
does not depend on its supervisor's socket.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable, Mapping

from edge.logs import get_logger

log = get_logger("edge.sdnotify")


class Notifier:
    """Sends notifications to systemd when it asked for them (see the module docstring)."""

    def __init__(self, *, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        address = env.get("NOTIFY_SOCKET", "")
        self._address = "\0" + address[1:] if address.startswith("@") else address
        usec = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        meant_for_us = not pid or pid == str(os.getpid())
        #: seconds between watchdog pings (half systemd's period), None without a watchdog
        self.interval_s: float | None = (
            int(usec) / 2_000_000 if usec.isdigit() and int(usec) > 0 and meant_for_us else None
        )
        self._failed = False

    @property
    def enabled(self) -> bool:
        return bool(self._address)

    def notify(self, state: str) -> None:
        if not self._address:
            return
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
                sock.sendto(state.encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("sd_notify_failed", state=state, error=str(exc))

    async def watchdog(self, healthy: Callable[[], bool]) -> None:
        """Ping every `interval_s` while `healthy()`; returns at once without a watchdog."""
        if self.interval_s is None or not self._address:
            return
        while True:
            await asyncio.sleep(self.interval_s)
            if healthy():
                self.notify("WATCHDOG=1")

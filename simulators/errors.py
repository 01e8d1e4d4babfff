"""Exceptions of the `simulators` package.

SimulatorsError
├── ServiceError        a private broker or database could not be started or stopped
└── (more added by the simulator modules)
"""

from __future__ import annotations


class SimulatorsError(Exception):
    """Root of every exception this package raises."""


class ServiceError(SimulatorsError):
    """A private service (Mosquitto, PostgreSQL) failed to start, answer or stop.

    Attributes:
        service: which service (``"mosquitto"``, ``"postgres"``).
        log_tail: the last lines of the service's own log, when there is one.
    """

    def __init__(self, message: str, *, service: str, log_tail: str = "") -> None:
        super().__init__(message if not log_tail else f"{message}\n--- {service} log ---\n{log_tail}")
        self.service = service
        self.log_tail = log_tail

"""Exceptions of the `simulators` package.

SimulatorsError
├── ServiceError        a private broker or database could not be started or stopped
├── ConfigError         a fleet file, scenario file or option is invalid (names file and field)
│   ├── FleetError      a fleet cannot be generated or loaded
│   └── ScenarioError   a scenario is invalid or names devices the fleet lacks
├── OutputError         messages cannot be delivered (broker down or refusing, file unwritable)
└── DemoError           ``linli demo`` or ``linli bench e2e`` could not start one of its parts
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


class ConfigError(SimulatorsError):
    """A fleet file, scenario file or command-line option is invalid.

    Attributes:
        path: the offending file, or None for an option or an object built in memory.
        field: dotted location of the offending field or option ('' for the whole file).
        detail: what is wrong with it.
    """

    def __init__(self, path: str | None, field: str, detail: str) -> None:
        self.path = path
        self.field = field
        self.detail = detail
        where = ": ".join(part for part in (path, field) if part)
        super().__init__(f"{where}: {detail}" if where else detail)


class FleetError(ConfigError):
    """A fleet cannot be generated or loaded (bad fleet file, mix, or inventory)."""


class ScenarioError(ConfigError):
    """A scenario file is invalid, or names devices or gateways the fleet does not have."""


class OutputError(SimulatorsError):
    """Messages cannot be delivered: the broker is unreachable, refused us, or the file is unwritable.

    Attributes:
        target: the broker URL or file path.
    """

    def __init__(self, message: str, *, target: str) -> None:
        super().__init__(f"{target}: {message}")
        self.target = target


class DemoError(SimulatorsError):
    """The demo could not start one of its parts (the message says which, with its log)."""

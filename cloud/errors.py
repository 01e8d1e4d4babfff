"""Exceptions of the cloud side.

One root, everything below it::

    CloudError
    ├── ConfigError            the configuration is invalid; ``problems`` lists what, where
    ├── MigrationError         a migration failed, or an applied migration file was changed
    ├── StoreUnavailable       the database cannot be reached (the ingest waits and retries)
    ├── BatchRejected          the database refused the data itself (the batch is dead-lettered)
    ├── EnvelopeError          an uplink payload is not a valid envelope (it is dead-lettered)
    │   └── UnknownVersion     the envelope's ``v`` is not one this reader knows
    ├── PartitionError         an alert partition is not ``K/N`` with 0 <= K < N
    ├── FeedError              an ``alert_feed`` row does not decode
    ├── AlertRuleError         rule files are invalid; ``problems`` lists each with file, rule, key
    ├── DeviceNotFound         ``linli alerts explain`` names a device the registry does not know
    ├── IncidentNotFound       no incident has the id given
    └── TransitionRefused      a workflow action is not allowed now, to this person, or lacks a field

Lower-layer errors (``psycopg.Error``, ``msgspec.DecodeError``, ``pydantic.ValidationError``) are
translated where they are met, with ``raise ... from exc``.
"""

from __future__ import annotations

from device_profiles.config_view import ConfigProblems


class CloudError(Exception):
    """Root of every exception the cloud package raises."""


class ConfigError(ConfigProblems, CloudError):
    """The configuration is invalid: ``problems`` lists every problem found, not just the first."""


class MigrationError(CloudError):
    """A migration failed or the applied history does not match the files.

    Attributes:
        version: the migration at fault ('' when none in particular).
    """

    def __init__(self, version: str, detail: str) -> None:
        self.version = version
        super().__init__(f"migration {version}: {detail}" if version else detail)


class StoreUnavailable(CloudError):
    """The database cannot be reached or dropped the connection."""


class BatchRejected(CloudError):
    """The database refused the data of a transaction (a data exception or an integrity
    violation other than the claims the writer handles): retrying the same rows cannot succeed.

    Attributes:
        reason: the server's message, stored with the dead letter.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class EnvelopeError(CloudError):
    """A payload on an uplink topic is not a valid envelope.

    Attributes:
        reason: a short machine-friendly reason, stored in the dead-letter table.
    """

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class UnknownVersion(EnvelopeError):
    """The envelope's version is not one this reader knows.

    Attributes:
        version: the version found.
    """

    def __init__(self, version: object) -> None:
        self.version = version
        super().__init__(f"unknown envelope version {version!r}")


class PartitionError(CloudError):
    """An alert service partition is not ``K/N`` with 0 <= K < N.

    Attributes:
        value: the partition as given.
    """

    def __init__(self, value: str, detail: str) -> None:
        self.value = value
        super().__init__(f"partition {value!r}: {detail}")


class FeedError(CloudError):
    """An ``alert_feed`` row does not decode (its writer and its reader disagree on the format).

    Attributes:
        feed_seq: the row at fault.
    """

    def __init__(self, feed_seq: int, detail: str) -> None:
        self.feed_seq = feed_seq
        super().__init__(f"alert feed row {feed_seq}: {detail}")


class RuleProblem:
    """One thing wrong with the rule files: where (file, rule id, dotted key) and what."""

    __slots__ = ("detail", "file", "key", "rule")

    def __init__(self, *, file: str, rule: str, key: str, detail: str) -> None:
        self.file = file
        self.rule = rule
        self.key = key
        self.detail = detail

    def __str__(self) -> str:
        where = ": ".join(
            part for part in (self.file, f"rule {self.rule}" if self.rule else "", self.key) if part
        )
        return f"{where}: {self.detail}"

    def __repr__(self) -> str:
        return f"RuleProblem({self})"


class AlertRuleError(CloudError):
    """The rule files are invalid.

    Attributes:
        problems: every problem found (at least one), each with file, rule id and key.
    """

    def __init__(self, problems: list[RuleProblem]) -> None:
        self.problems = problems
        lines = "\n  ".join(str(p) for p in problems)
        super().__init__(f"{len(problems)} problem(s) in the alert rules:\n  {lines}")


class DeviceNotFound(CloudError):
    """The device registry (``devices``) has no such device."""

    def __init__(self, device_id: str) -> None:
        self.device_id = device_id
        super().__init__(f"no device {device_id!r} in the device registry")


class IncidentNotFound(CloudError):
    """No incident has this id."""

    def __init__(self, incident_id: int) -> None:
        self.incident_id = incident_id
        super().__init__(f"no incident {incident_id}")


class TransitionRefused(CloudError):
    """A workflow action is not allowed now, or not to this person, or lacks what it requires.

    Attributes:
        incident_id: the incident.
        action: the action refused (``accept``, ``dispatch``, ...).
        state: the incident's current state.
        allowed: the actions its current state allows.
        reason: what is wrong, for a person.
    """

    def __init__(
        self, *, incident_id: int, action: str, state: str, allowed: tuple[str, ...], reason: str
    ) -> None:
        self.incident_id = incident_id
        self.action = action
        self.state = state
        self.allowed = allowed
        self.reason = reason
        super().__init__(f"incident {incident_id}: cannot {action}: {reason}")

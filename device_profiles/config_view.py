"""The pydantic-free half of the configuration convention (`device_profiles.config_sources`).

What a running service reads off a validated configuration besides its plain keys (a broker's
host and port, the HTTP endpoint's address), and the problems a configuration can have. The
validating models in `config_sources` take these members as bases; so does a copy of them built
without pydantic (`edge.frozen`, what the edge agent runs on).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

Key = tuple[str, ...]


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One thing wrong with a configuration.

    Attributes:
        key: the dotted key at fault (``cloud.tls.client_cert``), '' for the whole file.
        detail: what is wrong with it.
        source: where the value came from: the file's path or the environment variable's name
            ('' when not known).
    """

    key: str
    detail: str
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}: " if self.source else ""
        return f"{where}{self.key}: {self.detail}" if self.key else f"{where}{self.detail}"


class ConfigProblems(Exception):
    """Base of the edge's and the cloud's ``ConfigError``: every problem found, not just the first.

    Attributes:
        problems: each problem, in the order found (at least one).
        key: the first problem's key ('' for the whole file).
        detail: the first problem's detail.
    """

    def __init__(self, key: str = "", detail: str = "", *, problems: Sequence[ConfigProblem] = ()) -> None:
        self.problems = tuple(problems) or (ConfigProblem(key, detail),)
        self.key = self.problems[0].key
        self.detail = self.problems[0].detail
        if len(self.problems) == 1:
            super().__init__(str(self.problems[0]))
        else:
            lines = "".join(f"\n  {p}" for p in self.problems)
            super().__init__(f"{len(self.problems)} problems in the configuration:{lines}")


class Secret:
    """A secret held without pydantic (as `pydantic.SecretStr` offers it): never in a repr."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


class BrokerAddress:
    """A broker section's address, read off its ``url`` and ``tls`` keys."""

    __slots__ = ()
    if TYPE_CHECKING:
        url: str
        tls: object | None

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        parts = urlsplit(self.url)
        return parts.port or (8883 if parts.scheme == "mqtts" else 1883)

    @property
    def uses_tls(self) -> bool:
        return urlsplit(self.url).scheme == "mqtts" or self.tls is not None


class HttpAddress:
    """The ``[http]`` section's ``address`` as host and port."""

    __slots__ = ()
    if TYPE_CHECKING:
        address: str

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.address.rpartition(":")
        return host.strip("[]"), int(port)

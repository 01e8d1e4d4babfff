"""`RandomStream`: scalar draws from the run's one numpy `Generator`, at list-indexing speed.

Behaviour models draw a few numbers per message. Asking numpy for one scalar at a time costs about
a microsecond each; drawing blocks and handing out Python floats costs a tenth of that. The stream
is deterministic: the same generator state gives the same sequence of draws.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")

_BLOCK = 4096


class RandomStream:
    """Buffered uniform and normal draws from `generator` (the run's only source of randomness)."""

    __slots__ = ("_gen", "_n", "_ni", "_normals", "_u", "_ui")

    def __init__(self, generator: np.random.Generator) -> None:
        self._gen = generator
        self._u: list[float] = []
        self._ui = 0
        self._normals: list[float] = []
        self._ni = 0
        self._n = 0

    @property
    def generator(self) -> np.random.Generator:
        return self._gen

    def random(self) -> float:
        """Uniform on [0, 1)."""
        i = self._ui
        if i >= len(self._u):
            self._u = self._gen.random(_BLOCK).tolist()
            i = 0
        self._ui = i + 1
        return self._u[i]

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.random()

    def normal(self, mean: float = 0.0, sigma: float = 1.0) -> float:
        i = self._ni
        if i >= len(self._normals):
            self._normals = self._gen.standard_normal(_BLOCK).tolist()
            i = 0
        self._ni = i + 1
        return mean + sigma * self._normals[i]

    def exponential(self, mean: float) -> float:
        return -mean * math.log(1.0 - self.random())

    def poisson(self, lam: float) -> int:
        """Knuth's method: fine for the small rates behaviour models use (lam < 30)."""
        limit = math.exp(-lam)
        k = 0
        p = self.random()
        while p > limit:
            k += 1
            p *= self.random()
        return k

    def integer(self, low: int, high: int) -> int:
        """Uniform integer in [low, high)."""
        return low + min(int(self.random() * (high - low)), high - low - 1)

    def chance(self, probability: float) -> bool:
        return self.random() < probability

    def choice(self, items: Sequence[T]) -> T:
        return items[self.integer(0, len(items))]

    def hexdigits(self, count: int) -> str:
        """`count` random lowercase hex digits."""
        value = int(self._gen.integers(0, 1 << 62)) << 62 | int(self._gen.integers(0, 1 << 62))
        return f"{value:031x}"[-count:] if count <= 31 else f"{value:031x}{self.hexdigits(count - 31)}"

    def digits(self, count: int) -> str:
        """`count` random decimal digits."""
        return "".join(str(self.integer(0, 10)) for _ in range(count))

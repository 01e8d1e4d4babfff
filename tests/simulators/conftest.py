"""Shared helpers for the simulator tests: small seeded fleets and runs collected in memory."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
import numpy as np
import pytest

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from simulators.faults import FaultOptions
from simulators.fleet import generate_fleet
from simulators.message import Emission, Note
from simulators.rand import RandomStream
from simulators.scenarios import Scenario
from simulators.simulation import Simulation

START = datetime(2025, 6, 1, tzinfo=UTC)  # 08:00 in Shanghai
HOUR_MS = 3_600_000


@dataclass
class Run:
    sim: Simulation
    inventory: Inventory
    emissions: list[Emission] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)

    def conditions(self, name: str) -> list[dict[str, Any]]:
        return [n for n in self.notes if n.get("kind") == "condition" and n["condition"] == name]

    def carrying(self, condition_id: str) -> list[Emission]:
        return [e for e in self.emissions if condition_id in e.conditions]


#: The default mix with every device type the shipped profiles cover.
EVERY_TYPE: dict[str, float] = {
    "door_contact": 40,
    "sos_button": 20,
    "manhole_cover": 10,
    "streetlight": 30,
    "environment_sensor": 4,
    "smoke_detector": 3,
    "water_leak_sensor": 3,
}


def simulate(
    *,
    devices: int = 200,
    hours: float = 24,
    seed: int = 7,
    scenarios: Sequence[Scenario] = (),
    faults: FaultOptions | None = None,
    mix: dict[str, float] | None = None,
) -> Run:
    profiles = ProfileSet.shipped()
    rs = RandomStream(np.random.default_rng(seed))
    inventory = generate_fleet(devices=devices, rs=rs, profiles=profiles, mix=mix)
    sim = Simulation(
        inventory=inventory,
        start=START,
        seed=seed,
        profiles=profiles,
        scenarios=scenarios,
        faults=faults,
        rs=rs,
    )
    run = Run(sim=sim, inventory=inventory)
    for item in sim.run(until_ms=sim.start_ms + round(hours * HOUR_MS)):
        if isinstance(item, Emission):
            run.emissions.append(item)
        else:
            assert isinstance(item, Note)
            run.notes.append(msgspec.to_builtins(item.record))  # as read back from the file
    run.emissions.extend(sim.flush_held())
    return run


@pytest.fixture(scope="session")
def profiles() -> ProfileSet:
    return ProfileSet.shipped()

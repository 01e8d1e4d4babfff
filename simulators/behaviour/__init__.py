"""Behaviour models: what each device type does over simulated time (numpy-seeded, deterministic)."""

from simulators.behaviour.base import REPORT_NOW, Behaviour, Context, Sample, SimDevice, Tag
from simulators.behaviour.door import DoorBehaviour
from simulators.behaviour.environment import EnvironmentBehaviour, LeakBehaviour, SmokeBehaviour
from simulators.behaviour.manhole import ManholeBehaviour
from simulators.behaviour.sos import SosBehaviour
from simulators.behaviour.streetlight import StreetlightBehaviour

#: Behaviour model per device type.
MODELS: dict[str, type[Behaviour]] = {
    "door_contact": DoorBehaviour,
    "sos_button": SosBehaviour,
    "manhole_cover": ManholeBehaviour,
    "streetlight": StreetlightBehaviour,
    "environment_sensor": EnvironmentBehaviour,
    "smoke_detector": SmokeBehaviour,
    "water_leak_sensor": LeakBehaviour,
}

__all__ = [
    "MODELS",
    "REPORT_NOW",
    "Behaviour",
    "Context",
    "DoorBehaviour",
    "EnvironmentBehaviour",
    "LeakBehaviour",
    "ManholeBehaviour",
    "Sample",
    "SimDevice",
    "SmokeBehaviour",
    "SosBehaviour",
    "StreetlightBehaviour",
    "Tag",
]

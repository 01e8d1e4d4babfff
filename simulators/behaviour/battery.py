"""Batteries and radios: starting charge, drain per message, signal strength per device.

A battery device starts between 35 and 100 % (a few start nearly flat) and loses a fixed share per
message, sized so a full battery lasts 1.5 to 3 years at the device's report interval. Mains
powered device types (streetlights) have no battery.
"""

from __future__ import annotations

from typing import Final

from simulators.behaviour.base import SimDevice
from simulators.rand import RandomStream

MAINS_POWERED: Final = frozenset({"streetlight"})
LOW_BATTERY_PCT: Final = 15.0
MS_PER_YEAR: Final = 365 * 86_400_000


def init_power_and_radio(dev: SimDevice, rs: RandomStream) -> None:
    """Draw the device's battery, drain rate, and radio (RSSI dBm, Zigbee LQI) baselines."""
    if dev.device.device_type not in MAINS_POWERED:
        dev.battery = rs.uniform(8.0, 25.0) if rs.chance(0.04) else rs.uniform(35.0, 100.0)
        lifetime_ms = rs.uniform(1.5, 3.0) * MS_PER_YEAR
        dev.drain = 100.0 / (lifetime_ms / max(dev.interval_ms, 60_000))
        # False even for a battery that starts under LOW_BATTERY_PCT: its first report then writes
        # the battery_low condition, which a pipeline's battery rule detects (no condition-less alert).
        dev.battery_low = False
    dev.path_loss = round(rs.uniform(70.0, 112.0))
    dev.lqi = round(rs.uniform(60.0, 220.0))


def drain(dev: SimDevice, t_ms: int) -> float | None:
    """Take one message's charge; returns the new level (None for mains power). A battery with a
    ``discharge`` (scenario ``battery_draining``) follows it from its start instead."""
    level = dev.battery
    if level is None:
        return None
    discharge = dev.discharge
    if discharge is not None and t_ms >= discharge[0]:
        level = max(1.0, discharge[1] - (t_ms - discharge[0]) * discharge[2])
    else:
        level = max(1.0, level - dev.drain)
    dev.battery = level
    return level

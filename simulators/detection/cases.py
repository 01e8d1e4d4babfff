"""The bench's fleet and the conditions it injects, drawn from one seed.

Per community: residents living alone with a door contact, streetlights and manhole covers. Into
that fleet go the slow conditions the detectors should catch, each at a random moment after the
first `warmup_days` (the detectors' cold start), recorded in the ground truth with its onset:

- ``resident_inactive``: a resident stops opening the door at a random hour, for 36 hours (long
  enough for the fixed 12-hour rule to fire too, so the lead over it is measured);
- ``lamp_degrading``: a lamp's power at full output falls to 40 % over 10 to 25 days, then fails;
- ``battery_draining``: a battery runs flat by a straight line, reaching empty between day 20
  and the end of the run;
- ``radio_fading``: a device loses more and more messages over 2 to 4 days, then goes silent.

Rain, with covers overflowing now and then, is the manhole model's own weather.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from device_profiles import ProfileSet
from device_profiles.inventory import Inventory
from simulators.fleet import CommunitySpec, FleetSpec, fleet_from_spec
from simulators.rand import RandomStream
from simulators.scenarios import Scenario

START = datetime(2026, 3, 2, tzinfo=UTC)


def fleet(
    *, rs: RandomStream, profiles: ProfileSet, communities: int, residents: int, lamps: int, covers: int
) -> Inventory:
    """`residents` living alone (door contacts), `lamps` and `covers`, over `communities`."""
    specs = []
    for i in range(communities):
        share = [residents, lamps, covers]
        counts = [n // communities + (1 if i < n % communities else 0) for n in share]
        specs.append(
            CommunitySpec(
                id=f"c{i + 1:03d}",
                lat=round(31.23 + rs.uniform(-0.07, 0.07), 6),
                lon=round(121.47 + rs.uniform(-0.08, 0.08), 6),
                devices={"door_contact": counts[0], "streetlight": counts[1], "manhole_cover": counts[2]},
                living_alone_share=1.0,
                profiles={"door_contact": ["generic_lorawan/door_contact"]},
            )
        )
    return fleet_from_spec(FleetSpec(communities=specs), rs=rs, profiles=profiles)


def scenario(
    inventory: Inventory,
    *,
    rs: RandomStream,
    days: int,
    warmup_days: int,
    inactive: int,
    degrading: int,
    draining: int,
    fading: int,
) -> Scenario:
    """The injected conditions, on distinct devices."""
    by_type: dict[str, list[str]] = {}
    for d in inventory:
        by_type.setdefault(d.device_type, []).append(d.device_id)
    taken: set[str] = set()

    def pick(device_type: str) -> str:
        free = [x for x in by_type.get(device_type, []) if x not in taken]
        if not free:
            raise ValueError(f"not enough {device_type} devices for the cases asked")
        chosen = free[rs.integer(0, len(free))]
        taken.add(chosen)
        return chosen

    def at(day_from: float, day_to: float) -> str:
        return (START + timedelta(days=rs.uniform(day_from, day_to))).isoformat()

    events: list[dict[str, Any]] = []
    for _ in range(inactive):  # leave room for the 36 hours and the fixed rule
        when = at(warmup_days, days - 2)
        events.append({"type": "resident_inactive", "device": pick("door_contact"), "at": when, "hours": 36})
    for _ in range(degrading):
        span = rs.uniform(10.0, 25.0)
        events.append(
            {
                "type": "lamp_degrading",
                "device": pick("streetlight"),
                "at": at(7, max(8.0, days - span - 1)),
                "days": round(span, 2),
                "failed_for": "3d",
            }
        )
    for _ in range(draining):
        level = rs.uniform(20.0, 60.0)
        empty_day = rs.uniform(20.0, days - 1.0)
        device_type = "door_contact" if rs.chance(0.7) else "manhole_cover"
        events.append(
            {
                "type": "battery_draining",
                "device": pick(device_type),
                "device_type": device_type,
                "at": START.isoformat(),
                "from_pct": round(level, 2),
                "days": round(empty_day, 3),
            }
        )
    for _ in range(fading):
        device_type = "door_contact" if rs.chance(0.6) else "manhole_cover"
        events.append(
            {
                "type": "radio_fading",
                "device": pick(device_type),
                "device_type": device_type,
                "at": at(warmup_days, days - 5),
                "ramp": f"{rs.uniform(2.0, 4.0):.2f}d",
                "silent_for": "1d",
            }
        )
    return Scenario.model_validate({"name": "detect-bench", "events": events})

"""The `Directory` the rules see: devices from the inventory, report intervals from the profiles.

Communities are placed at the mean position of their devices (the sun rises there) and share the
configured time zone. Devices the inventory does not list still get their events and thresholds
evaluated (every reading names its device type and profile); the inventory adds what a reading
cannot: residents, locations, and devices that were never heard at all.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from cloud.alerts.model import Community, DeviceInfo, Directory
from cloud.config import AlertsConfig
from cloud.errors import ConfigError
from device_profiles import DEFAULT_REPORT_INTERVAL_S, SHIPPED_DIR, ProfileSet
from device_profiles.config_view import ConfigProblem
from device_profiles.errors import DeviceProfilesError
from device_profiles.inventory import Inventory

#: Report interval of a profile nobody declared (seconds).
FALLBACK_INTERVAL_S = 3600.0


def build_directory(
    *, inventory: Inventory | None, profiles: ProfileSet, timezone: str = "Asia/Shanghai"
) -> Directory:
    """The directory of `inventory` (None: devices are known only once they report)."""
    intervals = {pid: float(p.expected_interval_s) for pid, p in profiles.profiles.items()}
    devices: dict[str, DeviceInfo] = {}
    places: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for d in inventory or ():
        loc = d.location
        devices[d.device_id] = DeviceInfo(
            device_id=d.device_id,
            device_type=d.device_type,
            profile=d.profile,
            community_id=d.community_id,
            gateway_id=d.gateway_id,
            report_interval_s=intervals.get(
                d.profile, DEFAULT_REPORT_INTERVAL_S.get(d.device_type, FALLBACK_INTERVAL_S)
            ),
            lat=loc.lat,
            lon=loc.lon,
            resident_id=d.resident_id,
            living_alone=bool(d.living_alone),
            building=loc.building,
            unit=loc.unit,
            room=loc.room,
        )
        places[d.community_id].append((loc.lat, loc.lon))
    communities = {
        cid: Community(
            community_id=cid,
            lat=sum(p[0] for p in pts) / len(pts),
            lon=sum(p[1] for p in pts) / len(pts),
            timezone=timezone,
        )
        for cid, pts in places.items()
    }
    return Directory(
        devices=devices,
        communities=communities,
        profile_intervals=intervals,
        default_timezone=timezone,
        profile_commands={
            pid: {name: spec.confirm for name, spec in p.commands.items()}
            for pid, p in profiles.profiles.items()
            if p.commands
        },
    )


def load_directory(config: AlertsConfig) -> Directory:
    """`build_directory` from the ``[alerts]`` section's inventory and profiles; raises `ConfigError`."""
    try:
        profiles = ProfileSet.load(SHIPPED_DIR, *config.profiles)
        inventory = Inventory.load(config.inventory, profiles=profiles) if config.inventory else None
    except DeviceProfilesError as exc:
        raise ConfigError(problems=[ConfigProblem("alerts", str(exc), _where(config))]) from exc
    return build_directory(inventory=inventory, profiles=profiles, timezone=config.timezone)


def _where(config: AlertsConfig) -> str:
    return str(config.inventory or Path("<profiles>"))

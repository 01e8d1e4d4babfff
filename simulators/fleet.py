"""Fleets: generated from a size and a mix, or described community by community in a fleet file.

    inventory = generate_fleet(devices=1000, mix=parse_mix("door_contact=40,sos_button=20"),
                               rs=RandomStream(np.random.default_rng(7)), profiles=ProfileSet.shipped())

A generated fleet has one community per 1,000 devices around a centre (Shanghai by default), one
gateway per 250 devices of a community, buildings of 24 flats, and households: each door contact
is a household's front door, SOS buttons go to households with residents living alone first.
Dialects are spread over the shipped profiles of each device type.

A fleet file (YAML) lists communities explicitly (see docs/simulators.md)::

    communities:
      - id: xinhua
        lat: 31.2154
        lon: 121.4371
        devices: {door_contact: 40, sos_button: 20, manhole_cover: 10, streetlight: 30}

`load_fleet` also accepts an inventory file, replayed as is.
"""

from __future__ import annotations

import math
import re
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Final

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from device_profiles import Profile, ProfileSet
from device_profiles.inventory import Device, Inventory, InventoryError, Location
from simulators.errors import FleetError
from simulators.rand import RandomStream

DEFAULT_MIX: Final = {"door_contact": 40.0, "sos_button": 20.0, "manhole_cover": 10.0, "streetlight": 30.0}
#: Shanghai, People's Square.
DEFAULT_CENTER: Final = (31.2304, 121.4737)
DEVICES_PER_COMMUNITY: Final = 1000
DEVICES_PER_GATEWAY: Final = 250
FLATS_PER_BUILDING: Final = 24
HOME_TYPES: Final = ("door_contact", "sos_button")


def parse_mix(text: str) -> dict[str, float]:
    """``door_contact=40,sos_button=20`` -> weights by device type (any positive numbers)."""
    mix: dict[str, float] = {}
    for part in text.split(","):
        name, sep, value = part.strip().partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not re.fullmatch(r"[a-z][a-z0-9_]*", name.strip()) or not weight >= 0:
            raise FleetError(None, "mix", f"{part.strip()!r} is not TYPE=WEIGHT (door_contact=40)")
        mix[name.strip()] = weight
    if not sum(mix.values()) > 0:
        raise FleetError(None, "mix", "the weights add up to zero")
    return mix


def split_counts(total: int, weights: Mapping[str, float]) -> dict[str, int]:
    """Split `total` by `weights` with the largest-remainder method (exact total, stable order)."""
    weight_sum = sum(weights.values())
    exact = {k: total * w / weight_sum for k, w in weights.items()}
    counts = {k: math.floor(v) for k, v in exact.items()}
    short = total - sum(counts.values())
    for k in sorted(exact, key=lambda k: (counts[k] - exact[k], list(exact).index(k)))[:short]:
        counts[k] += 1
    return counts


class CommunitySpec(BaseModel):
    """One community of a fleet file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$", max_length=64)
    lat: float = Field(ge=-90, le=90)
    lon: float = Field(ge=-180, le=180)
    devices: dict[Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]*$")], Annotated[int, Field(ge=0)]]
    gateways: int | None = Field(default=None, ge=1)
    living_alone_share: float = Field(default=0.35, ge=0, le=1)
    #: restrict a device type to some profiles (default: every profile of the type).
    profiles: dict[str, list[str]] = Field(default_factory=dict)


class FleetSpec(BaseModel):
    """A fleet file: communities and what is installed in each."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    communities: list[CommunitySpec] = Field(min_length=1)

    @field_validator("communities")
    @classmethod
    def _unique(cls, value: list[CommunitySpec]) -> list[CommunitySpec]:
        ids = [c.id for c in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"community ids must be unique: {', '.join(dupes)}")
        return value


def generate_fleet(
    *,
    devices: int,
    rs: RandomStream,
    profiles: ProfileSet,
    mix: Mapping[str, float] | None = None,
    communities: int | None = None,
    center: tuple[float, float] = DEFAULT_CENTER,
    living_alone_share: float = 0.35,
) -> Inventory:
    """A fleet of `devices` devices split by `mix`, in communities around `center`."""
    if devices < 1:
        raise FleetError(None, "devices", f"must be at least 1, got {devices}")
    weights = dict(mix or DEFAULT_MIX)
    n_communities = communities or max(1, math.ceil(devices / DEVICES_PER_COMMUNITY))
    width = max(3, len(str(n_communities)))
    specs: list[CommunitySpec] = []
    by_type = split_counts(devices, weights)
    shares = {str(i): 1.0 for i in range(n_communities)}
    per_type = {t: split_counts(n, shares) for t, n in by_type.items()}
    for i in range(n_communities):
        lat = center[0] + (rs.uniform(-0.07, 0.07) if n_communities > 1 else 0.0)
        lon = center[1] + (rs.uniform(-0.08, 0.08) if n_communities > 1 else 0.0)
        specs.append(
            CommunitySpec(
                id=f"c{i + 1:0{width}d}",
                lat=round(lat, 6),
                lon=round(lon, 6),
                devices={t: counts[str(i)] for t, counts in per_type.items()},
                living_alone_share=living_alone_share,
            )
        )
    return fleet_from_spec(FleetSpec(communities=specs), rs=rs, profiles=profiles)


def fleet_from_spec(
    spec: FleetSpec, *, rs: RandomStream, profiles: ProfileSet, path: str | None = None
) -> Inventory:
    """Lay out the devices of each community of `spec` (households, buildings, gateways, ids)."""
    by_type: dict[str, list[Profile]] = {}
    for profile in sorted(profiles.profiles.values(), key=lambda p: p.id):
        by_type.setdefault(profile.device_type, []).append(profile)
    used: set[str] = set()
    out: list[Device] = []
    for ci, community in enumerate(spec.communities):
        where = f"communities[{ci}]"
        choices: dict[str, list[Profile]] = {}
        for device_type, count in community.devices.items():
            if count == 0:
                continue
            available = by_type.get(device_type)
            if not available:
                known = ", ".join(sorted(by_type))
                raise FleetError(
                    path, f"{where}.devices.{device_type}", f"no loaded profile is for it ({known})"
                )
            wanted = community.profiles.get(device_type)
            if wanted is not None:
                unknown = [p for p in wanted if p not in {x.id for x in available}]
                if unknown or not wanted:
                    raise FleetError(
                        path,
                        f"{where}.profiles.{device_type}",
                        f"not {device_type} profiles: {unknown or '(empty)'}",
                    )
                available = [p for p in available if p.id in wanted]
            choices[device_type] = available
        out.extend(_community(community, choices, rs, used))
    return Inventory(out)


def _community(
    spec: CommunitySpec, choices: Mapping[str, list[Profile]], rs: RandomStream, used: set[str]
) -> list[Device]:
    total = sum(spec.devices.values())
    n_gateways = spec.gateways or max(1, math.ceil(total / DEVICES_PER_GATEWAY))
    gateways = [f"{spec.id}-gw{g + 1}" for g in range(n_gateways)]
    doors = spec.devices.get("door_contact", 0)
    buttons = spec.devices.get("sos_button", 0)
    households = max(doors, buttons)
    alone = [rs.chance(spec.living_alone_share) for _ in range(households)]
    buildings = max(1, math.ceil(households / FLATS_PER_BUILDING))
    # SOS buttons go to residents living alone first, then to the others.
    sos_homes = sorted(range(households), key=lambda h: (not alone[h], h))[:buttons]
    homes: dict[str, list[int]] = {"door_contact": list(range(doors)), "sos_button": sorted(sos_homes)}
    devices: list[Device] = []
    n = 0
    for device_type, count in spec.devices.items():
        for k in range(count):
            profile = rs.choice(choices[device_type])
            device_id = _device_id(profile, rs, used)
            gateway = gateways[n % n_gateways]
            n += 1
            if device_type in HOME_TYPES:
                h = homes[device_type][k]
                building, unit, room = _flat(h, buildings)
                gateway = gateways[(building - 1) % n_gateways]  # one gateway hears a whole building
                location = Location(
                    lat=round(spec.lat + (building - 1) % 5 * 0.0006, 6),
                    lon=round(spec.lon + (building - 1) // 5 * 0.0007, 6),
                    building=sys.intern(str(building)),
                    unit=sys.intern(str(unit)),
                    room=sys.intern(room),
                )
                extra: dict[str, object] = {
                    "resident_id": f"{spec.id}-r{h + 1:04d}",
                    "living_alone": alone[h],
                }
            else:
                location = Location(
                    lat=round(spec.lat + rs.uniform(-0.004, 0.004), 6),
                    lon=round(spec.lon + rs.uniform(-0.004, 0.004), 6),
                )
                extra = {}
            devices.append(
                Device(
                    device_id=device_id,
                    device_type=device_type,
                    profile=profile.id,
                    community_id=spec.id,
                    gateway_id=gateway,
                    location=location,
                    **extra,  # type: ignore[arg-type]
                )
            )
    return devices


def _flat(household: int, buildings: int) -> tuple[int, int, str]:
    """Building, unit and room of a household: 2 units of 6 floors with 2 flats each per building."""
    building = household % buildings + 1
    k = household // buildings
    unit = k % 2 + 1
    j = k // 2
    return building, unit, f"{j % 6 + 1}{j // 6 + 1:02d}"


_ID_SHAPES: Final[tuple[Callable[[RandomStream], str], ...]] = (
    lambda rs: rs.hexdigits(16),  # LoRaWAN DevEUI
    lambda rs: "86" + rs.digits(13),  # NB-IoT IMEI
    lambda rs: "0x00158d" + rs.hexdigits(10),  # Zigbee IEEE address as friendly name
)


def _device_id(profile: Profile, rs: RandomStream, used: set[str]) -> str:
    spec = profile.device_id
    pattern = re.compile(spec.pattern) if spec.pattern else None
    shapes = _ID_SHAPES if pattern is not None else _ID_SHAPES[2:]
    for _ in range(100):
        for shape in shapes:
            value = shape(rs)
            value = (
                value.lower() if spec.case == "lower" else value.upper() if spec.case == "upper" else value
            )
            if (pattern is None or pattern.fullmatch(value)) and value not in used:
                used.add(value)
                return value
    raise FleetError(None, "profile", f"{profile.id}: cannot make up device ids matching {spec.pattern!r}")


def load_fleet(path: str | Path, *, rs: RandomStream, profiles: ProfileSet) -> Inventory:
    """A fleet file (``communities:``) laid out with `rs`, or an inventory file (``devices:``) as is."""
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise FleetError(str(file), "", f"cannot read: {exc.strerror or exc}") from exc
    if file.suffix.lower() == ".json" or re.search(r"^devices\s*:", text, re.MULTILINE):
        try:
            return Inventory.load(file, profiles=profiles)
        except InventoryError as exc:
            raise FleetError(str(file), exc.entry, exc.detail) from exc
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FleetError(str(file), "", f"not valid YAML: {exc}") from exc
    try:
        spec = FleetSpec.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"])
        raise FleetError(str(file), field, first["msg"]) from exc
    return fleet_from_spec(spec, rs=rs, profiles=profiles, path=str(file))

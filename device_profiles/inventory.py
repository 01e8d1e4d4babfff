"""The device inventory: which devices exist, what speaks for them, where they are, whom they watch over.

The simulators write it (``linli sim --inventory inventory.yaml``), edge agents load it to pick each
device's profile (`Inventory.device_profile_map`, `Inventory.for_gateway`) and the cloud loads it to
know communities, gateways and residents. The format is documented in docs/simulators.md::

    version: 1
    devices:
      - device_id: "0x00158d0001a2b3c4"
        device_type: door_contact
        profile: aqara/mccgq11lm
        community_id: c01
        gateway_id: c01-gw1
        location: {lat: 31.2304, lon: 121.4737, building: "3", unit: "2", room: "401"}
        resident_id: c01-r0007
        living_alone: true

YAML is the canonical format; the same document as JSON (a ``.json`` file) is accepted everywhere and
loads much faster for large fleets. Everything is checked once, at load, and an error names the file
and the entry (``devices[12] (0x00158d...)``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final

import msgspec
import msgspec.yaml

from device_profiles.errors import DeviceProfilesError

if TYPE_CHECKING:
    from device_profiles.engine import ProfileSet

#: The format version this module reads and writes.
INVENTORY_VERSION: Final = 1

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
_Name = Annotated[str, msgspec.Meta(pattern=r"^[a-z][a-z0-9_]*$", max_length=64)]
_Label = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
_ENTRY = re.compile(r"^\$\.devices\[(\d+)\](.*)$")


class InventoryError(DeviceProfilesError):
    """An inventory file is unreadable or invalid.

    Attributes:
        path: the file (None for an inventory built in memory).
        entry: which entry, e.g. ``devices[12] (0x00158d0001a2b3c4)`` ('' for the whole file).
        detail: what is wrong.
    """

    def __init__(self, path: Path | None, entry: str, detail: str) -> None:
        self.path = path
        self.entry = entry
        self.detail = detail
        where = str(path) if path is not None else "<inventory>"
        super().__init__(f"{where}: {entry}: {detail}" if entry else f"{where}: {detail}")


class Location(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """Where a device is: WGS 84 coordinates, and the flat for devices inside a home."""

    lat: Annotated[float, msgspec.Meta(ge=-90, le=90)]
    lon: Annotated[float, msgspec.Meta(ge=-180, le=180)]
    building: _Label | None = None
    unit: _Label | None = None
    room: _Label | None = None


class Device(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """One installed device.

    Attributes:
        device_id: the id its dialect carries (Zigbee friendly name, DevEUI in lowercase hex, IMEI).
        device_type: ``door_contact``, ``sos_button``, ``manhole_cover``, ``streetlight`` or another
            type a profile declares.
        profile: id of the profile that decodes it (``generic_lorawan/door_contact``).
        community_id: the residential community it belongs to.
        gateway_id: the gateway (field broker and edge agent) that hears it.
        location: coordinates, and building/unit/room for devices in a home.
        resident_id: the resident a door contact or SOS button watches over, if any.
        living_alone: whether that resident lives alone; given exactly when `resident_id` is.
    """

    device_id: _Id
    device_type: _Name
    profile: _Id
    community_id: _Id
    gateway_id: _Id
    location: Location
    resident_id: _Id | None = None
    living_alone: bool | None = None


class _File(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    version: int
    devices: tuple[Device, ...] = ()


def _shared_strings(devices: tuple[Device, ...]) -> tuple[Device, ...]:
    """The devices with one string object per distinct type, profile, community and gateway.

    A decoder makes a new string for every value it reads, and these four repeat on every device:
    sharing them saves about 250 bytes per device (2.5 MB of a gateway's 10,000-device inventory).
    """
    shared: dict[str, str] = {}
    one = shared.setdefault
    return tuple(
        msgspec.structs.replace(
            d,
            device_type=one(d.device_type, d.device_type),
            profile=one(d.profile, d.profile),
            community_id=one(d.community_id, d.community_id),
            gateway_id=one(d.gateway_id, d.gateway_id),
        )
        for d in devices
    )


class Inventory:
    """An immutable, validated list of devices with lookups by device id and gateway.

    Args:
        devices: the devices; ids must be unique.
        path: the file it came from, used in error messages.
    """

    __slots__ = ("_by_id", "_devices", "_path")

    def __init__(self, devices: Iterable[Device] = (), *, path: Path | None = None) -> None:
        self._devices = tuple(devices)
        self._path = path
        by_id: dict[str, Device] = {}
        for i, device in enumerate(self._devices):
            if device.device_id in by_id:
                first = next(j for j, d in enumerate(self._devices) if d.device_id == device.device_id)
                raise InventoryError(
                    path, _entry(i, device.device_id), f"duplicate device_id (also devices[{first}])"
                )
            if (device.resident_id is None) != (device.living_alone is None):
                raise InventoryError(
                    path,
                    _entry(i, device.device_id),
                    "give `living_alone` exactly when `resident_id` is given",
                )
            by_id[device.device_id] = device
        self._by_id = by_id

    # -- files ---------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, profiles: ProfileSet | None = None) -> Inventory:
        """Read and validate an inventory file (``.yaml``/``.yml``, or ``.json``).

        With `profiles`, also check that every device's profile is loaded and is for its type.
        Raises `InventoryError` naming the file and the entry at fault.
        """
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise InventoryError(file, "", f"cannot read: {exc.strerror or exc}") from exc
        is_json = _is_json(file)
        try:
            parsed = (
                msgspec.json.decode(data, type=_File) if is_json else msgspec.yaml.decode(data, type=_File)
            )
        except msgspec.ValidationError as exc:
            raise _explain(file, data, is_json, str(exc)) from None
        except msgspec.DecodeError as exc:
            raise InventoryError(file, "", f"not valid {'JSON' if is_json else 'YAML'}: {exc}") from None
        if parsed.version != INVENTORY_VERSION:
            raise InventoryError(
                file, "version", f"unsupported version {parsed.version} (this is {INVENTORY_VERSION})"
            )
        inventory = cls(_shared_strings(parsed.devices), path=file)
        if profiles is not None:
            inventory.check_profiles(profiles)
        return inventory

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Write the inventory (YAML, or JSON for a ``.json`` path), atomically."""
        file = Path(path)
        doc = _File(version=INVENTORY_VERSION, devices=self._devices)
        data = _json(doc) if _is_json(file) else _yaml(doc)
        tmp = file.with_name(f".{file.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(file)

    def check_profiles(self, profiles: ProfileSet) -> None:
        """Raise `InventoryError` unless every device's profile is loaded and is for its device type."""
        problems = self.profile_problems(profiles)
        if problems:
            raise problems[0]

    def profile_problems(
        self, profiles: ProfileSet, *, gateway_id: str | None = None
    ) -> list[InventoryError]:
        """Every device (of `gateway_id`, or all) whose profile is not loaded or is for another
        device type; each error names the file, the entry and, for a type, both types."""
        problems = []
        for i, device in enumerate(self._devices):
            if gateway_id is not None and device.gateway_id != gateway_id:
                continue
            profile = profiles.profiles.get(device.profile)
            if profile is None:
                problems.append(
                    InventoryError(
                        self._path, _entry(i, device.device_id), f"unknown profile {device.profile!r}"
                    )
                )
            elif profile.device_type != device.device_type:
                problems.append(
                    InventoryError(
                        self._path,
                        _entry(i, device.device_id),
                        f"profile {device.profile!r} is for {profile.device_type}, "
                        f"the device is a {device.device_type}",
                    )
                )
        return problems

    # -- lookups -------------------------------------------------------------------------------

    @property
    def devices(self) -> tuple[Device, ...]:
        return self._devices

    @property
    def path(self) -> Path | None:
        return self._path

    def get(self, device_id: str) -> Device | None:
        return self._by_id.get(device_id)

    def __getitem__(self, device_id: str) -> Device:
        return self._by_id[device_id]

    def __contains__(self, device_id: object) -> bool:
        return device_id in self._by_id

    def __len__(self) -> int:
        return len(self._devices)

    def __iter__(self) -> Iterator[Device]:
        return iter(self._devices)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Inventory) and self._devices == other._devices

    def __hash__(self) -> int:
        return hash(self._devices)

    def __repr__(self) -> str:
        return f"Inventory({len(self._devices)} devices{f', path={str(self._path)!r}' if self._path else ''})"

    def device_profile_map(self) -> dict[str, str]:
        """device id -> profile id, for `ProfileSet.with_device_map`."""
        return {d.device_id: d.profile for d in self._devices}

    def gateways(self) -> list[str]:
        """Gateway ids, in order of first appearance."""
        return list(dict.fromkeys(d.gateway_id for d in self._devices))

    def communities(self) -> list[str]:
        """Community ids, in order of first appearance."""
        return list(dict.fromkeys(d.community_id for d in self._devices))

    def for_gateway(self, gateway_id: str) -> Inventory:
        """The devices one gateway hears (what its edge agent loads)."""
        return Inventory((d for d in self._devices if d.gateway_id == gateway_id), path=self._path)

    def by_type(self) -> Mapping[str, list[Device]]:
        """Devices grouped by device type, in inventory order."""
        groups: dict[str, list[Device]] = {}
        for d in self._devices:
            groups.setdefault(d.device_type, []).append(d)
        return groups


def file_stamp(path: Path) -> tuple[int, int, int]:
    """(inode, size, mtime in ns) of a file, (0, -1, 0) when it cannot be read: what changes when
    the file is replaced (an atomic write) or edited, so readers can reload it."""
    try:
        st = path.stat()
    except OSError:
        return (0, -1, 0)
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _is_json(path: Path) -> bool:
    return path.suffix.lower() == ".json"


def _entry(index: int, device_id: str | None) -> str:
    return f"devices[{index}] ({device_id})" if device_id else f"devices[{index}]"


def _explain(path: Path, data: bytes, is_json: bool, message: str) -> InventoryError:
    """Turn msgspec's ``... - at `$.devices[3].location.lat``` into an error naming the entry."""
    detail, _, where = message.rpartition(" - at `")
    where = where.rstrip("`")
    if not detail:
        return InventoryError(path, "", message)
    match = _ENTRY.match(where)
    if match is None:
        return InventoryError(path, where.removeprefix("$.") or "", detail)
    index = int(match.group(1))
    device_id: str | None = None
    try:
        raw: Any = msgspec.json.decode(data) if is_json else msgspec.yaml.decode(data)
        candidate = raw["devices"][index].get("device_id")
        device_id = candidate if isinstance(candidate, str) else None
    except (msgspec.DecodeError, KeyError, IndexError, TypeError, AttributeError):
        device_id = None
    field = match.group(2).lstrip(".")
    entry = _entry(index, device_id) + (f".{field}" if field else "")
    return InventoryError(path, entry, detail)


def _yaml(doc: _File) -> bytes:
    """YAML with one flow-style mapping per location: compact and diff-friendly."""
    lines = [f"version: {doc.version}", "devices:" if doc.devices else "devices: []"]
    enc = msgspec.json.encode
    for d in doc.devices:
        lines.append(f"  - device_id: {enc(d.device_id).decode()}")
        lines.append(f"    device_type: {d.device_type}")
        lines.append(f"    profile: {enc(d.profile).decode()}")
        lines.append(f"    community_id: {enc(d.community_id).decode()}")
        lines.append(f"    gateway_id: {enc(d.gateway_id).decode()}")
        lines.append(f"    location: {_flow(d.location)}")
        if d.resident_id is not None:
            lines.append(f"    resident_id: {enc(d.resident_id).decode()}")
            lines.append(f"    living_alone: {'true' if d.living_alone else 'false'}")
    return ("\n".join(lines) + "\n").encode()


def _json(doc: _File) -> bytes:
    """JSON with one device per line."""
    rows = b",\n".join(msgspec.json.encode(d) for d in doc.devices)
    if not rows:
        return b'{"version": %d, "devices": []}\n' % doc.version
    return b'{"version": %d, "devices": [\n%s\n]}\n' % (doc.version, rows)


def _num(value: float) -> str:
    """A float as YAML 1.1 reads it back exactly (PyYAML wants a dot, not ``1e-05``)."""
    text = repr(float(value))
    if "e" in text:
        text = f"{value:.20f}".rstrip("0")
        text = text + "0" if text.endswith(".") else text
    return text


def _flow(loc: Location) -> str:
    parts = [f"lat: {_num(loc.lat)}", f"lon: {_num(loc.lon)}"]
    for name in ("building", "unit", "room"):
        value = getattr(loc, name)
        if value is not None:
            parts.append(f"{name}: {msgspec.json.encode(value).decode()}")
    return "{" + ", ".join(parts) + "}"

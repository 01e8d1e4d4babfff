"""Changes between two device lists: what an import adds, updates or would overwrite, and diffs.

`merge` is what ``linli inventory import`` does to the inventory: new ids are added, ids already
there with the same entry are left as they are (an import runs twice without harm), and ids there
with a different entry are refused, naming what differs, unless the import says ``update``. `diff`
compares two lists field by field (``linli inventory diff``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import msgspec

from device_profiles.inventory import Device, Inventory


class Change(NamedTuple):
    """One device that differs: ``kind`` is ``added``, ``removed`` or ``changed`` (with the fields,
    each ``(name, before, after)``)."""

    kind: str
    device_id: str
    fields: tuple[tuple[str, object, object], ...] = ()

    def __str__(self) -> str:
        if self.kind == "added":
            return f"+ {self.device_id}"
        if self.kind == "removed":
            return f"- {self.device_id}"
        parts = ", ".join(f"{name}: {_show(a)} -> {_show(b)}" for name, a, b in self.fields)
        return f"~ {self.device_id}: {parts}"


def _show(value: object) -> str:
    return "(none)" if value is None or value == "" else str(value)


def _flat(device: Device) -> dict[str, object]:
    doc = msgspec.to_builtins(device)
    location = doc.pop("location")
    doc.update(location)
    return {k: doc.get(k) for k in _FIELDS}


_FIELDS = (
    "device_type",
    "profile",
    "community_id",
    "gateway_id",
    "building",
    "unit",
    "room",
    "lat",
    "lon",
    "resident_id",
    "living_alone",
)


def field_changes(before: Device, after: Device) -> tuple[tuple[str, object, object], ...]:
    a, b = _flat(before), _flat(after)
    return tuple((name, a[name], b[name]) for name in _FIELDS if a[name] != b[name])


def diff(before: Iterable[Device], after: Iterable[Device]) -> list[Change]:
    """Devices added, removed and changed from `before` to `after`, in `after`'s order then the
    removed in `before`'s."""
    old = {d.device_id: d for d in before}
    new = {d.device_id: d for d in after}
    changes = []
    for device_id, device in new.items():
        was = old.get(device_id)
        if was is None:
            changes.append(Change("added", device_id))
        elif was != device:
            changes.append(Change("changed", device_id, field_changes(was, device)))
    changes.extend(Change("removed", d) for d in old if d not in new)
    return changes


class Merge(NamedTuple):
    """The result of `merge`: the new inventory's devices, and what happened to the incoming ones."""

    devices: tuple[Device, ...]
    added: list[str]
    updated: list[Change]
    unchanged: list[str]
    conflicts: list[Change]


def merge(existing: Inventory, incoming: Sequence[Device], *, update: bool) -> Merge:
    """`existing` with `incoming` merged in (existing order kept, new devices appended). With
    `update` false, an incoming entry that differs from the existing one is a conflict and the
    existing one stays; `Merge.conflicts` lists them so the caller can refuse the whole import."""
    replaced: dict[str, Device] = {}
    added: list[Device] = []
    result = Merge((), [], [], [], [])
    for device in incoming:
        was = existing.get(device.device_id)
        if was is None:
            added.append(device)
            result.added.append(device.device_id)
        elif was == device:
            result.unchanged.append(device.device_id)
        else:
            change = Change("changed", device.device_id, field_changes(was, device))
            if update:
                replaced[device.device_id] = device
                result.updated.append(change)
            else:
                result.conflicts.append(change)
    devices = tuple(replaced.get(d.device_id, d) for d in existing) + tuple(added)
    return result._replace(devices=devices)

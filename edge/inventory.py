"""The agent's view of the device inventory: which devices this gateway serves, with which profile.

The file format belongs to `device_profiles.inventory` (written by the simulators, read by edge
and cloud); this module is the agent's only contact with it. A gateway serves the devices whose
``gateway_id`` is its own; a device the inventory assigns to another gateway is "unknown" here,
but the quarantine entry says which gateway owns it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from types import MappingProxyType

from device_profiles.inventory import Device, Inventory
from device_profiles.inventory import InventoryError as _InventoryFileError
from edge.errors import InventoryError

__all__ = ["Device", "InventoryView", "load_inventory"]


class InventoryView:
    """The devices one gateway serves."""

    def __init__(self, inventory: Inventory, *, gateway_id: str) -> None:
        self.gateway_id = gateway_id
        self._all = inventory
        self.devices: Mapping[str, Device] = MappingProxyType(
            {d.device_id: d for d in inventory if d.gateway_id == gateway_id}
        )

    @property
    def whole(self) -> Inventory:
        """The whole file, every gateway's devices."""
        return self._all

    def get(self, device_id: str) -> Device | None:
        return self.devices.get(device_id)

    def owner(self, device_id: str) -> str | None:
        """The gateway the inventory assigns a device to (None if it does not list it)."""
        dev = self._all.get(device_id)
        return None if dev is None else dev.gateway_id

    def profile_map(self) -> dict[str, str]:
        return {d: dev.profile for d, dev in self.devices.items()}

    def __len__(self) -> int:
        return len(self.devices)


def load_inventory(path: Path, *, gateway_id: str) -> InventoryView:
    """Read the inventory file; raise `InventoryError` naming the file and the entry at fault."""
    try:
        inventory = Inventory.load(path)
    except _InventoryFileError as exc:
        raise InventoryError(str(exc)) from exc
    return InventoryView(inventory, gateway_id=gateway_id)

"""Devices from ChirpStack v4: its device list, read through its REST API or from a saved export.

ChirpStack already knows every LoRaWAN device of a compound: its DevEUI, name, device profile and
tags. `fetch_devices` reads ``GET /api/devices?applicationId=...&limit=...&offset=...`` (the REST
interface of ChirpStack v4, authenticated by an API key in ``Grpc-Metadata-Authorization: Bearer
...``), page by page; `load_export` reads the same JSON saved to a file (``{"totalCount": .., "result":
[...]}``, or several such pages in a list). `DeviceMap` is the installer's table from ChirpStack device
profiles (by name or id) to linli profiles::

    # chirpstack-map.yaml
    device_profiles:
      "Manhole cover WL-200": generic_lorawan/manhole_cover
      "6eb4b05a-dc53-4921-a490-574c17de6bed": generic_lorawan/door_contact

`rows` turns each device into the columns of an inventory table (`inventory_table.row_device` then
checks it like a spreadsheet row): DevEUI in lowercase as the id, the mapped profile, and building,
unit, room, lat, lon, resident and living_alone from the device's tags when it has them.
"""

from __future__ import annotations

import contextlib
import json
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import msgspec
import msgspec.yaml

from device_profiles.errors import DeviceProfilesError

#: Devices asked for per page.
PAGE_SIZE: Final = 100
#: Tags copied into the inventory (ChirpStack device tags are free-form key/value strings).
TAG_COLUMNS: Final = ("building", "unit", "room", "lat", "lon", "resident", "living_alone")


class ChirpStackError(DeviceProfilesError):
    """The ChirpStack server or export could not be read, or the map is invalid."""


class DeviceItem(msgspec.Struct, kw_only=True, rename="camel"):
    """One entry of ChirpStack's device list (the fields linli reads)."""

    dev_eui: str
    name: str = ""
    description: str = ""
    device_profile_id: str = ""
    device_profile_name: str = ""
    tags: dict[str, str] = msgspec.field(default_factory=dict)


class _Page(msgspec.Struct, kw_only=True, rename="camel"):
    total_count: int | str = 0
    result: list[DeviceItem] = msgspec.field(default_factory=list)


class DeviceMap(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """ChirpStack device profile name or id -> linli profile id."""

    device_profiles: dict[str, str]

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> DeviceMap:
        file = Path(path)
        try:
            return msgspec.yaml.decode(file.read_bytes(), type=cls)
        except OSError as exc:
            raise ChirpStackError(f"{file}: cannot read: {exc.strerror or exc}") from None
        except msgspec.DecodeError as exc:
            raise ChirpStackError(f"{file}: {exc}") from None

    def profile_of(self, item: DeviceItem) -> str | None:
        return self.device_profiles.get(item.device_profile_id) or self.device_profiles.get(
            item.device_profile_name
        )


def load_export(path: str | os.PathLike[str]) -> list[DeviceItem]:
    """The devices of a saved ``/api/devices`` response (or a list of such pages, or of devices)."""
    file = Path(path)
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ChirpStackError(f"{file}: cannot read: {exc.strerror or exc}") from None
    try:
        doc = msgspec.json.decode(data)
        pages = doc if isinstance(doc, list) else [doc]
        items: list[DeviceItem] = []
        for page in pages:
            if isinstance(page, dict) and "result" in page:
                items.extend(msgspec.convert(page, _Page).result)
            else:
                items.append(msgspec.convert(page, DeviceItem))
    except (msgspec.DecodeError, msgspec.ValidationError) as exc:
        raise ChirpStackError(f"{file}: not a ChirpStack device list: {exc}") from None
    return items


def _get(url: str, token: str, timeout_s: float) -> bytes:
    request = urllib.request.Request(  # noqa: S310  (the installer's own server, http or https)
        url, headers={"Grpc-Metadata-Authorization": f"Bearer {token}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:
        detail = exc.read()[:500].decode("utf-8", "replace")
        with contextlib.suppress(ValueError, AttributeError):  # grpc-gateway's {"code", "message"}
            detail = str(json.loads(detail).get("message") or detail)
        raise ChirpStackError(f"ChirpStack answered {exc.code} to {url}: {detail}") from None
    except (urllib.error.URLError, TimeoutError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise ChirpStackError(f"cannot reach ChirpStack at {url}: {reason}") from None


def fetch_devices(
    base_url: str, *, token: str, application_id: str, timeout_s: float = 10.0, page_size: int = PAGE_SIZE
) -> list[DeviceItem]:
    """Every device of one application, read page by page from ChirpStack's REST API."""
    items: list[DeviceItem] = []
    offset = 0
    while True:
        query = urllib.parse.urlencode(
            {"applicationId": application_id, "limit": page_size, "offset": offset}
        )
        url = f"{base_url.rstrip('/')}/api/devices?{query}"
        try:
            page = msgspec.json.decode(_get(url, token, timeout_s), type=_Page)
        except (msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise ChirpStackError(f"{url}: not a ChirpStack device list: {exc}") from None
        items.extend(page.result)
        offset += len(page.result)
        if not page.result or offset >= int(page.total_count):
            return items


def rows(
    items: list[DeviceItem], device_map: DeviceMap
) -> Iterator[tuple[DeviceItem, Mapping[str, str] | None]]:
    """Each device with its inventory columns, or None when the map has no profile for it."""
    for item in items:
        profile = device_map.profile_of(item)
        if profile is None:
            yield item, None
            continue
        cells: dict[str, Any] = {"id": item.dev_eui.lower(), "profile": profile}
        for column in TAG_COLUMNS:
            value = item.tags.get(column)
            if value:
                cells[column] = str(value).strip()
        yield item, cells

"""The installer's device list as a table: CSV or Excel in, CSV or Excel out.

An installer arrives with a spreadsheet, one row per device, under a header row naming the columns
(any order, any case; docs/edge-deploy.md shows one)::

    id,type,profile,building,unit,room,lat,lon,resident,living_alone
    0x00158d0001a2b3c4,door_contact,aqara/mccgq11lm,3,2,401,31.2304,121.4737,c01-r0007,yes

=============  ==========================================================================
column         meaning
=============  ==========================================================================
id             the device id its dialect carries (required)
type           device type; may be left out when the profile says it
profile        profile id (required)
community      community id; default ``--community``
gateway        gateway id; default ``--gateway``
building       building, unit, room: where in the compound (optional)
unit
room
lat, lon       WGS 84 coordinates; default ``--lat``/``--lon`` (the compound's)
resident       the resident the device watches over (optional)
living_alone   yes/no (also true/false, 1/0, 是/否); given exactly when ``resident`` is
=============  ==========================================================================

`read_table` turns the file into devices or a list of `RowProblem` (row number as the spreadsheet
shows it, column, reason): one bad row refuses the whole file, so the inventory never takes half a
list. `write_table` writes the same columns back (community and gateway included), so an export
imports again unchanged.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Final, NamedTuple

import msgspec

from device_profiles.inventory import Device, InventoryError

if TYPE_CHECKING:
    from device_profiles.engine import ProfileSet
    from device_profiles.model import DeviceIdSpec

#: The columns, in the order `write_table` writes them.
COLUMNS: Final = (
    "id",
    "type",
    "profile",
    "community",
    "gateway",
    "building",
    "unit",
    "room",
    "lat",
    "lon",
    "resident",
    "living_alone",
)
#: Other names installers' sheets use for the same columns.
ALIASES: Final = {
    "device_id": "id",
    "device": "id",
    "device_type": "type",
    "community_id": "community",
    "gateway_id": "gateway",
    "latitude": "lat",
    "longitude": "lon",
    "lng": "lon",
    "resident_id": "resident",
    "alone": "living_alone",
    "设备编号": "id",
    "设备类型": "type",
    "配置": "profile",
    "社区": "community",
    "网关": "gateway",
    "楼栋": "building",
    "单元": "unit",
    "房号": "room",
    "纬度": "lat",
    "经度": "lon",
    "住户": "resident",
    "独居": "living_alone",
}
TABLE_SUFFIXES: Final = (".csv", ".xlsx")
_YES: Final = frozenset({"yes", "y", "true", "1", "是", "x"})
_NO: Final = frozenset({"no", "n", "false", "0", "否", ""})


class RowProblem(NamedTuple):
    """What is wrong with one row (``row`` as the spreadsheet numbers it: the header is row 1)."""

    row: int
    column: str
    reason: str

    def __str__(self) -> str:
        return (
            f"row {self.row}, column {self.column}: {self.reason}"
            if self.column
            else f"row {self.row}: {self.reason}"
        )


class TableError(InventoryError):
    """A device table was refused; `problems` lists every bad row, `str()` the first ones."""

    def __init__(self, path: Path, problems: Sequence[RowProblem]) -> None:
        self.problems = list(problems)
        shown = "; ".join(str(p) for p in self.problems[:5])
        more = f" (and {len(self.problems) - 5} more)" if len(self.problems) > 5 else ""
        super().__init__(path, "", f"{len(self.problems)} problem(s): {shown}{more}")


class Defaults(msgspec.Struct, frozen=True, kw_only=True):
    """What the command line gives for columns a sheet leaves out."""

    community: str | None = None
    gateway: str | None = None
    lat: float | None = None
    lon: float | None = None


def is_table(path: str | os.PathLike[str]) -> bool:
    return Path(path).suffix.lower() in TABLE_SUFFIXES


# -- reading ---------------------------------------------------------------------------------


def _cell(value: object) -> str:
    """A cell as text: Excel's 401.0 is room "401", its 8.6e14 an IMEI in digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def _csv_rows(path: Path) -> Iterator[list[str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("gb18030")  # what Excel on a Chinese Windows saves as "CSV"
    first = text.split("\n", 1)[0]
    delimiter = max((",", ";", "\t"), key=first.count)
    for row in csv.reader(io.StringIO(text), delimiter=delimiter):
        yield [c.strip() for c in row]


def _xlsx_rows(path: Path, sheet: str | None) -> Iterator[list[str]]:
    try:
        from openpyxl import load_workbook
    except ImportError:
        raise InventoryError(path, "", "reading .xlsx needs openpyxl: pip install 'linli[xlsx]'") from None
    from zipfile import BadZipFile

    try:
        book = load_workbook(path, read_only=True, data_only=True)
    except (BadZipFile, OSError, KeyError, ValueError) as exc:
        raise InventoryError(path, "", f"not an Excel workbook: {exc}") from None
    try:
        if sheet is not None and sheet not in book.sheetnames:
            raise InventoryError(path, "", f"no sheet {sheet!r} (sheets: {', '.join(book.sheetnames)})")
        ws = book[sheet] if sheet is not None else book.worksheets[0]
        for row in ws.iter_rows(values_only=True):
            yield [_cell(v) for v in row]
    finally:
        book.close()


def raw_rows(path: Path, *, sheet: str | None = None) -> list[list[str]]:
    """Every row of a CSV or XLSX file as text cells (the header first)."""
    try:
        if path.suffix.lower() == ".xlsx":
            return list(_xlsx_rows(path, sheet))
        if path.suffix.lower() == ".csv":
            return list(_csv_rows(path))
    except OSError as exc:
        raise InventoryError(path, "", f"cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InventoryError(path, "", f"not a readable CSV file: {exc}") from None
    raise InventoryError(path, "", f"not a device table: use {' or '.join(TABLE_SUFFIXES)}")


def _header(cells: list[str], row: int) -> tuple[dict[int, str], list[RowProblem]]:
    columns: dict[int, str] = {}
    problems: list[RowProblem] = []
    seen: dict[str, int] = {}
    for i, name in enumerate(cells):
        key = name.strip().lower().replace(" ", "_").replace("-", "_")
        if not key:
            continue
        key = ALIASES.get(key, ALIASES.get(name.strip(), key))
        if key not in COLUMNS:
            problems.append(RowProblem(row, name, f"unknown column (columns: {', '.join(COLUMNS)})"))
        elif key in seen:
            problems.append(RowProblem(row, name, f"column {key!r} appears twice"))
        else:
            seen[key] = i
            columns[i] = key
    for required in ("id", "profile"):
        if required not in seen:
            problems.append(RowProblem(row, required, "required column missing"))
    return columns, problems


def _number(value: str, column: str, low: float, high: float) -> float | str:
    try:
        number = float(value)
    except ValueError:
        return f"{value!r} is not a number"
    if not math.isfinite(number) or not low <= number <= high:
        return f"{value} is outside {low:g}..{high:g}"
    return number


def row_device(
    row: int, cells: Mapping[str, str], defaults: Defaults, profiles: ProfileSet | None
) -> Device | list[RowProblem]:
    """One row (column name -> text) as a device, or every problem it has."""
    problems: list[RowProblem] = []

    def bad(column: str, reason: str) -> None:
        problems.append(RowProblem(row, column, reason))

    def text(column: str, limit: int = 128) -> str | None:
        value = cells.get(column, "")
        if len(value) > limit:
            bad(column, f"longer than {limit} characters")
            return None
        return value or None

    device_id = text("id")
    profile_id = text("profile")
    device_type = text("type", 64)
    if device_id is None and "id" not in {p.column for p in problems}:
        bad("id", "empty")
    if profile_id is None:
        bad("profile", "empty")
    elif profiles is not None:
        profile = profiles.profiles.get(profile_id)
        if profile is None:
            bad("profile", f"unknown profile {profile_id!r} (linli profiles list shows them)")
        else:
            if device_type is None:
                device_type = profile.device_type
            elif device_type != profile.device_type:
                bad("type", f"profile {profile_id!r} is for {profile.device_type}, not {device_type}")
            problems.extend(_id_problems(row, device_id, profile.device_id))
    if device_type is None and not any(p.column in ("profile", "type") for p in problems):
        bad("type", "empty (and no profile to take it from)")
    community = text("community") or defaults.community
    gateway = text("gateway") or defaults.gateway
    if community is None:
        bad("community", "empty: give the column or --community")
    if gateway is None:
        bad("gateway", "empty: give the column or --gateway")
    coords: list[float] = []
    for column, default, limit in (("lat", defaults.lat, 90.0), ("lon", defaults.lon, 180.0)):
        value = cells.get(column, "")
        if not value:
            if default is None:
                bad(column, f"empty: give the column or --{column}")
            else:
                coords.append(default)
            continue
        number = _number(value, column, -limit, limit)
        if isinstance(number, str):
            bad(column, number)
        else:
            coords.append(number)
    building, unit, room = (text(c, 64) for c in ("building", "unit", "room"))
    resident = text("resident")
    alone_text = cells.get("living_alone", "").strip().lower()
    living_alone: bool | None = None
    if alone_text in _YES:
        living_alone = True
    elif alone_text in _NO:
        living_alone = False if alone_text else None
    else:
        bad("living_alone", f"{alone_text!r} is not yes or no")
    if resident is None and living_alone:
        bad("living_alone", "yes without a resident: give the resident column too")
    elif resident is not None and living_alone is None and not alone_text:
        bad("living_alone", "empty: say yes or no for the resident")
    if problems or not (device_id and profile_id and device_type and community and gateway):
        return problems
    try:
        return msgspec.convert(
            {
                "device_id": device_id,
                "device_type": device_type,
                "profile": profile_id,
                "community_id": community,
                "gateway_id": gateway,
                "location": {
                    "lat": coords[0],
                    "lon": coords[1],
                    **{k: v for k, v in (("building", building), ("unit", unit), ("room", room)) if v},
                },
                **(
                    {"resident_id": resident, "living_alone": bool(living_alone)}
                    if resident is not None
                    else {}
                ),
            },
            Device,
        )
    except msgspec.ValidationError as exc:
        detail, _, where = str(exc).rpartition(" - at `")
        field = where.rstrip("`").removeprefix("$.").removeprefix("location.")
        return [RowProblem(row, {"device_type": "type", "device_id": "id"}.get(field, field), detail)]


def _id_problems(row: int, device_id: str | None, spec: DeviceIdSpec) -> list[RowProblem]:
    """The profile's rules for ids (case, pattern): an id it would never decode is refused now."""
    if device_id is None:
        return []
    problems = []
    if spec.case == "lower" and device_id != device_id.lower():
        problems.append(RowProblem(row, "id", f"this profile's ids are lowercase: {device_id.lower()!r}"))
    elif spec.case == "upper" and device_id != device_id.upper():
        problems.append(RowProblem(row, "id", f"this profile's ids are uppercase: {device_id.upper()!r}"))
    elif spec.pattern is not None and re.fullmatch(spec.pattern, device_id) is None:
        problems.append(
            RowProblem(row, "id", f"{device_id!r} does not fit the profile's pattern {spec.pattern!r}")
        )
    return problems


def read_table(
    path: str | os.PathLike[str],
    *,
    defaults: Defaults | None = None,
    profiles: ProfileSet | None = None,
    sheet: str | None = None,
) -> list[Device]:
    """The devices of a CSV or XLSX file; raises `TableError` listing every bad row (nothing is
    returned from a file with one), or `InventoryError` for a file that cannot be read at all."""
    file = Path(path)
    rows = raw_rows(file, sheet=sheet)
    top = next((i for i, cells in enumerate(rows) if any(cells)), None)  # blank lines above the header
    if top is None:
        raise TableError(file, [RowProblem(1, "", "the file is empty: a header row and one row per device")])
    columns, problems = _header(rows[top], top + 1)
    if problems:
        raise TableError(file, problems)
    devices: list[Device] = []
    first_row: dict[str, int] = {}
    for number, cells in enumerate(rows[top + 1 :], start=top + 2):
        if not any(cells):
            continue
        named = {columns[i]: v for i, v in enumerate(cells) if i in columns}
        device_id = named.get("id", "")
        if device_id in first_row:
            problems.append(RowProblem(number, "id", f"duplicate id (also row {first_row[device_id]})"))
            continue
        if device_id:
            first_row[device_id] = number
        result = row_device(number, named, defaults or Defaults(), profiles)
        if isinstance(result, list):
            problems.extend(result)
        else:
            devices.append(result)
    if problems:
        raise TableError(file, problems)
    return devices


# -- writing ---------------------------------------------------------------------------------


def table_row(device: Device) -> list[str | float]:
    loc = device.location
    alone = "" if device.living_alone is None else ("yes" if device.living_alone else "no")
    return [
        device.device_id,
        device.device_type,
        device.profile,
        device.community_id,
        device.gateway_id,
        loc.building or "",
        loc.unit or "",
        loc.room or "",
        loc.lat,
        loc.lon,
        device.resident_id or "",
        alone,
    ]


def write_table(path: str | os.PathLike[str], devices: Iterable[Device]) -> int:
    """Write `devices` as CSV (UTF-8 with a BOM, so Excel shows Chinese right) or XLSX, atomically;
    returns the number of rows written."""
    file = Path(path)
    rows = [table_row(d) for d in devices]
    tmp = file.with_name(f".{file.name}.tmp")
    if file.suffix.lower() == ".xlsx":
        try:
            from openpyxl import Workbook
        except ImportError:
            raise InventoryError(
                file, "", "writing .xlsx needs openpyxl: pip install 'linli[xlsx]'"
            ) from None
        book = Workbook(write_only=True)
        sheet = book.create_sheet("devices")
        sheet.append(list(COLUMNS))
        for row in rows:
            sheet.append(row)
        book.save(tmp)
    elif file.suffix.lower() == ".csv":
        with tmp.open("w", encoding="utf-8-sig", newline="") as fh:
            write_csv(fh, rows)
    else:
        raise InventoryError(file, "", f"not a device table: use {' or '.join(TABLE_SUFFIXES)}")
    tmp.replace(file)
    return len(rows)


def write_csv(fh: io.TextIOBase | io.TextIOWrapper, rows: Iterable[Sequence[str | float]]) -> None:
    writer = csv.writer(fh, lineterminator="\n")
    writer.writerow(COLUMNS)
    writer.writerows([repr(v) if isinstance(v, float) else v for v in row] for row in rows)

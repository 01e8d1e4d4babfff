"""``linli inventory import|export|diff``: an installer's spreadsheet to the inventory and back."""

from __future__ import annotations

from pathlib import Path

import pytest
from openpyxl import Workbook

from device_profiles.console import main
from device_profiles.inventory import Inventory
from device_profiles.inventory_table import RowProblem, TableError, read_table

HEADER = "id,type,profile,building,unit,room,lat,lon,resident,living_alone\n"
GOOD = (
    HEADER
    + "door_3_2_401,door_contact,aqara/mccgq11lm,3,2,401,31.2304,121.4737,c01-r0007,yes\n"
    + "sos_3_2_401,,tuya/ts0215a_sos,3,2,401,,,c01-r0007,是\n"
    + "a84041000181c0de,manhole_cover,generic_lorawan/manhole_cover,,,,31.2310,121.4740,,\n"
)
BAD = (
    HEADER
    + "door_1,door_contact,aqara/mccgq11lm,3,2,401,931.2,121.47,c01-r0007,maybe\n"
    + "A84041000181C0DF,,generic_lorawan/manhole_cover,,,,31.2310,121.4740,,\n"
    + "door_1,sos_button,aqara/mccgq11lm,,,,31.2,121.4,r1,\n"
    + "x,,nope/nope,,,,31.2,121.4,,\n"
    + "door_9,door_contact,aqara/mccgq11lm,,,,31.2,121.4,r9,\n"
    + "door_8,door_contact,aqara/mccgq11lm,,,,31.2,121.4,,yes\n"
)
PLACE = ["--community", "c01", "--gateway", "c01-gw1", "--lat", "31.23", "--lon", "121.47"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["inventory", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_csv_becomes_the_inventory_and_a_second_import_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    table, inventory = tmp_path / "devices.csv", tmp_path / "inventory.yaml"
    table.write_text(GOOD, encoding="utf-8-sig")  # as Excel saves it, with a BOM
    code, out, err = run(capsys, "import", str(table), "--inventory", str(inventory), *PLACE)
    assert (code, err) == (0, "")
    assert "3 added, 0 updated, 0 unchanged (3 devices)" in out
    inv = Inventory.load(inventory)
    door, sos, cover = inv["door_3_2_401"], inv["sos_3_2_401"], inv["a84041000181c0de"]
    assert (door.location.building, door.location.room, door.resident_id, door.living_alone) == (
        "3",
        "401",
        "c01-r0007",
        True,
    )
    assert (sos.device_type, sos.location.lat, sos.location.lon, sos.living_alone) == (
        "sos_button",  # from its profile
        31.23,  # from --lat/--lon
        121.47,
        True,
    )
    assert (cover.resident_id, cover.living_alone, cover.gateway_id) == (None, None, "c01-gw1")
    before = inventory.read_bytes()
    code, out, _ = run(capsys, "import", str(table), "--inventory", str(inventory), *PLACE)
    assert code == 0
    assert "0 added, 0 updated, 3 unchanged" in out
    assert inventory.read_bytes() == before


def test_bad_rows_are_all_reported_and_leave_the_inventory_untouched(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inventory.yaml"
    (tmp_path / "good.csv").write_text(GOOD)
    assert run(capsys, "import", str(tmp_path / "good.csv"), "--inventory", str(inventory), *PLACE)[0] == 0
    before = inventory.read_bytes()
    (tmp_path / "bad.csv").write_text(BAD)
    code, _, err = run(capsys, "import", str(tmp_path / "bad.csv"), "--inventory", str(inventory), *PLACE)
    assert code == 2
    assert inventory.read_bytes() == before
    lines = err.splitlines()
    expected = [
        "row 2, column lat: 931.2 is outside -90..90",
        "row 2, column living_alone: 'maybe' is not yes or no",
        "row 3, column id: this profile's ids are lowercase: 'a84041000181c0df'",
        "row 4, column id: duplicate id (also row 2)",
        "row 5, column profile: unknown profile 'nope/nope' (linli profiles list shows them)",
        "row 6, column living_alone: empty: say yes or no for the resident",
        "row 7, column living_alone: yes without a resident: give the resident column too",
    ]
    assert lines[:-1] == [f"{tmp_path / 'bad.csv'}: {line}" for line in expected]
    assert lines[-1].endswith(f"7 problem(s) in {tmp_path / 'bad.csv'}: {inventory} is unchanged")


def test_a_header_without_the_required_columns_names_them(tmp_path: Path) -> None:
    (tmp_path / "t.csv").write_text("\n\ndevice,colour\nx,red\n")
    with pytest.raises(TableError) as caught:
        read_table(tmp_path / "t.csv")
    colour, profile = caught.value.problems
    assert (colour.row, colour.column) == (3, "colour")  # the header is the third line
    assert colour.reason.startswith("unknown column (columns: id, type, profile,")
    assert profile == RowProblem(3, "profile", "required column missing")


def test_an_entry_that_differs_is_refused_unless_updated(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    inventory = tmp_path / "inventory.yaml"
    (tmp_path / "a.csv").write_text(GOOD)
    run(capsys, "import", str(tmp_path / "a.csv"), "--inventory", str(inventory), *PLACE)
    before = inventory.read_bytes()
    (tmp_path / "b.csv").write_text(GOOD.replace("3,2,401,31.2304", "3,2,402,31.2304"))
    code, _, err = run(capsys, "import", str(tmp_path / "b.csv"), "--inventory", str(inventory), *PLACE)
    assert code == 2
    assert "door_3_2_401 is already in" in err
    assert "room: 401 -> 402" in err
    assert inventory.read_bytes() == before
    code, out, _ = run(
        capsys, "import", str(tmp_path / "b.csv"), "--inventory", str(inventory), "--update", *PLACE
    )
    assert code == 0
    assert "~ door_3_2_401: room: 401 -> 402" in out
    assert Inventory.load(inventory)["door_3_2_401"].location.room == "402"


def test_xlsx_in_with_numbers_as_excel_stores_them_and_export_diff_round_trip(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    sheet.append(["设备编号", "设备类型", "配置", "楼栋", "单元", "房号", "纬度", "经度", "住户", "独居"])
    sheet.append(
        [861234567890123, "manhole_cover", "generic_nbiot/manhole_cover", 5, None, None, 31.2, 121.4]
    )
    sheet.append(["door_5_1_101", "door_contact", "aqara/mccgq11lm", 5, 1, 101, 31.2, 121.4, "r1", False])
    book.save(tmp_path / "devices.xlsx")
    inventory = tmp_path / "inventory.yaml"
    code, _, err = run(
        capsys, "import", str(tmp_path / "devices.xlsx"), "--inventory", str(inventory), *PLACE
    )
    assert (code, err) == (0, "")
    inv = Inventory.load(inventory)
    assert inv["861234567890123"].location.building == "5"  # an IMEI Excel stored as a number
    assert (inv["door_5_1_101"].location.room, inv["door_5_1_101"].living_alone) == ("101", False)
    for name in ("out.xlsx", "out.csv"):
        assert run(capsys, "export", "--inventory", str(inventory), "-o", str(tmp_path / name))[0] == 0
        code, out, _ = run(capsys, "diff", str(inventory), str(tmp_path / name))
        assert (code, out) == (0, "")
    # the export imports into an empty inventory as the same devices
    again = tmp_path / "again.yaml"
    assert run(capsys, "import", str(tmp_path / "out.csv"), "--inventory", str(again))[0] == 0
    assert Inventory.load(again) == inv


def test_diff_lists_added_removed_and_changed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a.csv").write_text(GOOD)
    (tmp_path / "b.csv").write_text(
        GOOD.replace("3,2,401,31.2304", "3,2,402,31.2304").replace("sos_3_2_401,", "sos_3_2_409,")
    )
    code, out, err = run(capsys, "diff", str(tmp_path / "a.csv"), str(tmp_path / "b.csv"), *PLACE)
    assert code == 1
    assert out.splitlines() == ["~ door_3_2_401: room: 401 -> 402", "+ sos_3_2_409", "- sos_3_2_401"]
    assert err.strip() == "1 added, 1 removed, 1 changed"


def test_a_gateways_approvals_carry_to_the_cloud_inventory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a.csv").write_text(GOOD)
    cloud, gateway = tmp_path / "cloud.yaml", tmp_path / "gateway.yaml"
    run(capsys, "import", str(tmp_path / "a.csv"), "--inventory", str(cloud), *PLACE)
    run(capsys, "import", str(tmp_path / "a.csv"), "--inventory", str(gateway), *PLACE)
    approved = HEADER + "climate_1,,aqara/wsdcgq11lm,3,2,401,,,,\n"
    (tmp_path / "b.csv").write_text(approved)
    run(capsys, "import", str(tmp_path / "b.csv"), "--inventory", str(gateway), *PLACE)
    code, out, _ = run(capsys, "diff", str(cloud), str(gateway))
    assert (code, out) == (1, "+ climate_1\n")
    code, out, _ = run(capsys, "import", str(gateway), "--inventory", str(cloud))
    assert code == 0
    assert "1 added, 0 updated, 3 unchanged (4 devices)" in out
    assert Inventory.load(cloud) == Inventory.load(gateway)

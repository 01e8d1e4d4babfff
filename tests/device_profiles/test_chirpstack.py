"""``linli inventory chirpstack``: devices from a ChirpStack v4 export and from its REST API.

The server below answers like ChirpStack v4's REST interface: ``GET /api/devices`` needs an
``applicationId`` and the API key as ``Grpc-Metadata-Authorization: Bearer ...``, pages with
``limit``/``offset`` and ``totalCount``, and refuses with grpc-gateway's ``{"code", "message"}`` body.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from device_profiles.console import main
from device_profiles.inventory import Inventory

APP = "7e3c2a58-4f6e-4b53-9a58-2f0c1d3e4b5a"
KEY = "eyJ0eXAiOiJKV1QiLCJhbGciOiJIUzI1NiJ9.test-key"
COVER_PROFILE = "2b7f4a4e-9d1c-4f50-8d4b-0c6e1a9f3d21"


def device(i: int, profile_name: str, **tags: str) -> dict[str, Any]:
    """One item of ChirpStack's device list, as its REST interface returns it."""
    return {
        "devEui": f"A84041000181C{i:03X}",
        "createdAt": "2026-11-02T08:00:00Z",
        "updatedAt": "2026-11-02T08:00:00Z",
        "lastSeenAt": "2026-12-01T23:59:00Z",
        "name": f"device-{i}",
        "description": "",
        "deviceProfileId": COVER_PROFILE
        if profile_name == "Manhole WL"
        else f"00000000-0000-0000-0000-{i:012d}",
        "deviceProfileName": profile_name,
        "deviceStatus": {"marginDb": 7, "externalPowerSource": False, "batteryLevel": 88.5},
        "tags": tags,
    }


DEVICES = [
    *(device(i, "Manhole WL", building="7", lat="31.2310", lon="121.4740") for i in range(5)),
    *(
        device(i, "Door LoRa", building="3", unit="2", room=f"{i}01", resident=f"r{i}", living_alone="yes")
        for i in range(5, 8)
    ),
]
#: The installer's table: one ChirpStack profile by id, one by name.
MAP = f"""device_profiles:
  {COVER_PROFILE}: generic_lorawan/manhole_cover
  Door LoRa: generic_lorawan/door_contact
"""
PLACE = ["--community", "c01", "--gateway", "c01-gw1", "--lat", "31.23", "--lon", "121.47"]


class ChirpStack(BaseHTTPRequestHandler):
    devices: ClassVar[list[dict[str, Any]]] = DEVICES
    pages: ClassVar[list[tuple[int, int]]] = []

    def _send(self, status: int, doc: dict[str, Any]) -> None:
        body = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        if url.path != "/api/devices":
            self._send(404, {"code": 5, "message": "Not Found", "details": []})
        elif self.headers.get("Grpc-Metadata-Authorization") != f"Bearer {KEY}":
            self._send(401, {"code": 16, "message": "authentication failed: invalid token", "details": []})
        elif query.get("applicationId") != APP:
            self._send(400, {"code": 3, "message": "Invalid application_id", "details": []})
        else:
            limit, offset = int(query.get("limit", "0")), int(query.get("offset", "0"))
            self.pages.append((limit, offset))
            self._send(
                200, {"totalCount": len(self.devices), "result": self.devices[offset : offset + limit]}
            )

    def log_message(self, format: str, *args: Any) -> None:
        return


@pytest.fixture
def server() -> Iterator[str]:
    ChirpStack.pages = []
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), ChirpStack)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(["inventory", "chirpstack", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_an_export_becomes_inventory_entries_through_the_map(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "map.yaml").write_text(MAP)
    (tmp_path / "devices.json").write_text(json.dumps({"totalCount": len(DEVICES), "result": DEVICES}))
    inventory = tmp_path / "inventory.yaml"
    code, out, err = run(
        capsys,
        "--map",
        str(tmp_path / "map.yaml"),
        "--export",
        str(tmp_path / "devices.json"),
        "--inventory",
        str(inventory),
        *PLACE,
    )
    assert (code, err) == (0, "")
    assert "8 added" in out
    inv = Inventory.load(inventory)
    cover = inv["a84041000181c000"]  # DevEUI in lowercase, as the profile decodes it
    assert (cover.profile, cover.location.building, cover.location.lat) == (
        "generic_lorawan/manhole_cover",
        "7",
        31.231,
    )
    door = inv["a84041000181c007"]
    assert (door.profile, door.location.room, door.resident_id, door.living_alone) == (
        "generic_lorawan/door_contact",
        "701",
        "r7",
        True,
    )


def test_unmapped_devices_refuse_the_import_or_are_skipped_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "map.yaml").write_text(
        f"device_profiles:\n  {COVER_PROFILE}: generic_lorawan/manhole_cover\n"
    )
    (tmp_path / "devices.json").write_text(json.dumps([{"totalCount": 8, "result": DEVICES}]))
    inventory = tmp_path / "inventory.yaml"
    args = [
        "--map",
        str(tmp_path / "map.yaml"),
        "--export",
        str(tmp_path / "devices.json"),
        "--inventory",
        str(inventory),
        *PLACE,
    ]
    code, _, err = run(capsys, *args)
    assert code == 2
    assert not inventory.exists()
    assert err.count("no mapping for ChirpStack device profile 'Door LoRa'") == 3
    code, out, err = run(capsys, *args, "--skip-unmapped")
    assert code == 0
    assert "5 added" in out
    assert err.count("skipped device") == 3


def test_the_rest_api_is_read_page_by_page_with_the_api_key(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "map.yaml").write_text(MAP)
    inventory = tmp_path / "inventory.yaml"
    args = [
        "--map",
        str(tmp_path / "map.yaml"),
        "--url",
        server,
        "--application",
        APP,
        "--inventory",
        str(inventory),
        *PLACE,
    ]
    monkeypatch.setenv("CHIRPSTACK_API_KEY", "wrong")
    code, _, err = run(capsys, *args)
    assert code == 2
    assert "ChirpStack answered 401" in err
    assert "authentication failed: invalid token" in err
    monkeypatch.setenv("CHIRPSTACK_API_KEY", KEY)
    code, out, err = run(capsys, *args)
    assert (code, err) == (0, "")
    assert "8 added" in out
    assert ChirpStack.pages == [(100, 0)]
    assert len(Inventory.load(inventory)) == 8


def test_pagination_and_an_unreachable_server(
    server: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from device_profiles.chirpstack import ChirpStackError, fetch_devices

    items = fetch_devices(server, token=KEY, application_id=APP, page_size=3)
    assert [i.dev_eui for i in items] == [d["devEui"] for d in DEVICES]
    assert ChirpStack.pages == [(3, 0), (3, 3), (3, 6)]
    with pytest.raises(ChirpStackError, match="Invalid application_id"):
        fetch_devices(server, token=KEY, application_id="other")
    with pytest.raises(ChirpStackError, match="cannot reach ChirpStack"):
        fetch_devices("http://127.0.0.1:9", token=KEY, application_id=APP, timeout_s=2)

"""`linli demo` in a subprocess: it stores rows, stops cleanly on SIGINT leaving no process behind,
and a second run reuses the data of the first."""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROWS = re.compile(r"([\d,]+) rows stored")
API = re.compile(r"console: (http://[\d.:]+)/console, log in as (\S+) with (\S+) \(API: ")


class Demo:
    def __init__(self, root: Path, *args: str) -> None:
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "device_profiles.console",
                "demo",
                "--root",
                str(root),
                "--devices",
                "40",
                *args,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def rows(self) -> int:
        found = [int(m.group(1).replace(",", "")) for line in self.lines for m in [ROWS.search(line)] if m]
        return found[-1] if found else 0

    def wait(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=5)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        return code

    def close(self) -> None:
        """Stop the demo if a failed assertion left it running."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.wait(timeout=30)


def _the_board_shows_the_sos(url: str, login: str, password: str) -> None:
    """The console's board, logged in with the printed login, shows the scenario's SOS with its alarm."""
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])
        try:
            page = browser.new_page(base_url=url)
            page.goto("/console/login")
            page.get_by_label("工号").fill(login)
            page.get_by_label("密码").fill(password)
            page.get_by_role("button", name="登录").click()
            sos = page.locator("#incident-rows tr[data-severity='critical']")
            expect(sos.first).to_be_visible(timeout=60_000)
            expect(page.locator("#alarm")).to_be_visible()
            expect(page.locator("#alarm-text")).to_contain_text("紧急求助")  # an SOS, said as such
        finally:
            browser.close()


def _strays(root: Path) -> str:
    found = subprocess.run(["pgrep", "-af", str(root)], capture_output=True, text=True, check=False)
    return "\n".join(line for line in found.stdout.splitlines() if "pgrep" not in line)


@pytest.fixture
def root() -> Iterator[Path]:
    """Outside pytest's own temporary folder: pytest makes that 0700 again whenever a session
    starts, and the cluster's `postgres` OS user must reach its data folder (when run as root)."""
    folder = Path(tempfile.mkdtemp(prefix="linli-test-demo-"))
    yield folder / "demo"
    shutil.rmtree(folder, ignore_errors=True)


def test_demo_runs_stops_on_sigint_and_reuses_its_data(root: Path) -> None:
    first = Demo(root, "--duration", "120")
    try:
        deadline = time.monotonic() + 90
        while first.rows() == 0:
            assert first.proc.poll() is None, first.text
            assert time.monotonic() < deadline, first.text
            time.sleep(0.5)
        api = next(m for line in first.lines for m in [API.search(line)] if m)
        with httpx.Client(base_url=api.group(1), timeout=10) as c:
            token = c.post("/api/v1/auth/token", data={"username": api.group(2), "password": api.group(3)})
            assert token.status_code == 200, token.text
            me = c.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {token.json()['access_token']}"})
            assert me.json()["roles"] == ["committee"]
        _the_board_shows_the_sos(api.group(1), api.group(2), api.group(3))
        first.proc.send_signal(signal.SIGINT)
        assert first.wait(timeout=90) == 0, first.text
    finally:
        first.close()
    assert "first run: initdb" in first.text
    assert "connect with: psql postgresql://" in first.text
    stored = first.rows()
    assert stored > 0, first.text
    assert "stopped;" in first.lines[-1], first.text
    assert _strays(root) == ""
    # The first gateway heard a device nobody listed, and Zigbee2MQTT named another: both pending.
    # the streetlight schedule's commands reached the simulated lamps and came back confirmed
    assert re.search(r"commands [^;]*?[\d,]+ confirmed", first.text), first.text
    assert "climate-unlisted (environment_sensor by aqara/wsdcgq11lm) on" in first.text, first.text
    assert "leak-unlisted (water_leak_sensor by aqara/sjcgq11lm) on" in first.text, first.text
    config = sorted((root / "edge").glob("*/edge.toml"))[0]
    listed = subprocess.run(
        [
            sys.executable,
            "-m",
            "device_profiles.console",
            "edge",
            "devices",
            "pending",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    # named by the bridge and heard once (whichever came first is its source)
    heard = r"climate-unlisted\t(field|zigbee2mqtt)\tenvironment_sensor by aqara/wsdcgq11lm\t1 message\(s\)"
    assert re.search(heard, listed.stdout), (listed.stdout, listed.stderr)
    assert "leak-unlisted\tzigbee2mqtt\twater_leak_sensor by aqara/sjcgq11lm" in listed.stdout

    second = Demo(root, "--duration", "6")
    try:
        assert second.wait(timeout=120) == 0, second.text
    finally:
        second.close()
    assert "reusing its data" in second.text
    assert f"reusing the data of earlier runs: {stored:,} rows" in second.text
    assert second.rows() >= stored
    assert _strays(root) == ""

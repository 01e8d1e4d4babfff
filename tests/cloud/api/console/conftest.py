"""The console in a real browser: Debian's chromium driven by playwright, against the API served by
uvicorn on a loopback port and a real database. Screenshots go to ``var/screenshots/console``
(docs/console.md shows the current ones)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlsplit

import psycopg
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, expect, sync_playwright
from psycopg.types.json import Jsonb

from cloud.api.app import create_app
from cloud.config import CloudSettings
from cloud.incidents.record import Context
from tests.cloud.api.conftest import PASSWORD, Clock, serve
from tests.cloud.incidents.conftest import fire

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(
    os.environ.get("LINLI_SCREENSHOTS", Path(__file__).parents[4] / "var" / "screenshots" / "console")
)
#: the widths screenshots are taken at: a desk PC and a 375-px phone
WIDTHS = {"desktop": (1280, 800), "phone": (375, 740)}


# Module scope, not session: the sync API runs an event loop on this thread while it is open,
# and the asyncio tests that run after these need the thread to themselves.
@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    assert Path(CHROMIUM).exists(), "chromium is missing: scripts/setup installs it"
    b = playwright.chromium.launch(
        executable_path=CHROMIUM, args=["--no-sandbox", "--autoplay-policy=no-user-gesture-required"]
    )
    yield b
    b.close()


@pytest.fixture
def console(api_settings: CloudSettings, api_context: Context, clock: Clock) -> Iterator[str]:
    """The base URL of the API (and its console), on the real clock."""
    with serve(create_app(api_settings, context=api_context)) as url:
        yield url


class Screen:
    """Pages of one browser context at one width; every console error fails the test."""

    def __init__(
        self, browser: Browser, base: str, width: str = "desktop", *, bypass_csp: bool = False
    ) -> None:
        w, h = WIDTHS[width]
        self.width = width
        self.base = base
        self.context = browser.new_context(
            viewport={"width": w, "height": h}, locale="zh-CN", base_url=base, bypass_csp=bypass_csp
        )
        self.context.set_default_timeout(10_000)
        self.errors: list[str] = []
        # nothing may come from anywhere but linli itself (a compound's network has no internet)
        self.context.route(lambda url: not url.startswith(base), self._outside)
        self.page = self.new_page()

    def new_page(self) -> Page:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)
        return page

    def _outside(self, route: Route) -> None:
        self.errors.append(f"a request outside linli: {route.request.url}")
        route.abort()

    def _console(self, msg: ConsoleMessage) -> None:
        if msg.type != "error":
            return
        url = msg.location.get("url", "")
        if "/api/v1/" in url and "status of 4" in msg.text:
            return  # a refusal the page shows (tests check what it shows)
        self.errors.append(f"console {msg.type}: {msg.text} ({url})")

    def log_in(self, staff_id: str, password: str = PASSWORD, *, then: str = "/console/board") -> Page:
        page = self.page
        page.goto(f"/console/login?next={then}")
        page.get_by_label("工号").fill(staff_id)
        page.get_by_label("密码").fill(password)
        page.get_by_role("button", name="登录").click()
        where = urlsplit(then).path
        page.wait_for_url(lambda url: urlsplit(url).path == where)
        return page

    def rendered(self, name: str, page: Page | None = None) -> None:
        """Wait until the page says it has drawn its data."""
        expect((page or self.page).locator("body")).to_have_attribute("data-rendered", _has_word(name))

    def shoot(self, name: str, page: Page | None = None) -> Path:
        SHOTS.mkdir(parents=True, exist_ok=True)
        path = SHOTS / f"{name}-{self.width}.png"
        (page or self.page).screenshot(path=path, full_page=False)
        return path

    def close(self) -> None:
        self.context.close()


def _has_word(word: str) -> re.Pattern[str]:
    return re.compile(rf"(^|\s){re.escape(word)}(\s|$)")


@pytest.fixture
def screens(browser: Browser, console: str) -> Iterator[Callable[..., Screen]]:
    """``screens("phone")``: a fresh browser context at that width; its errors fail the test.
    ``bypass_csp``: let the test inject a script (the accessibility checker)."""
    made: list[Screen] = []

    def make(width: str = "desktop", *, bypass_csp: bool = False) -> Screen:
        screen = Screen(browser, console, width, bypass_csp=bypass_csp)
        made.append(screen)
        return screen

    yield make
    errors = [e for s in made for e in s.errors]
    for screen in made:
        screen.close()
    assert not errors, "\n".join(errors)


NOW = datetime.now(UTC)


@pytest.fixture
def world(migrated_url: str, accounts: Callable[..., None]) -> dict[str, int]:
    """c01: 30 door contacts in buildings 1-3 (two units each) and an SOS button in 3-2-401, a
    gateway that reported its buffer, a day of readings and events; c02: a manhole cover. Open
    incidents: an SOS and a silent door in c01, an SOS in c02."""
    accounts("w-zhang", "w-other", "k-li", "s-wang", "a-root")
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for i in range(30):
            building, unit = 1 + i // 10, 1 + (i % 10) // 5
            conn.execute(
                "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, building,"
                " unit, room, lat, lon, status, battery_pct, last_seen) VALUES (%s, 'door_contact',"
                " 'aqara/mccgq11lm', 'c01', 'gw1', %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    f"door-{i:02d}",
                    str(building),
                    str(unit),
                    f"{unit}0{i % 5 + 1}",
                    31.2 + building * 0.0006,
                    121.4,
                    "offline" if i == 7 else "online",
                    80.0 - i,
                    NOW - timedelta(minutes=i),
                ),
            )
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, building, unit,"
            " room, resident_id, living_alone, lat, lon, status) VALUES ('sos-1', 'sos_button', 'p', 'c01',"
            " 'gw1', '3', '2', '401', 'c01-r0007', true, 31.2018, 121.4, 'online'), ('cover-1',"
            " 'manhole_cover', 'nb-cover', 'c02', 'gw2', NULL, NULL, NULL, NULL, NULL, 31.3, 121.5, 'online')"
        )
        status = {
            "v": 1, "state": "online", "version": "0.9.0", "uptime_s": 7200,
            "buffer": {"depth": 42, "alarm": 2, "telemetry": 40, "oldest_age_s": 12, "disk_bytes": 81920,
                       "cap_bytes": 1 << 30},
            "links": {"field": True, "cloud": True}, "pending_devices": 3,
        }  # fmt: skip
        conn.execute(
            "INSERT INTO gateways (gateway_id, community_id, state, status, status_at) VALUES"
            " ('gw1', 'c01', 'online', %s, %s), ('gw2', 'c02', 'offline', '{}', %s)",
            (Jsonb(status), NOW - timedelta(seconds=20), NOW - timedelta(hours=3)),
        )
        with conn.cursor().copy("COPY readings (time, device_id, metric, value) FROM STDIN") as copy:
            for minute in range(0, 24 * 60, 5):
                at = NOW - timedelta(minutes=minute)
                copy.write_row((at, "door-00", "contact_open", float(minute // 5 % 2)))
                copy.write_row((at, "door-00", "battery_pct", 90 - minute / 200))
                copy.write_row((at, "door-00", "link_quality", 120 + minute % 40))
        conn.execute(
            "INSERT INTO events (time, device_id, event) VALUES (%s, 'door-00', 'door_opened'),"
            " (%s, 'door-00', 'door_closed')",
            (NOW - timedelta(minutes=30), NOW - timedelta(minutes=25)),
        )
    incidents = {
        "sos": fire(migrated_url, subject="sos-1"),
        "door": fire(migrated_url, rule="door_silent", subject="door-03", severity="major", latched=False),
        "c02": fire(migrated_url, subject="sos-9", community_id="c02", resident_id="c02-r0001"),
    }
    with psycopg.connect(migrated_url, autocommit=True) as conn:  # a battery that ran low, half an hour ago
        at = NOW - timedelta(minutes=30)
        conn.execute(
            "UPDATE incidents SET rule = 'battery_low', device_id = 'door-00', started_at = %s, evidence = %s"
            " WHERE incident_id = %s",
            (at, Jsonb([{"time_us": int(at.timestamp() * 1e6), "metric": "battery_pct", "value": 12.0}]),
             incidents["door"]),
        )  # fmt: skip
    return incidents

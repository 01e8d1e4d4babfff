"""The console in a real browser: Debian's chromium driven by playwright, against the API served by
uvicorn on a loopback port and a real database. Screenshots go to ``var/screenshots/console``
(docs/console.md shows the current ones)."""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, Playwright, Route, expect, sync_playwright

from cloud.api.app import create_app
from cloud.config import CloudSettings
from cloud.incidents.record import Context
from tests.cloud.api.conftest import PASSWORD, Clock, serve

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

    def __init__(self, browser: Browser, base: str, width: str = "desktop") -> None:
        w, h = WIDTHS[width]
        self.width = width
        self.base = base
        self.context = browser.new_context(viewport={"width": w, "height": h}, locale="zh-CN", base_url=base)
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
        page.wait_for_url(f"**{then}*")
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
    """``screens("phone")``: a fresh browser context at that width; its errors fail the test."""
    made: list[Screen] = []

    def make(width: str = "desktop") -> Screen:
        screen = Screen(browser, console, width)
        made.append(screen)
        return screen

    yield make
    errors = [e for s in made for e in s.errors]
    for screen in made:
        screen.close()
    assert not errors, "\n".join(errors)

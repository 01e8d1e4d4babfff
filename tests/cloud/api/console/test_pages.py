"""Every page of the console in chromium, at a desk PC's and a phone's width."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.cloud.api.console.conftest import Screen
from tests.cloud.incidents.conftest import fire

pytestmark = [pytest.mark.integration]


def test_board_lists_open_incidents(
    screens: Callable[..., Screen], accounts: Callable[..., None], migrated_url: str
) -> None:
    accounts("k-li")
    fire(migrated_url, subject="sos-1")
    fire(migrated_url, rule="door_silent", subject="door-1", severity="major", latched=False)
    screen = screens()
    page = screen.log_in("k-li")
    screen.rendered("board")
    expect(page.locator("#incident-rows tr")).to_have_count(2)
    screen.shoot("board")

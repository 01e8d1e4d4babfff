"""Every page passes axe-core's WCAG 2 A and AA checks (labels, names, contrast, landmarks, ARIA)
at a desk PC's and a phone's width, with its data drawn; and the board and the map work from the
keyboard alone."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.cloud.api.console.conftest import Screen

pytestmark = [pytest.mark.integration, pytest.mark.slow]

AXE = Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js"


def _violations(page: Page) -> list[str]:
    page.add_script_tag(path=AXE)
    found: list[dict[str, Any]] = page.evaluate(
        "async () => (await axe.run(document,"
        " {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21aa']}})).violations"
        ".map(v => ({id: v.id, impact: v.impact, help: v.help,"
        " nodes: v.nodes.slice(0, 3).map(n => n.target.join(' '))}))"
    )
    return [f"{v['id']} ({v['impact']}): {v['help']} at {v['nodes']}" for v in found]


def test_every_page_passes_wcag_a_and_aa(screens: Callable[..., Screen], world: dict[str, int]) -> None:
    pages = {
        "board": "/console/board",
        "incident": f"/console/incidents/{world['door']}",
        "map": "/console/map",
        "device": "/console/devices/door-00",
        "gateways": "/console/gateways",
        "performance": "/console/performance",
    }
    problems: list[str] = []
    for width in ("desktop", "phone"):
        screen = screens(width, bypass_csp=True)
        page = screen.page
        page.goto("/console/login")
        problems += [f"login {width}: {v}" for v in _violations(page)]
        screen.log_in("k-li")
        for name, path in pages.items():
            page.goto(path)
            screen.rendered(name)
            problems += [f"{name} {width}: {v}" for v in _violations(page)]
    assert not problems, "\n".join(problems)


def test_the_board_and_an_incident_work_from_the_keyboard(
    screens: Callable[..., Screen],
    world: dict[str, int],
) -> None:
    screen = screens()
    page = screen.log_in("k-li")
    screen.rendered("board")
    page.keyboard.press("Tab")  # the first stop skips to the content
    expect(page.locator("a.skip")).to_be_focused()
    first = page.locator("#incident-rows tr a").first
    for _ in range(40):
        page.keyboard.press("Tab")
        if first.evaluate("a => a === document.activeElement"):
            break
    expect(first).to_be_focused()
    page.keyboard.press("Enter")
    screen.rendered("incident")
    accept = page.get_by_role("button", name="接单")
    accept.focus()
    page.keyboard.press("Enter")
    expect(page.locator("#incident-state")).to_have_attribute("data-state", "accepted")

"""Every page of the console in chromium against the live API: what each shows, who sees what,
the language switch, a refused action's reason, and screenshots at a desk PC's and a phone's
width (docs/console.md)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from playwright.sync_api import expect

from tests.cloud.api.console.conftest import Screen

pytestmark = [pytest.mark.integration]


def test_the_board_shows_the_callers_open_incidents_and_shouts_for_an_sos(
    screens: Callable[..., Screen], world: dict[str, int]
) -> None:
    for width in ("desktop", "phone"):
        screen = screens(width)
        page = screen.log_in("k-li")
        screen.rendered("board")
        rows = page.locator("#incident-rows tr")
        expect(rows).to_have_count(2)  # c02's SOS is not k-li's
        expect(rows.first).to_have_attribute("data-severity", "critical")  # the worst first
        expect(page.locator("#alarm")).to_be_visible()
        expect(page.locator("#alarm-text")).to_contain_text("SOS")
        assert page.title().startswith("🚨 SOS (1)")
        screen.shoot("board", page)
        page.goto(f"/console/incidents/{world['door']}")
        screen.rendered("incident")
        evidence = page.locator("#evidence-chart")
        expect(evidence.locator("canvas")).to_have_count(1)
        assert int(evidence.get_attribute("data-points") or 0) == 19  # every 5 min from 1 h before it to now
        screen.shoot("incident-evidence", page)
        page.go_back()
        screen.rendered("board")
        page.get_by_label("级别", exact=True).select_option("major")
        expect(rows).to_have_count(1)
        expect(rows.first).to_have_attribute("data-severity", "major")
        page.get_by_role("button", name="知道了").click()
        expect(page.locator("#alarm")).to_be_hidden()
        assert not page.title().startswith("🚨")


def test_a_grid_worker_of_another_community_sees_none_of_it(
    screens: Callable[..., Screen], world: dict[str, int]
) -> None:
    screen = screens()
    page = screen.log_in("w-other")
    screen.rendered("board")
    rows = page.locator("#incident-rows tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-incident", str(world["c02"]))
    page.goto(f"/console/incidents/{world['sos']}")
    expect(page.locator("#problem")).to_contain_text("找不到")
    page.goto("/console/devices/door-00")
    expect(page.locator("#problem")).to_contain_text("找不到")
    page.goto("/console/map")
    screen.rendered("map")
    expect(page.locator("#community option")).to_have_count(1)
    expect(page.locator("#community")).to_have_value("c02")
    page.goto("/console/gateways")
    screen.rendered("gateways")
    expect(page.locator("#gateways tbody tr")).to_have_count(1)
    expect(page.locator("#gateways tbody tr").first).to_have_attribute("data-gateway", "gw2")
    # their own SOS: a grid worker may accept or reject it, nothing a supervisor does
    page.goto(f"/console/incidents/{world['c02']}")
    screen.rendered("incident")
    buttons = page.locator("#actions button")
    expect(buttons).to_have_count(2)
    assert [buttons.nth(i).get_attribute("data-action") for i in range(2)] == ["accept", "reject"]


def test_an_action_the_server_refuses_shows_its_reason(
    screens: Callable[..., Screen], world: dict[str, int]
) -> None:
    first, second = screens(), screens()
    # k-li's page hears nothing live (its feed answers an empty stream), so it still offers
    # "accept" after w-zhang accepted: the server refuses the stale action
    quiet = {"status": 200, "content_type": "text/event-stream", "body": ": quiet\n\n"}
    first.page.route("**/api/v1/live", lambda route: route.fulfill(**quiet))
    page = first.log_in("k-li", then=f"/console/incidents/{world['sos']}")
    first.rendered("incident")
    other = second.log_in("w-zhang", then=f"/console/incidents/{world['sos']}")
    second.rendered("incident")
    other.get_by_role("button", name="接单").click()
    expect(other.locator("#incident-state")).to_have_attribute("data-state", "accepted")
    page.get_by_role("button", name="接单").click()
    problem = page.locator("#action-problem")
    expect(problem).to_contain_text("操作被拒绝: incident")
    expect(problem).to_contain_text("changed since version 0")
    expect(page.locator("#incident-state")).to_have_attribute("data-state", "accepted")  # reloaded
    first.shoot("incident-refused", page)
    # a false alarm needs a reason: the workflow says so
    page.get_by_role("button", name="误报").click()
    page.get_by_role("button", name="提交").click()
    expect(problem).to_contain_text("reject needs a note")
    expect(page.locator("#incident-state")).to_have_attribute("data-state", "accepted")


def test_the_language_switch_changes_the_texts(screens: Callable[..., Screen], world: dict[str, int]) -> None:
    screen = screens()
    page = screen.log_in("k-li")
    screen.rendered("board")
    expect(page.get_by_role("heading", level=1)).to_have_text("实时看板: 未办结的事件")
    page.get_by_role("link", name="语言: English").click()
    screen.rendered("board")
    expect(page.get_by_role("heading", level=1)).to_have_text("Live board: open incidents")
    expect(page.locator("html")).to_have_attribute("lang", "en")
    expect(page.locator("#incident-rows tr").first.locator(".badge")).to_have_text("critical")
    page.get_by_role("link", name="Map").click()  # the choice is remembered
    screen.rendered("map")
    expect(page.get_by_role("heading", level=1)).to_have_text("Site plan")
    page.get_by_role("link", name="Language: 中文").click()
    screen.rendered("map")
    expect(page.get_by_role("heading", level=1)).to_have_text("一张图")


def test_the_map_shows_the_inventorys_devices(screens: Callable[..., Screen], world: dict[str, int]) -> None:
    for width in ("desktop", "phone"):
        screen = screens(width)
        page = screen.log_in("k-li", then="/console/map")
        screen.rendered("map")
        assert page.evaluate("window.linliMap.count()") == 31
        expect(page.locator("#map-summary")).to_have_text("31 台设备: 在线 30, 离线 1, 有未办结事件 2")
        expect(page.locator("#alarm-devices li")).to_have_count(2)
        where = page.evaluate("window.linliMap.screenOf('sos-1')")
        page.mouse.click(where["x"], where["y"])
        expect(page.locator("#picked h2")).to_have_text("sos-1")
        expect(page.locator("#picked")).to_contain_text("3号楼 2单元")
        screen.shoot("map", page)
    page.locator("#plan").focus()
    page.keyboard.press("+")
    page.keyboard.press("ArrowLeft")
    moved = page.evaluate("window.linliMap.screenOf('sos-1')")
    assert moved != where
    page.get_by_role("link", name="打开设备页").click()
    screen.rendered("device")
    expect(page.get_by_role("heading", level=1)).to_have_text("设备 sos-1")


def test_the_device_page_charts_its_history_and_zooms_to_raw(
    screens: Callable[..., Screen], world: dict[str, int]
) -> None:
    for width in ("phone", "desktop"):  # the zoom below drags on the wider chart
        screen = screens(width)
        page = screen.log_in("k-li", then="/console/devices/door-00")
        screen.rendered("device")
        expect(page.locator("#latest tbody tr[data-metric='battery_pct'] td").nth(1)).to_contain_text("90")
        chart = page.locator("#history-chart")
        expect(chart).to_have_attribute("data-interval", "5m")
        expect(chart.locator("canvas")).to_have_count(1)
        expect(page.locator("#events tbody tr")).to_have_count(2)
        expect(page.locator("#health-chart canvas")).to_have_count(1)
        screen.shoot("device", page)
    page.get_by_label("时间范围").select_option("1h")
    expect(chart).to_have_attribute("data-interval", "raw")
    page.get_by_label("时间范围").select_option("7d")
    expect(chart).to_have_attribute("data-interval", "1h")
    # drag across part of the chart: the selection is fetched again at a finer grain
    box = chart.locator(".u-over").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.97, box["y"] + box["height"] / 2)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.99, box["y"] + box["height"] / 2, steps=4)
    page.mouse.up()
    expect(chart).to_have_attribute("data-interval", "raw")


def test_gateways_and_performance(screens: Callable[..., Screen], world: dict[str, int]) -> None:
    for width in ("desktop", "phone"):
        screen = screens(width)
        page = screen.log_in("s-wang", then="/console/gateways")
        screen.rendered("gateways")
        rows = page.locator("#gateways tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.first).to_contain_text("42 (SOS/alarm 2)")
        expect(rows.first).to_contain_text("field ✓")
        expect(rows.first).to_contain_text("待审批 3")  # devices heard that the inventory lacks
        screen.shoot("gateways", page)
        page.get_by_role("link", name="闭环考核").click()
        screen.rendered("performance")
        expect(page.locator("#by-community tbody tr")).to_have_count(2)
        expect(page.locator("#by-community tbody tr").first).to_have_attribute("data-community", "c01")
        screen.shoot("performance", page)


def test_a_lamp_is_switched_and_dimmed_from_its_page_and_its_commands_followed(
    screens: Callable[..., Screen], world: dict[str, int], migrated_url: str
) -> None:
    import psycopg

    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO devices (device_id, device_type, profile, community_id, gateway_id, lat, lon,"
            " status) VALUES ('861234567890123', 'streetlight', 'generic_nbiot/streetlight', 'c01', 'gw1',"
            " 31.2, 121.4, 'online')"
        )
    screen = screens("desktop")
    page = screen.log_in("k-li", then="/console/devices/861234567890123")
    screen.rendered("device")
    card = page.locator("#commands-card")
    expect(card).to_be_visible()
    expect(card.locator("#commands tbody")).to_contain_text("暂无指令")
    # tonight's schedule of c01 (the test settings' "*" plan): on, dimmed, full again, off
    expect(page.locator("#schedule-table tbody tr")).to_have_count(4)
    expect(page.locator("#schedule-table tbody tr").nth(1)).to_contain_text("40 %")
    card.get_by_role("button", name="开灯").click()
    expect(page.locator("#command-done")).to_contain_text("switch on=true")
    page.get_by_label("亮度 (%)").fill("30")
    card.get_by_role("button", name="调光").click()
    expect(page.locator("#commands tbody tr")).to_have_count(2)
    expect(page.locator("#commands tbody tr").nth(0)).to_contain_text("dim level_pct=30")
    expect(page.locator("#commands tbody tr").nth(1)).to_contain_text("排队中")
    # the gateway's report arrives: the page follows the command until it ends
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        conn.execute("UPDATE commands SET state = 'confirmed', updated_at = now() WHERE name = 'switch'")
    expect(page.locator("#commands tbody tr[data-state='confirmed']")).to_contain_text("已确认")
    # a level the standard refuses: the reason is shown, nothing is queued
    page.get_by_label("亮度 (%)").fill("150")
    card.get_by_role("button", name="调光").click()
    expect(page.locator("#command-problem")).to_contain_text("level_pct 150 is outside 0..100")
    expect(page.locator("#commands tbody tr")).to_have_count(2)
    screen.shoot("device-commands", page)

"""The console's reason to exist, end to end in chromium: a simulated SOS button is pressed, the
press travels field broker -> edge agent -> cloud broker -> ingest -> TimescaleDB -> alert
service -> incident -> the API's live feed, appears on an open board within 2 s, and a committee
member works it to closure through the pages (accept, dispatch, handle, verify, close, assess,
rate); the audit trail shows every step, and the board lets it go when it is closed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from playwright.sync_api import expect

from simulators.services import MosquittoBroker
from tests.cloud.api.console.conftest import Screen
from tests.e2e.chain import Chain

pytestmark = [pytest.mark.integration, pytest.mark.slow]

FLEET = """\
communities:
  - id: c01
    lat: 31.2154
    lon: 121.4371
    gateways: 1
    devices: {door_contact: 6, sos_button: 2}
"""

PRESS = """\
name: console-press
description: a resident presses the SOS button a few seconds into the run
events:
  - type: sos_press
    at: "+4s"
    device: auto
"""

STEPS = (  # (button, what it asks, the state after)
    ("接单", None, "accepted"),
    ("派单", "handler", "dispatched"),
    ("处置完成", "note", "handled"),
    ("核查通过", None, "verified"),
    ("结案", None, "closed"),
    ("考核", None, "assessed"),
    ("评价", "rating", "rated"),
)


def test_an_sos_press_reaches_the_board_and_is_worked_to_closure(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    migrated_url: str,
    screens: Callable[..., Screen],
    accounts: Callable[..., None],
) -> None:
    accounts("k-li")
    chain = Chain(
        tmp_path,
        fleet=FLEET,
        make_broker=make_broker,
        database_url=migrated_url,
        alerts={"clock": "wall"},
    )
    (tmp_path / "press.yaml").write_text(PRESS)
    sim = chain.sim("--seed", "3", "--start", "now", "--speed", "1", "--duration", "30s", "--scenario",
                    str(tmp_path / "press.yaml"))  # fmt: skip
    screen = screens()
    try:
        chain.start()
        board = screen.log_in("k-li")
        screen.rendered("board", board)
        expect(board.locator("#live-state")).to_have_text("实时连接")
        sim.start()
        row = board.locator("#incident-rows tr[data-severity='critical']")
        expect(row).to_have_count(1, timeout=60_000)
        incident = int(row.get_attribute("data-incident") or 0)
        shown_ms = int(row.get_attribute("data-shown-at") or 0)
        with psycopg.connect(migrated_url) as conn:
            times = conn.execute(
                "SELECT (extract(epoch FROM started_at) * 1000)::bigint,"
                " (extract(epoch FROM created_at) * 1000)::bigint, state FROM incidents"
                " WHERE incident_id = %s",
                (incident,),
            ).fetchone()
        assert times is not None
        pressed_ms, created_ms, _ = times
        latency_ms = shown_ms - pressed_ms
        print(f"SOS press -> incident {created_ms - pressed_ms} ms -> on the board {latency_ms} ms")
        assert 0 < latency_ms < 2000, f"the SOS took {latency_ms} ms to reach the board"
        expect(board.locator("#alarm")).to_be_visible()
        assert board.title().startswith("🚨 SOS")
        screen.shoot("board-sos", board)

        page = screen.new_page()
        page.goto(f"/console/incidents/{incident}")
        screen.rendered("incident", page)
        # the alert service wrote the inventory's places to the devices table: the page says where
        expect(page.locator("#facts")).to_contain_text("号楼")
        state = page.locator("#incident-state")
        for button, asks, after in STEPS:
            page.get_by_role("button", name=button, exact=True).click()
            if asks == "handler":
                page.get_by_label("派给").select_option("w-zhang")
                page.get_by_label("说明").fill("请上门查看")
            elif asks == "note":
                page.get_by_label("说明").fill("老人在家摔倒, 已扶起并联系家属")
            elif asks == "rating":
                page.get_by_label("满意度 (1-5)").select_option("5")
                page.get_by_label("评价内容").fill("响应及时")
            if asks:
                page.get_by_role("button", name="提交").click()
            expect(state).to_have_attribute("data-state", after)
            if after == "dispatched":
                screen.shoot("incident", page)
        actions = page.locator("#audit tbody tr")
        done = [a for a in actions.evaluate_all("rows => rows.map(r => r.dataset.action)") if a in
                {"accept", "dispatch", "handle", "verify", "close", "assess", "rate"}]  # fmt: skip
        assert done == ["accept", "dispatch", "handle", "verify", "close", "assess", "rate"]
        expect(page.locator("#audit tbody")).to_contain_text("老人在家摔倒")
        expect(page.locator("#facts")).to_contain_text("★★★★★ 响应及时")
        screen.shoot("incident-rated", page)
        # the board, still open in the other tab, let it go when it was closed
        expect(board.locator(f"#incident-rows tr[data-incident='{incident}']")).to_have_count(0)
        # the map draws the inventory's devices, heard or not, in their buildings
        page.goto("/console/map")
        screen.rendered("map", page)
        assert page.evaluate("window.linliMap.count()") == 8
        expect(page.locator("#map-summary")).to_contain_text("8 台设备")
        with psycopg.connect(migrated_url) as conn:
            assert conn.execute(
                "SELECT state FROM incidents WHERE incident_id = %s", (incident,)
            ).fetchone() == ("rated",)
    finally:
        sim.stop(timeout=10)
        chain.stop()

"""The vendor-robot stand-in: each endpoint accepts and refuses what the real API would, with its codes.

A plain stdlib HTTP client talks to a real server on a free local port; time is a fake clock that
the tests move, so rate limits and signature windows are checked without sleeping.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.client
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote_plus, urlsplit

import pytest

from simulators.pushes import PushServer, Received, Refused

T0 = 1_750_000_000.0  # 2025-06-15T15:06:40Z


class FakeClock:
    """The server's clock: stands still until a test moves it."""

    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def server(clock: FakeClock) -> Iterator[PushServer]:
    with PushServer(clock=clock) as push:
        yield push


def post(url: str, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    """POST `body` (JSON unless bytes); (HTTP status, parsed JSON or text of the answer)."""
    parts = urlsplit(url)
    raw = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
    connection = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=5)
    try:
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sent = {"Content-Type": "application/json; charset=utf-8", **(headers or {})}
        connection.request("POST", target, body=raw, headers=sent)
        response = connection.getresponse()
        data = response.read()
        if (response.getheader("Content-Type") or "").startswith("application/json"):
            return response.status, json.loads(data)
        return response.status, data.decode()
    finally:
        connection.close()


def wecom_text(content: str, mobiles: list[str] | None = None) -> dict[str, Any]:
    return {"msgtype": "text", "text": {"content": content, "mentioned_mobile_list": mobiles or []}}


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """The base64 signature, before URL encoding (as DingTalk documents it)."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def dingtalk_url(base: str, secret: str, now: float) -> str:
    ts = int(now * 1000)
    return f"{base}&timestamp={ts}&sign={quote_plus(dingtalk_sign(secret, ts))}"


def dingtalk_text(content: str, mobiles: list[str] | None = None) -> dict[str, Any]:
    return {
        "msgtype": "text",
        "text": {"content": content},
        "at": {"atMobiles": mobiles or [], "isAtAll": False},
    }


def feishu_signed(body: dict[str, Any], secret: str, timestamp: int | str) -> dict[str, Any]:
    key = f"{timestamp}\n{secret}".encode()
    sign = base64.b64encode(hmac.new(key, b"", hashlib.sha256).digest()).decode()
    return {"timestamp": timestamp, "sign": sign, **body}


def feishu_text(text: str) -> dict[str, Any]:
    return {"msg_type": "text", "content": {"text": text}}


def webhook_headers(secret: str, raw: bytes, timestamp: int, key: str | None = "linli-1") -> dict[str, str]:
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + raw, hashlib.sha256).hexdigest()
    headers = {"X-Linli-Timestamp": str(timestamp), "X-Linli-Signature": f"sha256={mac}"}
    if key is not None:
        headers["X-Linli-Idempotency-Key"] = key
    return headers


OK_WECOM = {"errcode": 0, "errmsg": "ok"}


# -- WeCom ---------------------------------------------------------------------------------------


def test_wecom_accepts_text_with_mentions_and_markdown(server: PushServer, clock: FakeClock) -> None:
    url = server.add_wecom("k-1")
    assert url == f"{server.url}/cgi-bin/webhook/send?key=k-1"
    assert post(url, wecom_text("【紧急】3号楼SOS", ["13800000001"])) == (200, OK_WECOM)
    clock.advance(1)
    assert post(url, {"msgtype": "markdown", "markdown": {"content": "## 井盖移位\n> 5号井"}}) == (
        200,
        OK_WECOM,
    )
    first, second = server.received
    assert first == Received(
        kind="wecom",
        robot="k-1",
        at=T0,
        body=wecom_text("【紧急】3号楼SOS", ["13800000001"]),
        text="【紧急】3号楼SOS",
        mentions=("13800000001",),
    )
    assert (second.text, second.mentions, second.at) == ("## 井盖移位\n> 5号井", (), T0 + 1)
    assert server.refused == []


def test_wecom_refusals(server: PushServer) -> None:
    url = server.add_wecom("k-1")
    assert post(url.replace("k-1", "nope"), wecom_text("hi")) == (
        200,
        {"errcode": 93000, "errmsg": "invalid webhook url"},
    )
    assert post(url, b"{not json")[1]["errcode"] == 40008
    assert post(url, {"msgtype": "image", "image": {}})[1]["errcode"] == 40008
    assert post(url, wecom_text("   ")) == (200, {"errcode": 44004, "errmsg": "text content empty"})
    assert post(url, {"msgtype": "text"})[1]["errcode"] == 44004
    assert [(r.robot, r.code) for r in server.refused] == [
        ("nope", 93000),
        ("k-1", 40008),
        ("k-1", 40008),
        ("k-1", 44004),
        ("k-1", 44004),
    ]
    assert server.received == []


def test_wecom_limits_are_in_utf8_bytes(server: PushServer) -> None:
    url = server.add_wecom("k-1")
    text_2048 = "告警" * 341 + "ab"  # 682 three-byte characters + 2 = 2048 bytes, 684 characters
    assert len(text_2048.encode()) == 2048
    assert post(url, wecom_text(text_2048)) == (200, OK_WECOM)
    assert post(url, wecom_text(text_2048 + "c")) == (
        200,
        {"errcode": 40058, "errmsg": "content exceed max length"},
    )
    markdown_4096 = "井" * 1365 + "x"
    assert len(markdown_4096.encode()) == 4096
    assert post(url, {"msgtype": "markdown", "markdown": {"content": markdown_4096}}) == (200, OK_WECOM)
    refused = post(url, {"msgtype": "markdown", "markdown": {"content": markdown_4096 + "y"}})
    assert refused[1]["errcode"] == 40058
    assert [m.text for m in server.received] == [text_2048, markdown_4096]


def test_wecom_rate_limit_is_a_sliding_minute(server: PushServer, clock: FakeClock) -> None:
    url = server.add_wecom("k-1")
    other = server.add_wecom("k-2")
    for _ in range(10):
        assert post(url, wecom_text("a")) == (200, OK_WECOM)
    clock.advance(30)
    for _ in range(10):
        assert post(url, wecom_text("b")) == (200, OK_WECOM)
    assert post(url, wecom_text("c")) == (200, {"errcode": 45009, "errmsg": "api freq out of limit"})
    assert post(other, wecom_text("another key has its own budget")) == (200, OK_WECOM)
    clock.advance(29.9)  # the first ten are still within the minute
    assert post(url, wecom_text("d"))[1]["errcode"] == 45009
    clock.advance(0.1)  # now they are not: ten more may go
    for _ in range(10):
        assert post(url, wecom_text("e")) == (200, OK_WECOM)
    assert post(url, wecom_text("f"))[1]["errcode"] == 45009
    assert [r.code for r in server.refused] == [45009, 45009, 45009]
    assert len(server.received) == 31


# -- DingTalk ------------------------------------------------------------------------------------


def test_dingtalk_accepts_signed_text_and_markdown(server: PushServer, clock: FakeClock) -> None:
    base = server.add_dingtalk("t-1", "SECabc")
    assert base == f"{server.url}/robot/send?access_token=t-1"
    answer = post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("3号楼SOS", ["13900000002"]))
    assert answer == (200, {"errcode": 0, "errmsg": "ok"})
    markdown = {"msgtype": "markdown", "markdown": {"title": "井盖", "text": "### 井盖移位"}}
    assert post(dingtalk_url(base, "SECabc", clock()), markdown)[1]["errcode"] == 0
    first, second = server.received
    assert (first.kind, first.robot, first.text, first.mentions) == (
        "dingtalk",
        "t-1",
        "3号楼SOS",
        ("13900000002",),
    )
    assert (second.text, second.mentions) == ("### 井盖移位", ())


def test_dingtalk_sign_is_compared_after_url_decoding(server: PushServer, clock: FakeClock) -> None:
    base = server.add_dingtalk("t-1", "SECabc")
    ts = next(
        t for t in range(int(clock() * 1000), int(clock() * 1000) + 1000) if "+" in dingtalk_sign("SECabc", t)
    )
    sign = dingtalk_sign("SECabc", ts)
    # Not URL-encoded, the "+" arrives as a space: DingTalk refuses it too.
    assert post(f"{base}&timestamp={ts}&sign={sign}", dingtalk_text("x"))[1]["errcode"] == 310000
    assert post(f"{base}&timestamp={ts}&sign={quote_plus(sign)}", dingtalk_text("x"))[1]["errcode"] == 0


def test_dingtalk_refusals(server: PushServer, clock: FakeClock) -> None:
    base = server.add_dingtalk("t-1", "SECabc")
    unknown = dingtalk_url(base.replace("t-1", "nope"), "SECabc", clock())
    assert post(unknown, dingtalk_text("x")) == (200, {"errcode": 300001, "errmsg": "token is not exist"})
    errcode, errmsg = post(dingtalk_url(base, "SECwrong", clock()), dingtalk_text("x"))[1].values()
    assert errcode == 310000
    assert errmsg.startswith("sign not match, more: [")
    assert post(base, dingtalk_text("x"))[1]["errcode"] == 310000  # no timestamp or sign at all
    two_hours_ago = dingtalk_url(base, "SECabc", clock() - 7200)  # correctly signed, but stale
    assert post(two_hours_ago, dingtalk_text("x"))[1]["errcode"] == 310000
    assert post(dingtalk_url(base, "SECabc", clock() - 3500), dingtalk_text("x"))[1]["errcode"] == 0
    assert post(dingtalk_url(base, "SECabc", clock()), b"[]")[1]["errcode"] == 40035
    assert [r.code for r in server.refused] == [300001, 310000, 310000, 310000, 40035]


def test_dingtalk_keyword_rule(server: PushServer, clock: FakeClock) -> None:
    base = server.add_dingtalk("t-1", "SECabc", keyword="告警")
    status, answer = post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("3号楼SOS"))
    assert status == 200
    assert answer["errcode"] == 310000
    assert answer["errmsg"].startswith("keywords not in content")
    assert post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("告警 3号楼SOS"))[1]["errcode"] == 0
    markdown = {"msgtype": "markdown", "markdown": {"title": "告警", "text": "井盖移位"}}
    assert post(dingtalk_url(base, "SECabc", clock()), markdown)[1]["errcode"] == 0  # the title counts
    assert [m.text for m in server.received] == ["告警 3号楼SOS", "井盖移位"]


def test_dingtalk_too_fast_blocks_the_robot_for_ten_minutes(server: PushServer, clock: FakeClock) -> None:
    base = server.add_dingtalk("t-1", "SECabc")
    for _ in range(20):
        assert post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("x"))[1]["errcode"] == 0
    too_fast = {"errcode": 130101, "errmsg": "send too fast, exceed 20 times per minute"}
    assert post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("21st")) == (200, too_fast)
    clock.advance(540)  # nine minutes on: the minute's budget is back, but the robot is still blocked
    assert post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("later")) == (200, too_fast)
    clock.advance(60)  # ten minutes after the 21st
    assert post(dingtalk_url(base, "SECabc", clock()), dingtalk_text("again"))[1]["errcode"] == 0
    assert [r.code for r in server.refused] == [130101, 130101]
    assert server.received[-1].text == "again"


# -- Feishu --------------------------------------------------------------------------------------

OK_FEISHU = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}


def test_feishu_accepts_text_post_and_card(server: PushServer) -> None:
    url = server.add_feishu("f-1")
    assert url == f"{server.url}/open-apis/bot/v2/hook/f-1"
    assert post(url, feishu_text("3号楼SOS")) == (200, OK_FEISHU)
    rich = {
        "msg_type": "post",
        "content": {
            "post": {
                "zh_cn": {
                    "title": "井盖移位",
                    "content": [
                        [{"tag": "text", "text": "5号井 "}, {"tag": "a", "text": "详情", "href": "http://x"}],
                        [{"tag": "at", "user_id": "ou_1", "user_name": "张三"}],
                    ],
                }
            }
        },
    }
    assert post(url, rich) == (200, OK_FEISHU)
    card = {
        "msg_type": "interactive",
        "card": {
            "elements": [
                {"tag": "div", "text": {"tag": "lark_md", "content": "**5号井** 倾斜"}},
                {
                    "tag": "action",
                    "actions": [{"tag": "button", "text": {"tag": "plain_text", "content": "查看"}}],
                },
            ],
            "header": {"title": {"tag": "plain_text", "content": "【严重】井盖移位"}, "template": "red"},
        },
    }
    assert post(url, card) == (200, OK_FEISHU)
    assert [m.text for m in server.received] == [
        "3号楼SOS",
        "井盖移位\n5号井 详情\n@张三",
        "【严重】井盖移位\n**5号井** 倾斜\n查看",
    ]
    assert all(m.mentions == () and m.kind == "feishu" for m in server.received)


def test_feishu_signature(server: PushServer, clock: FakeClock) -> None:
    url = server.add_feishu("f-1", "s3cret")
    now = int(clock())
    assert post(url, feishu_signed(feishu_text("a"), "s3cret", str(now))) == (200, OK_FEISHU)
    assert post(url, feishu_signed(feishu_text("b"), "s3cret", now - 3000)) == (200, OK_FEISHU)  # an int
    bad = {
        "code": 19021,
        "msg": "sign match fail or timestamp is not within one hour from current time",
        "data": {},
    }
    assert post(url, feishu_signed(feishu_text("c"), "wrong", str(now))) == (200, bad)
    assert post(url, feishu_signed(feishu_text("d"), "s3cret", str(now - 3700))) == (200, bad)
    assert post(url, feishu_text("unsigned")) == (200, bad)
    assert [m.text for m in server.received] == ["a", "b"]
    assert [r.code for r in server.refused] == [19021, 19021, 19021]


def test_feishu_refusals(server: PushServer) -> None:
    url = server.add_feishu("f-1")
    assert post(url.replace("f-1", "nope"), feishu_text("x")) == (
        200,
        {"code": 19001, "msg": "param invalid: incoming webhook access token invalid", "data": {}},
    )
    assert post(url, feishu_text("大" * 7000))[1] == {
        "code": 9499,
        "msg": "request body too large",
        "data": {},
    }
    assert post(url, b"nope")[1]["code"] == 9499
    assert post(url, {"msg_type": "image"})[1]["code"] == 19002
    assert [r.code for r in server.refused] == [19001, 9499, 9499, 19002]


def test_feishu_rate_limits(server: PushServer, clock: FakeClock) -> None:
    url = server.add_feishu("f-1", per_minute=8)
    for _ in range(5):
        assert post(url, feishu_text("x")) == (200, OK_FEISHU)
    too_fast = {
        "code": 11232,
        "msg": "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]",
        "data": {},
    }
    assert post(url, feishu_text("6th in a second")) == (200, too_fast)
    clock.advance(1)
    for _ in range(3):
        assert post(url, feishu_text("y")) == (200, OK_FEISHU)
    assert post(url, feishu_text("9th in a minute")) == (200, too_fast)
    clock.advance(59)
    assert post(url, feishu_text("z")) == (200, OK_FEISHU)
    assert len(server.received) == 9


def test_concurrent_requests_share_one_budget(server: PushServer) -> None:
    url = server.add_feishu("f-1")
    with ThreadPoolExecutor(max_workers=12) as pool:
        codes = list(pool.map(lambda i: post(url, feishu_text(f"#{i}"))[1]["code"], range(12)))
    assert sorted(codes) == [0] * 5 + [11232] * 7
    assert len(server.received) == 5
    assert len(server.refused) == 7


# -- linli's generic webhook ---------------------------------------------------------------------


def test_webhook_accepts_signed_and_flags_duplicates(server: PushServer, clock: FakeClock) -> None:
    url = server.add_webhook("ops", "whsec")
    assert url == f"{server.url}/hooks/ops"
    raw = json.dumps({"id": 7, "text": "3号楼SOS"}, ensure_ascii=False).encode()
    assert post(url, raw, webhook_headers("whsec", raw, int(clock()), "linli-7")) == (200, {"ok": True})
    clock.advance(5)
    again = post(url, raw, webhook_headers("whsec", raw, int(clock()), "linli-7"))
    assert again == (200, {"ok": True, "duplicate": True})
    other = json.dumps({"id": 8}).encode()
    assert post(url, other, webhook_headers("whsec", other, int(clock()), "linli-8")) == (200, {"ok": True})
    first, second, third = server.received
    assert (first.text, first.idempotency_key, first.duplicate, first.body) == (
        "3号楼SOS",
        "linli-7",
        False,
        {"id": 7, "text": "3号楼SOS"},
    )
    assert (second.idempotency_key, second.duplicate, second.at) == ("linli-7", True, T0 + 5)
    assert (third.text, third.duplicate) == ("", False)


def test_webhook_refusals(server: PushServer, clock: FakeClock) -> None:
    url = server.add_webhook("ops", "whsec")
    raw = b'{"text": "x"}'
    now = int(clock())
    bad = (401, {"error": "bad signature"})
    assert post(url, raw, webhook_headers("wrong", raw, now)) == bad
    assert post(url, raw, webhook_headers("whsec", raw, now - 301)) == bad  # a replay
    assert post(url, raw, webhook_headers("whsec", raw + b" ", now)) == bad  # the body was changed
    assert post(url, raw) == bad  # unsigned
    assert post(url, raw, webhook_headers("whsec", raw, now, key=None)) == (
        400,
        {"error": "missing idempotency key"},
    )
    assert post(url.replace("ops", "nope"), raw, webhook_headers("whsec", raw, now))[0] == 404
    assert post(url, raw, webhook_headers("whsec", raw, now - 299)) == (200, {"ok": True})
    assert [(r.kind, r.code) for r in server.refused] == [
        ("webhook", c) for c in (401, 401, 401, 401, 400, 404)
    ]


# -- the server ----------------------------------------------------------------------------------


def test_fail_next_injects_http_errors(server: PushServer, clock: FakeClock) -> None:
    wecom = server.add_wecom("k-1")
    dingtalk = server.add_dingtalk("t-1", "SECabc")
    server.fail_next("wecom", 2)
    server.fail_next("dingtalk", 1, status=429)
    assert post(wecom, wecom_text("1")) == (503, "503 Service Unavailable")
    assert post(wecom, wecom_text("2"))[0] == 503
    assert post(wecom, wecom_text("3")) == (200, OK_WECOM)
    assert post(dingtalk_url(dingtalk, "SECabc", clock()), dingtalk_text("x"))[0] == 429
    assert post(dingtalk_url(dingtalk, "SECabc", clock()), dingtalk_text("x"))[1]["errcode"] == 0
    assert [(r.kind, r.robot, r.code) for r in server.refused] == [
        ("wecom", "k-1", 503),
        ("wecom", "k-1", 503),
        ("dingtalk", "t-1", 429),
    ]
    assert [m.text for m in server.received] == ["3", "x"]
    with pytest.raises(ValueError, match="unknown kind"):
        server.fail_next("email", 1)
    with pytest.raises(ValueError, match="HTTP error"):
        server.fail_next("wecom", 1, status=200)


def test_wait_for_and_recent(server: PushServer) -> None:
    url = server.add_wecom("k-1")
    sender = threading.Thread(target=lambda: [post(url, wecom_text(f"m{i}")) for i in range(12)])
    sender.start()
    try:
        assert server.wait_for(lambda s: len(s.received) == 12, timeout=5)
    finally:
        sender.join()
    assert [m.text for m in server.recent(3)] == ["m9", "m10", "m11"]
    assert len(server.recent()) == 10
    assert server.recent(0) == []
    assert not server.wait_for(lambda s: len(s.refused) > 0, timeout=0.05)


def test_other_paths_are_not_found_and_not_recorded(server: PushServer) -> None:
    assert post(f"{server.url}/cgi-bin/other", wecom_text("x"))[0] == 404
    assert post(f"{server.url}/open-apis/bot/v2/hook/", feishu_text("x"))[0] == 404
    assert server.received == []
    assert server.refused == []


def test_lifecycle() -> None:
    push = PushServer()
    assert push.url.startswith("http://127.0.0.1:")
    push.close()  # never started: just releases the socket
    push.close()
    with pytest.raises(RuntimeError, match="closed"):
        push.start()
    with PushServer() as running:
        with pytest.raises(RuntimeError, match="already started"):
            running.start()
        # a kept-alive connection does not keep the server from closing
        connection = http.client.HTTPConnection("127.0.0.1", urlsplit(running.url).port, timeout=5)
        connection.request("POST", "/nowhere", body=b"{}")
        assert connection.getresponse().read() == b"404 Not Found"
    connection.close()
    with PushServer() as other, pytest.raises(ValueError, match="per_minute"):
        other.add_wecom("k", per_minute=0)


def test_refused_is_a_record() -> None:
    refused = Refused(kind="wecom", robot="k", at=T0, code=45009, message="api freq out of limit")
    with pytest.raises(AttributeError):
        refused.code = 0  # type: ignore[misc]

"""A local stand-in for the vendors' group-robot APIs, so tests and the demo can see linli's pushes.

`PushServer` is a real HTTP server (stdlib ``ThreadingHTTPServer`` on a background thread, bound to
127.0.0.1 on a free port by default) that answers the way the vendors do, including their quirks:
the three robot APIs answer HTTP 200 when they refuse a message and put the error in the body.

=========  ============================================  =============================================
kind       endpoint                                      checks (codes as the vendor sends them)
=========  ============================================  =============================================
wecom      ``POST /cgi-bin/webhook/send?key=KEY``        key (93000), JSON and msgtype (40008), empty
                                                         content (44004), UTF-8 bytes: text 2048,
                                                         markdown 4096 (40058), per-key rate (45009)
dingtalk   ``POST /robot/send?access_token=T&timestamp=  token (300001), signature and 1 h timestamp
           MS&sign=SIGN``                                window (310000), rate: over the limit in a
                                                         minute blocks the robot 10 min (130101),
                                                         JSON (40035), keyword rule (310000)
feishu     ``POST /open-apis/bot/v2/hook/TOKEN``         token (19001), body 20 KiB (9499), JSON
                                                         (9499), signature and 1 h window (19021),
                                                         rate per second and per minute (11232),
                                                         msg_type (19002), content (9499)
webhook    ``POST /hooks/NAME`` (linli's own)            name (HTTP 404), HMAC signature and 300 s
                                                         window (401), idempotency key (400), JSON
                                                         object (400); a repeated key is acknowledged
                                                         (200) and flagged as a duplicate
=========  ============================================  =============================================

Every request to one of these endpoints is recorded: accepted ones in `PushServer.received`,
refused ones in `PushServer.refused` with the code the vendor would send (for the generic webhook and
`PushServer.fail_next`, the HTTP status). Requests to any other path get a 404 and are not recorded.
Rate and timestamp windows use the injected clock, so tests move time instead of sleeping, and
`PushServer.wait_for` lets a test wait for a fact (a message arrived) without polling.
"""

from __future__ import annotations

import contextlib
import json
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Final, Literal, cast, get_args
from urllib.parse import parse_qs, quote, unquote, urlsplit

from simulators import push_checks

Kind = Literal["wecom", "dingtalk", "feishu", "webhook"]
KINDS: Final[tuple[Kind, ...]] = get_args(Kind)

#: The vendors' limits, as documented by them.
WECOM_TEXT_BYTES: Final = 2048
WECOM_MARKDOWN_BYTES: Final = 4096
FEISHU_BODY_BYTES: Final = 20 * 1024
#: DingTalk blocks a robot for 10 minutes once it sends too fast.
DINGTALK_BLOCK_S: Final = 600.0

_MAX_REQUEST_BYTES: Final = 1 << 20  # larger bodies are not read at all (HTTP 413)

_WECOM_PATH: Final = "/cgi-bin/webhook/send"
_DINGTALK_PATH: Final = "/robot/send"
_FEISHU_PREFIX: Final = "/open-apis/bot/v2/hook/"
_WEBHOOK_PREFIX: Final = "/hooks/"


@dataclass(frozen=True, slots=True)
class Received:
    """A message the server accepted, as the people in the group (or the receiving system) see it.

    Attributes:
        kind: which endpoint took it.
        robot: the WeCom key, DingTalk or Feishu token, or webhook name it was sent to.
        at: the server's (injected) clock when it arrived.
        body: the JSON body as sent.
        text: the human-visible text (a Feishu post or card flattened to lines; for the webhook,
            ``body["text"]`` or ``""``).
        mentions: mobiles mentioned (WeCom ``text.mentioned_mobile_list``, DingTalk ``at.atMobiles``).
        idempotency_key: the webhook's ``X-Linli-Idempotency-Key`` (None for the robots).
        duplicate: webhook only: that key had been received before, so a correct receiver
            acknowledges it but does not apply it again.
    """

    kind: Kind
    robot: str
    at: float
    body: dict[str, Any]
    text: str
    mentions: tuple[str, ...] = ()
    idempotency_key: str | None = None
    duplicate: bool = False


@dataclass(frozen=True, slots=True)
class Refused:
    """A request the server refused: `code` is the vendor's ``errcode``/``code``, or the HTTP status
    for the generic webhook and for failures injected with `PushServer.fail_next`."""

    kind: Kind
    robot: str
    at: float
    code: int
    message: str


@dataclass(slots=True)
class _WeComRobot:
    per_minute: int
    sent: deque[float] = field(default_factory=deque)


@dataclass(slots=True)
class _DingTalkRobot:
    secret: str
    keyword: str | None
    per_minute: int
    sent: deque[float] = field(default_factory=deque)
    blocked_until: float = float("-inf")


@dataclass(slots=True)
class _FeishuRobot:
    secret: str | None
    per_minute: int
    per_second: int
    sent: deque[float] = field(default_factory=deque)


@dataclass(slots=True)
class _Hook:
    secret: str
    seen: set[str] = field(default_factory=set)


@dataclass(frozen=True, slots=True)
class _Reply:
    """What to answer (a JSON object, or plain text) and what to record."""

    status: int
    payload: dict[str, Any] | str
    record: Received | Refused
    headers: tuple[tuple[str, str], ...] = ()


class PushServer:
    """One local HTTP server emulating the WeCom, DingTalk and Feishu group robots and linli's generic
    webhook receiver, recording every message it accepts or refuses.

    Register robots with the ``add_*`` methods (each returns the URL to configure in linli), then
    `start` it (or use it as a context manager). The socket is bound when the object is built, so
    URLs are known before the server starts; `close` releases it.
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, clock: Callable[[], float] = time.time
    ) -> None:
        self.clock = clock
        self._cond = threading.Condition(threading.RLock())
        self._received: list[Received] = []
        self._refused: list[Refused] = []
        self._failures: dict[Kind, deque[int]] = {kind: deque() for kind in KINDS}
        self._wecom: dict[str, _WeComRobot] = {}
        self._dingtalk: dict[str, _DingTalkRobot] = {}
        self._feishu: dict[str, _FeishuRobot] = {}
        self._hooks: dict[str, _Hook] = {}
        self._httpd = _HTTPServer((host, port), self)
        self._thread: threading.Thread | None = None
        self._closed = False
        bound_host, bound_port = self._httpd.server_address[:2]
        self.url = f"http://{bound_host!s}:{bound_port}"

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> PushServer:
        """Serve on a background (daemon) thread; returns self."""
        if self._closed:
            raise RuntimeError("this PushServer is closed; make a new one")
        if self._thread is not None:
            raise RuntimeError("this PushServer is already started")
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="push-server", daemon=True
        )
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving, drop open connections and release the socket (safe to call twice)."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join()
        self._httpd.drop_connections()
        self._httpd.server_close()

    def __enter__(self) -> PushServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- robots ----------------------------------------------------------------------------------

    def add_wecom(self, key: str, *, per_minute: int = 20) -> str:
        """Register a WeCom group robot; returns its full webhook URL (re-registering resets it)."""
        push_checks.positive(per_minute=per_minute)
        with self._cond:
            self._wecom[key] = _WeComRobot(per_minute=per_minute)
        return f"{self.url}{_WECOM_PATH}?key={quote(key, safe='')}"

    def add_dingtalk(
        self, token: str, secret: str, *, keyword: str | None = None, per_minute: int = 20
    ) -> str:
        """Register a signed DingTalk robot (with an optional keyword rule); returns its URL without
        ``timestamp`` and ``sign``, which the sender appends to every request."""
        push_checks.positive(per_minute=per_minute)
        with self._cond:
            self._dingtalk[token] = _DingTalkRobot(
                secret=secret, keyword=keyword or None, per_minute=per_minute
            )
        return f"{self.url}{_DINGTALK_PATH}?access_token={quote(token, safe='')}"

    def add_feishu(
        self, token: str, secret: str | None = None, *, per_minute: int = 100, per_second: int = 5
    ) -> str:
        """Register a Feishu custom bot, signed when `secret` is given; returns its webhook URL."""
        push_checks.positive(per_minute=per_minute, per_second=per_second)
        with self._cond:
            self._feishu[token] = _FeishuRobot(secret=secret, per_minute=per_minute, per_second=per_second)
        return f"{self.url}{_FEISHU_PREFIX}{quote(token, safe='')}"

    def add_webhook(self, name: str, secret: str) -> str:
        """Register a receiver for linli's generic webhook; returns its URL."""
        with self._cond:
            self._hooks[name] = _Hook(secret=secret)
        return f"{self.url}{_WEBHOOK_PREFIX}{quote(name, safe='')}"

    def fail_next(self, path_kind: str, n: int, *, status: int = 503) -> None:
        """Answer the next `n` requests to `path_kind` endpoints with HTTP `status` and a plain-text
        body, before any other check (a gateway or vendor outage, for retry tests). They are recorded
        in `refused` with ``code=status``; calls add up."""
        if path_kind not in KINDS:
            raise ValueError(f"unknown kind {path_kind!r}; expected one of {', '.join(KINDS)}")
        if n < 0:
            raise ValueError(f"n must be 0 or more, got {n}")
        if not 400 <= status <= 599:
            raise ValueError(f"status must be an HTTP error (400-599), got {status}")
        with self._cond:
            self._failures[path_kind].extend([status] * n)

    # -- what arrived ----------------------------------------------------------------------------

    @property
    def received(self) -> list[Received]:
        """A snapshot of the accepted messages, in arrival order (duplicates included, flagged)."""
        with self._cond:
            return list(self._received)

    @property
    def refused(self) -> list[Refused]:
        """A snapshot of the refused requests, in arrival order."""
        with self._cond:
            return list(self._refused)

    def recent(self, n: int = 10) -> list[Received]:
        """The last `n` accepted messages, oldest first (for the demo's display)."""
        if n <= 0:
            return []
        with self._cond:
            return self._received[-n:]

    def wait_for(self, predicate: Callable[[PushServer], bool], timeout: float = 10.0) -> bool:
        """Block until `predicate(self)` holds, re-checking whenever a request is recorded; False if
        it still does not after `timeout` real seconds. The predicate runs with the records locked."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout)

    # -- the endpoints ---------------------------------------------------------------------------

    def _handle(
        self, kind: Kind, robot: str, query: Mapping[str, str], headers: Mapping[str, str], raw: bytes
    ) -> _Reply:
        with self._cond:
            now = self.clock()
            failures = self._failures[kind]
            if failures:
                status = failures.popleft()
                phrase = push_checks.phrase(status)
                retry_after = (("Retry-After", "1"),) if status in (429, 503) else ()
                refused = Refused(kind, robot, now, status, f"injected: {phrase}")
                reply = _Reply(status, f"{status} {phrase}", refused, retry_after)
            elif kind == "wecom":
                reply = self._wecom_send(robot, raw, now)
            elif kind == "dingtalk":
                reply = self._dingtalk_send(robot, query, raw, now)
            elif kind == "feishu":
                reply = self._feishu_send(robot, raw, now)
            else:
                reply = self._webhook_send(robot, headers, raw, now)
            if isinstance(reply.record, Received):
                self._received.append(reply.record)
            else:
                self._refused.append(reply.record)
            self._cond.notify_all()
            return reply

    def _wecom_send(self, key: str, raw: bytes, now: float) -> _Reply:
        def no(code: int, message: str) -> _Reply:
            return _Reply(
                200, {"errcode": code, "errmsg": message}, Refused("wecom", key, now, code, message)
            )

        robot = self._wecom.get(key)
        if robot is None:
            return no(93000, "invalid webhook url")
        if push_checks.over(robot.sent, now, push_checks.MINUTE, robot.per_minute):
            return no(45009, "api freq out of limit")
        body = push_checks.json_object(raw)
        msgtype = body.get("msgtype") if body is not None else None
        if body is None or msgtype not in ("text", "markdown"):
            return no(40008, "invalid message type")
        section = body.get(msgtype)
        if not isinstance(section, dict):
            return no(44004, f"{msgtype} content empty")
        content = section.get("content")
        if not isinstance(content, str) or not content.strip():
            return no(44004, f"{msgtype} content empty")
        limit = WECOM_TEXT_BYTES if msgtype == "text" else WECOM_MARKDOWN_BYTES
        if len(content.encode()) > limit:
            return no(40058, "content exceed max length")
        mentions = push_checks.strings(section.get("mentioned_mobile_list")) if msgtype == "text" else ()
        robot.sent.append(now)
        received = Received("wecom", key, now, body, content, mentions)
        return _Reply(200, {"errcode": 0, "errmsg": "ok"}, received)

    def _dingtalk_send(self, token: str, query: Mapping[str, str], raw: bytes, now: float) -> _Reply:
        def no(code: int, message: str) -> _Reply:
            return _Reply(
                200, {"errcode": code, "errmsg": message}, Refused("dingtalk", token, now, code, message)
            )

        robot = self._dingtalk.get(token)
        if robot is None:
            return no(300001, "token is not exist")
        too_fast = f"send too fast, exceed {robot.per_minute} times per minute"
        if now < robot.blocked_until:
            return no(130101, too_fast)
        problem = push_checks.dingtalk_sign_problem(
            robot.secret, query.get("timestamp"), query.get("sign"), now
        )
        if problem:
            return no(310000, f"sign not match, more: [{problem}]")
        if push_checks.over(robot.sent, now, push_checks.MINUTE, robot.per_minute):
            robot.blocked_until = now + DINGTALK_BLOCK_S
            return no(130101, too_fast)
        body = push_checks.json_object(raw)
        if body is None:
            return no(40035, "缺少参数 json")
        msgtype = body.get("msgtype")
        section = body.get(msgtype) if isinstance(msgtype, str) else None
        if msgtype == "text" and isinstance(section, dict):
            text, searched = section.get("content"), section.get("content")
        elif msgtype == "markdown" and isinstance(section, dict):
            text, title = section.get("text"), section.get("title")
            if not isinstance(title, str) or not title:
                return no(40035, "缺少参数 markdown.title")
            searched = f"{title}\n{text}"
        else:
            return no(40035, "缺少参数 json")
        if not isinstance(text, str) or not text.strip():
            return no(40035, f"缺少参数 {msgtype}")
        if robot.keyword is not None and robot.keyword not in str(searched):
            return no(310000, "keywords not in content, more: [the robot's keyword rule]")
        at = body.get("at")
        mentions = push_checks.strings(at.get("atMobiles")) if isinstance(at, dict) else ()
        robot.sent.append(now)
        return _Reply(
            200, {"errcode": 0, "errmsg": "ok"}, Received("dingtalk", token, now, body, text, mentions)
        )

    def _feishu_send(self, token: str, raw: bytes, now: float) -> _Reply:
        def no(code: int, message: str) -> _Reply:
            payload = {"code": code, "msg": message, "data": {}}
            return _Reply(200, payload, Refused("feishu", token, now, code, message))

        robot = self._feishu.get(token)
        if robot is None:
            return no(19001, "param invalid: incoming webhook access token invalid")
        if len(raw) > FEISHU_BODY_BYTES:
            return no(9499, "request body too large")
        body = push_checks.json_object(raw)
        if body is None:
            return no(9499, "Bad Request")
        if robot.secret is not None and not push_checks.feishu_sign_ok(robot.secret, body, now):
            return no(19021, "sign match fail or timestamp is not within one hour from current time")
        if push_checks.over(robot.sent, now, 1.0, robot.per_second) or push_checks.over(
            robot.sent, now, push_checks.MINUTE, robot.per_minute
        ):
            return no(11232, "frequency limited psm[lark.oapi.app_platform_runtime]appID[1]")
        msg_type = body.get("msg_type")
        if msg_type not in ("text", "post", "interactive"):
            return no(19002, "params error, msg_type need")
        text = push_checks.feishu_text(msg_type, body)
        if not text.strip():
            return no(9499, "Bad Request")
        robot.sent.append(now)
        payload = {"StatusCode": 0, "StatusMessage": "success", "code": 0, "data": {}, "msg": "success"}
        return _Reply(200, payload, Received("feishu", token, now, body, text))

    def _webhook_send(self, name: str, headers: Mapping[str, str], raw: bytes, now: float) -> _Reply:
        def no(status: int, message: str) -> _Reply:
            return _Reply(status, {"error": message}, Refused("webhook", name, now, status, message))

        hook = self._hooks.get(name)
        if hook is None:
            return no(404, "unknown hook")
        if not push_checks.webhook_sign_ok(
            hook.secret, headers.get("x-linli-timestamp"), headers.get("x-linli-signature"), raw, now
        ):
            return no(401, "bad signature")
        key = headers.get("x-linli-idempotency-key", "").strip()
        if not key:
            return no(400, "missing idempotency key")
        body = push_checks.json_object(raw)
        if body is None:
            return no(400, "body is not a JSON object")
        duplicate = key in hook.seen
        hook.seen.add(key)
        text = body.get("text")
        received = Received(
            "webhook",
            name,
            now,
            body,
            text if isinstance(text, str) else "",
            idempotency_key=key,
            duplicate=duplicate,
        )
        return _Reply(200, {"ok": True, "duplicate": True} if duplicate else {"ok": True}, received)


# -- the HTTP side -------------------------------------------------------------------------------


class _HTTPServer(ThreadingHTTPServer):
    """The stdlib server, pointing back at its `PushServer` and tracking open connections so that
    `close` can end idle keep-alive ones instead of leaving their threads blocked."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], push: PushServer) -> None:
        self.push = push
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host up in DNS (getfqdn), which can stall; it is not needed.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket, *, open_: bool) -> None:
        with self._connections_lock:
            if open_:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def drop_connections(self) -> None:
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client or the handler
                connection.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    """Reads one request, routes it to the `PushServer`, writes its reply (HTTP/1.1, keep-alive)."""

    protocol_version = "HTTP/1.1"
    # headers and body go out as separate writes: without TCP_NODELAY the body waits for the
    # client's delayed ACK (40 ms a request), which the vendors' servers do not make anyone wait
    disable_nagle_algorithm = True
    server_version = "linli-push-sim/1"
    timeout = 30  # an idle keep-alive connection is dropped after this many seconds

    @property
    def _server(self) -> _HTTPServer:
        return cast(_HTTPServer, self.server)

    def setup(self) -> None:
        super().setup()
        self._server.track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self._server.track(self.connection, open_=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the records are the log."""

    def do_GET(self) -> None:
        self._send(405, "405 Method Not Allowed: the robot APIs take POST", (("Allow", "POST"),))

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= _MAX_REQUEST_BYTES:
            self.close_connection = True
            self._send(413 if length > 0 else 400, "bad or too large Content-Length")
            return
        raw = self.rfile.read(length)
        split = urlsplit(self.path)
        route = _route(split.path, split.query)
        if route is None:
            self._send(404, "404 Not Found")
            return
        kind, robot, query = route
        headers = {name.lower(): value for name, value in self.headers.items()}
        reply = self._server.push._handle(kind, robot, query, headers, raw)
        self._send(reply.status, reply.payload, reply.headers)

    def _send(
        self, status: int, payload: dict[str, Any] | str, headers: tuple[tuple[str, str], ...] = ()
    ) -> None:
        if isinstance(payload, str):
            data, content_type = payload.encode(), "text/plain; charset=utf-8"
        else:
            data, content_type = (
                json.dumps(payload, ensure_ascii=False).encode(),
                "application/json; charset=utf-8",
            )
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)


def _route(path: str, query_string: str) -> tuple[Kind, str, dict[str, str]] | None:
    """(kind, robot, first value of each query parameter) for a robot endpoint, else None."""
    query = {name: values[0] for name, values in parse_qs(query_string, keep_blank_values=True).items()}
    if path == _WECOM_PATH:
        return "wecom", query.get("key", ""), query
    if path == _DINGTALK_PATH:
        return "dingtalk", query.get("access_token", ""), query
    for prefix, kind in ((_FEISHU_PREFIX, "feishu"), (_WEBHOOK_PREFIX, "webhook")):
        if path.startswith(prefix) and len(path) > len(prefix) and "/" not in path[len(prefix) :]:
            return cast(Kind, kind), unquote(path[len(prefix) :]), query
    return None

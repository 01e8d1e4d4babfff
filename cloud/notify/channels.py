"""One small adapter per destination, behind one interface: `Channel.send` renders a `Message`,
delivers it, and judges the answer as the vendor's API defines it, never from the HTTP status
alone (the three robot APIs answer 200 when they refuse: the error is in ``errcode``/``code``).

Every answer becomes an `Outcome`:

- ``sent``: the API accepted it;
- ``too_fast``: over the robot's rate limit (WeCom 45009, DingTalk 130101/410100, Feishu 11232,
  HTTP 429): retried after ``retry_after_s``, and the sender's budget for the robot is emptied;
- ``retry``: a failure that may pass (network, timeout, 5xx, a busy system): retried with backoff;
- ``refused``: the API refused the message itself (bad key or signature, keyword rule, size):
  retrying cannot help; recorded with the API's code and message, logged and counted.

docs/notify.md shows each vendor's request and signature.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import smtplib
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from email.message import EmailMessage
from html import escape
from typing import Any, Final, Literal
from urllib.parse import quote_plus

import httpx

from cloud.notify.config import ChannelConfig
from cloud.notify.message import Message, headline, markdown, text

Status = Literal["sent", "too_fast", "retry", "refused"]

#: The vendors' size limits, in UTF-8 bytes.
WECOM_TEXT_BYTES: Final = 2048
WECOM_MARKDOWN_BYTES: Final = 4096
DINGTALK_TEXT_BYTES: Final = 18_000
FEISHU_BODY_BYTES: Final = 20 * 1024

_WECOM_TOO_FAST: Final = {45009}
_WECOM_RETRY: Final = {-1}
_DINGTALK_TOO_FAST: Final = {130101, 410100}
_DINGTALK_RETRY: Final = {-1}
_FEISHU_TOO_FAST: Final = {11232}
_FEISHU_RETRY: Final = {-1}
#: DingTalk blocks a robot for 10 minutes after it exceeds 20 messages a minute.
DINGTALK_BLOCK_S: Final = 600.0


@dataclass(frozen=True, slots=True)
class Outcome:
    status: Status
    code: str = ""
    message: str = ""
    retry_after_s: float | None = None


Recipients = Sequence[dict[str, str]]


def tls_context(config: ChannelConfig) -> ssl.SSLContext:
    """Server authentication against the system's CAs, or the channel's own `ca_cert`."""
    cafile = str(config.ca_cert) if config.ca_cert is not None else None
    return ssl.create_default_context(cafile=cafile)


def fit(body: str, limit: int, *, keep_tail: int = 0) -> str:
    """`body` cut to at most `limit` UTF-8 bytes at a character boundary, with "…" where it was
    cut; its last `keep_tail` lines (the link, the mentions) are kept whole."""
    if len(body.encode()) <= limit:
        return body
    lines = body.split("\n")
    tail = "\n".join(lines[len(lines) - keep_tail :]) if keep_tail else ""
    head = "\n".join(lines[: len(lines) - keep_tail]) if keep_tail else body
    room = limit - len(tail.encode()) - len("…\n".encode()) - (1 if tail else 0)
    cut = head.encode()[: max(room, 0)].decode(errors="ignore")
    return f"{cut}…" + (f"\n{tail}" if tail else "")


def _mobiles(recipients: Recipients) -> list[str]:
    return [r["mobile"] for r in recipients if r.get("mobile")]


def _tail_lines(message: Message, mentions: bool) -> int:
    return int(bool(message.link)) + int(mentions)


class Channel:
    """The interface: `send` never raises for what the destination answers."""

    def __init__(self, *, name: str, config: ChannelConfig) -> None:
        self.name = name
        self.config = config

    @property
    def kind(self) -> str:
        return self.config.kind

    def send(self, message: Message, recipients: Recipients, *, key: int) -> Outcome:
        raise NotImplementedError

    def close(self) -> None:
        """Release connections."""


class HttpChannel(Channel):
    """A JSON-over-HTTPS destination with a pooled client."""

    def __init__(self, *, name: str, config: ChannelConfig, clock: Callable[[], float] = time.time) -> None:
        super().__init__(name=name, config=config)
        self.clock = clock
        self._client = httpx.Client(
            timeout=config.timeout_s, follow_redirects=False, verify=tls_context(config)
        )

    def close(self) -> None:
        self._client.close()

    def _post(
        self, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
    ) -> httpx.Response | Outcome:
        raw = json.dumps(body, ensure_ascii=False).encode()
        try:
            return self._client.post(
                url,
                content=raw,
                headers={"Content-Type": "application/json; charset=utf-8", **(headers or {})},
            )
        except httpx.TimeoutException as exc:
            return Outcome("retry", "timeout", str(exc) or type(exc).__name__)
        except httpx.HTTPError as exc:
            return Outcome("retry", "network", str(exc) or type(exc).__name__)

    @staticmethod
    def _status(response: httpx.Response) -> Outcome | None:
        """An outcome from the HTTP status alone, for what is not a 200 (None: read the body)."""
        code = response.status_code
        if code == 200:
            return None
        detail = response.text[:200]
        if code == 429:
            return Outcome("too_fast", f"http {code}", detail, _retry_after(response))
        if code >= 500 or code == 408:
            return Outcome("retry", f"http {code}", detail)
        return Outcome("refused", f"http {code}", detail)

    @staticmethod
    def _json(response: httpx.Response) -> dict[str, Any] | Outcome:
        try:
            body = response.json()
        except ValueError:
            return Outcome("retry", "bad answer", f"not JSON: {response.text[:200]!r}")
        if not isinstance(body, dict):
            return Outcome("retry", "bad answer", f"not a JSON object: {response.text[:200]!r}")
        return body


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _judge(code: int, msg: str, *, too_fast: set[int], retry: set[int], block_s: float = 60.0) -> Outcome:
    if code == 0:
        return Outcome("sent", "0", msg)
    if code in too_fast:
        return Outcome("too_fast", str(code), msg, block_s)
    if code in retry:
        return Outcome("retry", str(code), msg)
    return Outcome("refused", str(code), msg)


class WeComChannel(HttpChannel):
    """WeCom (企业微信) group robot: ``POST .../cgi-bin/webhook/send?key=...``."""

    def send(self, message: Message, recipients: Recipients, *, key: int) -> Outcome:
        pii = self.config.pii
        mobiles = _mobiles(recipients)
        if self.config.format == "markdown" and not mobiles:  # markdown cannot mention by mobile
            body: dict[str, Any] = {
                "msgtype": "markdown",
                "markdown": {
                    "content": fit(
                        markdown(message, pii, max_bytes=WECOM_MARKDOWN_BYTES),
                        WECOM_MARKDOWN_BYTES,
                        keep_tail=1,
                    )
                },
            }
        else:
            content = fit(
                text(message, pii, max_bytes=WECOM_TEXT_BYTES),
                WECOM_TEXT_BYTES,
                keep_tail=_tail_lines(message, False),
            )
            body = {"msgtype": "text", "text": {"content": content, "mentioned_mobile_list": mobiles}}
        answer = self._post(str(self.config.url), body)
        if isinstance(answer, Outcome):
            return answer
        by_status = self._status(answer)
        if by_status is not None:
            return by_status
        data = self._json(answer)
        if isinstance(data, Outcome):
            return data
        return _judge(
            int(data.get("errcode", -1)),
            str(data.get("errmsg", "")),
            too_fast=_WECOM_TOO_FAST,
            retry=_WECOM_RETRY,
        )


def dingtalk_sign(secret: str, timestamp_ms: int) -> str:
    """``urlencode(base64(HMAC-SHA256(secret, f"{timestamp}\\n{secret}")))``, as DingTalk checks it."""
    digest = hmac.new(secret.encode(), f"{timestamp_ms}\n{secret}".encode(), hashlib.sha256).digest()
    return quote_plus(base64.b64encode(digest).decode())


class DingTalkChannel(HttpChannel):
    """DingTalk (钉钉) custom robot, signed: ``POST .../robot/send?access_token=...&timestamp=&sign=``."""

    def send(self, message: Message, recipients: Recipients, *, key: int) -> Outcome:
        assert self.config.secret is not None  # noqa: S101 - validated
        pii = self.config.pii
        mobiles = _mobiles(recipients)
        content = text(message, pii, mentions=tuple(mobiles), max_bytes=DINGTALK_TEXT_BYTES - 64)
        keyword = self.config.keyword
        if keyword and keyword not in content:
            content = f"{keyword} {content}"
        content = fit(content, DINGTALK_TEXT_BYTES, keep_tail=_tail_lines(message, bool(mobiles)))
        if self.config.format == "markdown":
            md = markdown(message, pii, max_bytes=DINGTALK_TEXT_BYTES - 64) + (
                "\n" + " ".join(f"@{m}" for m in mobiles) if mobiles else ""
            )
            if keyword and keyword not in md:
                md = f"{keyword} {md}"
            body: dict[str, Any] = {
                "msgtype": "markdown",
                "markdown": {"title": headline(message), "text": md},
            }
        else:
            body = {"msgtype": "text", "text": {"content": content}}
        body["at"] = {"atMobiles": mobiles, "isAtAll": False}
        ts = int(self.clock() * 1000)
        sign = dingtalk_sign(self.config.secret.get_secret_value(), ts)
        url = str(self.config.url)
        url += ("&" if "?" in url else "?") + f"timestamp={ts}&sign={sign}"
        answer = self._post(url, body)
        if isinstance(answer, Outcome):
            return answer
        by_status = self._status(answer)
        if by_status is not None:
            return by_status
        data = self._json(answer)
        if isinstance(data, Outcome):
            return data
        return _judge(
            int(data.get("errcode", -1)),
            str(data.get("errmsg", "")),
            too_fast=_DINGTALK_TOO_FAST,
            retry=_DINGTALK_RETRY,
            block_s=DINGTALK_BLOCK_S,
        )


def feishu_sign(secret: str, timestamp_s: int) -> str:
    """``base64(HMAC-SHA256(key=f"{timestamp}\\n{secret}", msg=b""))``, as Feishu checks it."""
    return base64.b64encode(
        hmac.new(f"{timestamp_s}\n{secret}".encode(), b"", hashlib.sha256).digest()
    ).decode()


class FeishuChannel(HttpChannel):
    """Feishu (飞书) custom bot: ``POST .../open-apis/bot/v2/hook/<token>``, optionally signed."""

    def send(self, message: Message, recipients: Recipients, *, key: int) -> Outcome:
        pii = self.config.pii
        body: dict[str, Any] = {}
        if self.config.secret is not None:
            ts = int(self.clock())
            body.update(timestamp=str(ts), sign=feishu_sign(self.config.secret.get_secret_value(), ts))
        limit = FEISHU_BODY_BYTES - 2048
        content = fit(text(message, pii, max_bytes=limit), limit, keep_tail=_tail_lines(message, False))
        if self.config.format == "markdown":
            lines = content.split("\n")
            body.update(
                msg_type="interactive",
                card={
                    "header": {
                        "title": {"tag": "plain_text", "content": lines[0]},
                        "template": "red" if message.severity == "critical" else "orange",
                    },
                    "elements": [{"tag": "div", "text": {"tag": "lark_md", "content": "\n".join(lines[1:])}}],
                },
            )
        else:
            body.update(msg_type="text", content={"text": content})
        answer = self._post(str(self.config.url), body)
        if isinstance(answer, Outcome):
            return answer
        by_status = self._status(answer)
        if by_status is not None:
            return by_status
        data = self._json(answer)
        if isinstance(data, Outcome):
            return data
        code = data.get("code", data.get("StatusCode", -1))
        msg = str(data.get("msg", data.get("StatusMessage", "")))
        return _judge(int(code), msg, too_fast=_FEISHU_TOO_FAST, retry=_FEISHU_RETRY)


def webhook_signature(secret: str, timestamp_s: int, body: bytes) -> str:
    """``sha256=`` + hex(HMAC-SHA256(secret, f"{timestamp}." + body)): ``X-Linli-Signature``."""
    mac = hmac.new(secret.encode(), f"{timestamp_s}.".encode() + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


class WebhookChannel(HttpChannel):
    """linli's generic webhook: the message as JSON, signed, with an idempotency key."""

    def send(self, message: Message, recipients: Recipients, *, key: int) -> Outcome:
        assert self.config.secret is not None  # noqa: S101 - validated
        payload = {
            "id": key,
            "reason": message.reason,
            "severity": message.severity,
            "text": text(message, self.config.pii),
            "recipients": list(recipients),
            "incident_id": message.incident_id,
            "community_id": message.community_id,
            "link": message.link,
        }
        raw = json.dumps(payload, ensure_ascii=False).encode()
        ts = int(self.clock())
        headers = {
            "Content-Type": "application/json; charset=utf-8",
            "X-Linli-Timestamp": str(ts),
            "X-Linli-Signature": webhook_signature(self.config.secret.get_secret_value(), ts, raw),
            "X-Linli-Idempotency-Key": f"linli-{key}",
        }
        try:
            response = self._client.post(str(self.config.url), content=raw, headers=headers)
        except httpx.TimeoutException as exc:
            return Outcome("retry", "timeout", str(exc) or type(exc).__name__)
        except httpx.HTTPError as exc:
            return Outcome("retry", "network", str(exc) or type(exc).__name__)
        if 200 <= response.status_code < 300:
            return Outcome("sent", str(response.status_code), response.text[:200])
        by_status = self._status(response)
        assert by_status is not None  # noqa: S101 - not 2xx
        return by_status


class EmailChannel(Channel):
    """Email over SMTP (STARTTLS or implicit TLS, with login when configured): text and HTML."""

    def send(self, message: Message, recipients: Recipients, *, key: int) -> Outcome:
        cfg = self.config
        to = list(dict.fromkeys([*cfg.to, *(r["email"] for r in recipients if r.get("email"))]))
        if not to:
            return Outcome(
                "refused", "no recipient", "neither the channel's `to` nor the recipients have an email"
            )
        body = text(message, cfg.pii)
        mail = EmailMessage()
        mail["Subject"] = headline(message)
        mail["From"] = str(cfg.sender)
        mail["To"] = ", ".join(to)
        mail["Message-ID"] = f"<linli-{key}@{str(cfg.sender).partition('@')[2] or 'linli'}>"
        mail.set_content(body)
        html = "<br>".join(escape(line) for line in body.split("\n"))
        mail.add_alternative(f"<html><body><p>{html}</p></body></html>", subtype="html")
        host, port = str(cfg.smtp_host), cfg.smtp_port
        try:
            smtp: smtplib.SMTP
            if cfg.smtp_security == "tls":
                smtp = smtplib.SMTP_SSL(host, port, timeout=cfg.timeout_s, context=tls_context(cfg))
            else:
                smtp = smtplib.SMTP(host, port, timeout=cfg.timeout_s)
            with smtp:
                if cfg.smtp_security == "starttls":
                    smtp.starttls(context=tls_context(cfg))
                if cfg.username and cfg.password is not None:
                    smtp.login(cfg.username, cfg.password.get_secret_value())
                refused = smtp.send_message(mail)
        except smtplib.SMTPAuthenticationError as exc:
            return Outcome("refused", str(exc.smtp_code), _smtp_text(exc.smtp_error))
        except smtplib.SMTPRecipientsRefused as exc:
            return Outcome("refused", "recipients", str(exc.recipients)[:200])
        except smtplib.SMTPResponseException as exc:
            status: Status = "retry" if 400 <= exc.smtp_code < 500 else "refused"
            return Outcome(status, str(exc.smtp_code), _smtp_text(exc.smtp_error))
        except (smtplib.SMTPException, OSError) as exc:  # disconnected, TLS, network: may pass
            return Outcome("retry", type(exc).__name__, str(exc)[:200])
        if refused:
            return Outcome("sent", "250", f"some recipients refused: {sorted(refused)}")
        return Outcome("sent", "250", "ok")


def _smtp_text(error: bytes | str) -> str:
    return (error.decode(errors="replace") if isinstance(error, bytes) else error)[:200]


_KINDS: Final[dict[str, type[Channel]]] = {
    "wecom": WeComChannel,
    "dingtalk": DingTalkChannel,
    "feishu": FeishuChannel,
    "webhook": WebhookChannel,
    "email": EmailChannel,
}


def build_channel(name: str, config: ChannelConfig, *, clock: Callable[[], float] = time.time) -> Channel:
    """The adapter for `config.kind`."""
    cls = _KINDS[config.kind]
    if issubclass(cls, HttpChannel):
        return cls(name=name, config=config, clock=clock)
    return cls(name=name, config=config)

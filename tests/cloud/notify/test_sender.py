"""The sender against real local servers that behave like the vendors' APIs (keys, signatures,
keyword rules, sizes, rate limits, HTTP 200 with an error body) and a real SMTP server."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import psycopg
import pytest

from cloud.notify.channels import build_channel
from cloud.notify.config import ChannelConfig, NotifyConfig
from cloud.notify.sender import Sender
from simulators.pushes import PushServer
from tests.cloud.notify.conftest import Mailbox, owe, states

pytestmark = pytest.mark.integration

ZHANG = {"staff_id": "w-zhang", "name": "张伟", "mobile": "13800000001", "email": "zhang@example.org"}


class FakeClock:
    def __init__(self) -> None:
        self.t = datetime.now(UTC).timestamp()

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def pushes() -> Iterator[PushServer]:
    with PushServer() as server:
        yield server


_SENDERS: list[Sender] = []


@pytest.fixture(autouse=True)
def _close_senders() -> Iterator[None]:
    yield
    while _SENDERS:
        _SENDERS.pop().close()


def sender_for(url: str, channels: dict[str, dict[str, Any]], clock: Any = None) -> Sender:
    config = NotifyConfig(channels={n: ChannelConfig.model_validate(c) for n, c in channels.items()})
    kw = {"clock": clock} if clock is not None else {}
    built = {n: build_channel(n, c, **kw) for n, c in config.channels.items()}
    sender = Sender(database_url=url, config=config, channels=built, **kw)
    _SENDERS.append(sender)
    return sender


def test_every_channel_delivers_and_is_judged_by_its_answer(
    migrated_url: str, pushes: PushServer, smtp_server: tuple[str, int, Mailbox]
) -> None:
    host, port, box = smtp_server
    channels: dict[str, dict[str, Any]] = {
        "wecom": {"kind": "wecom", "url": pushes.add_wecom("wk")},
        "ding": {
            "kind": "dingtalk",
            "url": pushes.add_dingtalk("dt", "SECd", keyword="linli"),
            "secret": "SECd",
            "keyword": "linli",
        },
        "feishu": {"kind": "feishu", "url": pushes.add_feishu("ft", "SECf"), "secret": "SECf"},
        "hook": {"kind": "webhook", "url": pushes.add_webhook("h", "SECh"), "secret": "SECh", "pii": "full"},
        "mail": {
            "kind": "email",
            "smtp_host": host,
            "smtp_port": port,
            "smtp_security": "none",
            "sender": "linli@example.org",
        },
    }
    sender = sender_for(migrated_url, channels)
    ids = {name: owe(migrated_url, name, recipients=[ZHANG])[0] for name in channels}
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for name in channels:
            sender.deliver_due(conn, name)
    assert {nid: s[0] for nid, s in states(migrated_url).items()} == dict.fromkeys(ids.values(), "sent")
    got = {r.kind: r for r in pushes.received}
    assert set(got) == {"wecom", "dingtalk", "feishu", "webhook"}
    assert got["wecom"].mentions == ("13800000001",)
    assert "地点：阳光小区 3栋2单元\n" in got["wecom"].text  # masked: no room
    assert "居民：c0****07\n" in got["wecom"].text
    assert got["dingtalk"].mentions == ("13800000001",)
    assert "@13800000001" in got["dingtalk"].text
    assert "linli" in got["dingtalk"].text
    assert "【紧急】SOS 求助" in got["feishu"].text
    assert got["webhook"].idempotency_key == f"linli-{ids['hook']}"
    assert "401室" in got["webhook"].text  # pii = full
    assert box.wait(1)
    mail = box.messages[0]
    assert mail["To"] == "zhang@example.org"
    assert str(mail["Subject"]) == "【紧急】SOS 求助 · 请立即受理"
    assert mail.get_content_type() == "multipart/alternative"
    assert [p.get_content_type() for p in mail.iter_parts()] == ["text/plain", "text/html"]
    assert sender.counters["notify_sent_total"] == 5


def test_a_refused_message_is_reported_never_counted_as_sent(migrated_url: str, pushes: PushServer) -> None:
    pushes.add_wecom("good")
    channels: dict[str, dict[str, Any]] = {
        "wecom": {"kind": "wecom", "url": pushes.url + "/cgi-bin/webhook/send?key=wrong"},
        "ding": {"kind": "dingtalk", "url": pushes.add_dingtalk("dt", "right"), "secret": "wrong"},
        "ding_kw": {"kind": "dingtalk", "url": pushes.add_dingtalk("dk", "s", keyword="社区"), "secret": "s"},
        "feishu": {"kind": "feishu", "url": pushes.add_feishu("ft", "right"), "secret": "wrong"},
        "hook": {"kind": "webhook", "url": pushes.add_webhook("h", "right"), "secret": "wrong"},
    }
    sender = sender_for(migrated_url, channels)
    ids = {name: owe(migrated_url, name, title="linli test")[0] for name in channels}
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        for name in channels:
            sender.deliver_due(conn, name)
    found = states(migrated_url)
    assert {name: found[i] for name, i in ids.items()} == {
        "wecom": ("refused", 1, "93000"),
        "ding": ("refused", 1, "310000"),
        "ding_kw": ("refused", 1, "310000"),
        "feishu": ("refused", 1, "19021"),
        "hook": ("refused", 1, "http 401"),
    }
    assert pushes.received == []
    assert sender.counters["notify_sent_total"] == 0
    assert sender.counters["notify_refused_total"] == 5


def test_failures_are_retried_with_backoff_until_sent(migrated_url: str, pushes: PushServer) -> None:
    clock = FakeClock()
    sender = sender_for(
        migrated_url, {"hook": {"kind": "webhook", "url": pushes.add_webhook("h", "k"), "secret": "k"}}, clock
    )
    (nid,) = owe(migrated_url, "hook", at=datetime.fromtimestamp(clock.t, tz=UTC))
    pushes.fail_next("webhook", 2, status=503)
    with psycopg.connect(migrated_url, autocommit=True) as conn:
        wait = sender.deliver_due(conn, "hook")
        assert states(migrated_url)[nid] == ("retrying", 1, "http 503")
        assert sender.deliver_due(conn, "hook") > 0  # not due again before its backoff
        assert states(migrated_url)[nid][1] == 1
        for _ in range(2):
            clock.t += max(wait, 0.01) + 61
            wait = sender.deliver_due(conn, "hook")
    assert states(migrated_url)[nid] == ("sent", 3, "200")
    assert [r.idempotency_key for r in pushes.received] == [f"linli-{nid}"]


def test_a_burst_of_200_minor_incidents_reaches_a_20_a_minute_robot_as_digests(
    migrated_url: str,
) -> None:
    clock = FakeClock()
    with PushServer(clock=clock) as pushes:
        sender = sender_for(migrated_url, {"grid": {"kind": "wecom", "url": pushes.add_wecom("k")}}, clock)
        start = clock.t
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            for i in range(200):  # 200 minor incidents in one minute
                clock.t = start + i * 0.3
                owe(
                    migrated_url,
                    "grid",
                    severity="minor",
                    title=f"路灯故障{i}",
                    at=datetime.fromtimestamp(clock.t, UTC),
                )
                sender.deliver_due(conn, "grid")
                if i == 150:  # an SOS in the middle of it goes out at once
                    sos = owe(
                        migrated_url, "grid", title="SOS 求助", at=datetime.fromtimestamp(clock.t, UTC)
                    )[0]
                    sender.deliver_due(conn, "grid")
                    assert states(migrated_url)[sos][0] == "sent"
            while any(s[0] in ("pending", "retrying") for s in states(migrated_url).values()):
                clock.t += 1.0
                sender.deliver_due(conn, "grid")
                assert clock.t < start + 600, "the outbox did not drain"
        assert pushes.refused == []
        times = [r.at for r in pushes.received]
        assert all(sum(1 for t in times if s <= t < s + 60) <= 20 for s in times)
        # every incident is in exactly one message: alone, or counted in a digest (which lists
        # what fits the robot's 2,048 bytes and counts the rest)
        counted, listed = 0, []
        for r in pushes.received:
            listed += re.findall(r"路灯故障(\d+)", r.text)
            total = re.search(r"(\d+) 条新事件", r.text)
            counted += int(total[1]) if total else int("路灯故障" in r.text)
            assert len(r.text.encode()) <= 2048
        assert counted == 200
        assert len(listed) == len(set(listed))
        digests = [r for r in pushes.received if "汇总" in r.text]
        assert digests
        assert len(pushes.received) < 40
    assert sender.counters["notify_digested_total"] >= 200 - 15


def test_email_over_starttls_with_login(migrated_url: str, test_pki: Any, tmp_path: Any) -> None:
    """A real SMTP server that requires STARTTLS before AUTH, and checks the password."""
    import ssl

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import AuthResult, LoginPassword

    from simulators.services import free_port
    from tests.cloud.notify.conftest import Mailbox

    def authenticator(server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> AuthResult:
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (
            b"linli",
            b"pw",
        )
        return AuthResult(success=ok, handled=False)  # not handled: the server answers 535

    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(test_pki.server_cert, test_pki.server_key)
    box, port = Mailbox(), free_port("127.0.0.1")
    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=port,
        tls_context=server_tls,
        require_starttls=True,
        auth_require_tls=True,
        authenticator=authenticator,
        auth_exclude_mechanism=["CRAM-MD5"],
    )
    controller.start()
    try:
        mail = {
            "kind": "email",
            "smtp_host": "127.0.0.1",
            "smtp_port": port,
            "sender": "linli@example.org",
            "to": ["duty@example.org"],
            "ca_cert": str(test_pki.ca_cert),
            "username": "linli",
        }
        sender = sender_for(
            migrated_url,
            {
                "good": {**mail, "password": "pw"},
                "bad": {**mail, "password": "wrong"},
                "untrusted": {**mail, "password": "pw", "ca_cert": None},
            },
        )
        good = owe(migrated_url, "good", recipients=[ZHANG])[0]
        bad = owe(migrated_url, "bad")[0]
        untrusted = owe(migrated_url, "untrusted")[0]
        with psycopg.connect(migrated_url, autocommit=True) as conn:
            for name in ("good", "bad", "untrusted"):
                sender.deliver_due(conn, name)
        assert box.wait(1)
    finally:
        controller.stop()
    found = states(migrated_url)
    assert found[good] == ("sent", 1, "250")
    assert found[bad] == ("refused", 1, "535")  # authentication failed: retrying cannot help
    assert found[untrusted][0] == "retrying"  # a certificate it cannot verify: never sent in clear
    assert len(box.messages) == 1
    assert box.envelopes[0][1] == ["duty@example.org", "zhang@example.org"]


def _notify_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    import argparse

    from cloud import cli
    from cloud.notify import cli as notify_cli

    parser = argparse.ArgumentParser(prog="linli")
    commands = parser.add_subparsers(dest="command", required=True)
    notify_cli.register(commands)
    cli.register(commands)
    args = parser.parse_args(argv)
    code = int(args.handler(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_notify_test_prints_the_apis_answer(
    tmp_path: Any, pushes: PushServer, capsys: pytest.CaptureFixture[str]
) -> None:
    good = pushes.add_wecom("good")
    toml = tmp_path / "cloud.toml"
    toml.write_text(
        'database_url = "postgresql://x@127.0.0.1/x"\n'
        f'[notify.channels.grid]\nkind = "wecom"\nurl = "{good}"\n'
        f'[notify.channels.bad]\nkind = "wecom"\nurl = "{pushes.url}/cgi-bin/webhook/send?key=nope"\n'
    )
    code, out, _ = _notify_cli(
        capsys, "notify", "test", "--config", str(toml), "--channel", "grid", "--mobile", "13800000001"
    )
    assert (code, out) == (0, "grid (wecom): sent code=0 ok\n")
    (got,) = pushes.received
    assert got.mentions == ("13800000001",)
    assert "linli 推送测试" in got.text
    code, out, _ = _notify_cli(capsys, "notify", "test", "--config", str(toml), "--channel", "bad")
    assert (code, out) == (1, "bad (wecom): refused code=93000 invalid webhook url\n")
    code, _, err = _notify_cli(capsys, "notify", "test", "--config", str(toml), "--channel", "nope")
    assert code == 2
    assert "no channel 'nope' in [notify.channels] (configured: bad, grid)" in err


def test_check_config_checks_the_people_file_against_the_channels(
    tmp_path: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import msgspec.yaml

    from tests.cloud.incidents.conftest import PEOPLE

    (tmp_path / "people.yaml").write_bytes(msgspec.yaml.encode(PEOPLE))
    toml = tmp_path / "cloud.toml"
    toml.write_text(
        'database_url = "postgresql://x@127.0.0.1/x"\n[incidents]\npeople = "people.yaml"\n'
        '[notify.channels.grid]\nkind = "webhook"\nurl = "http://127.0.0.1:1/h"\nsecret = "s"\n'
    )
    code, _, err = _notify_cli(capsys, "cloud", "check-config", "--config", str(toml))
    assert code == 2
    for missing in ("committee", "district", "doctor-mail", "family-sms", "street"):
        assert f"the people file uses channel {missing!r}, not configured here" in err
    assert "'grid'" not in err

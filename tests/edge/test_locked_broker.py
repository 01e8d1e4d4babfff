"""The agent against a cloud broker locked down as linli ships it (`linli pki`: mutual TLS, the
certificate's common name as the user, an ACL per gateway), configured through its own file.

A gateway whose certificate the ACL does not allow on its topics gets a PUBACK with reason code
0x87 for every batch: the agent keeps the batches (not delivered), says so once in its log, shows
it in ``/healthz``, backs off, and sends them all once the broker's ACL lets it (reloaded with
SIGHUP, as an operator would)."""

from __future__ import annotations

import json
import os
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest

from cloud.pki.authority import Authority
from simulators.services import MosquittoBroker, TlsFiles, free_port
from tests.edge.conftest import COMMUNITY, GATEWAY, AgentProcess, Collector, Fleet, Publisher, write_config

pytestmark = [pytest.mark.integration]

DOOR = "generic_lorawan/door_contact"


def _healthz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def _until(what: str, cond: Callable[[], bool], agent: AgentProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        assert agent.proc is not None
        assert agent.proc.poll() is None, agent.log.read_text()[-3000:]
        assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{agent.log.read_text()[-3000:]}"
        time.sleep(0.1)


def test_a_refused_batch_is_kept_said_once_shown_and_sent_once_allowed(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    ca = Authority.init(tmp_path / "ca")
    gateway = ca.issue_gateway(GATEWAY, community_id="another-community")  # the ACL names another
    ingest = ca.issue_service("linli-ingest", role="ingest")
    server = ca.issue_service("broker", role="broker", hosts=("127.0.0.1",))

    def tls(client: Path, key: Path) -> TlsFiles:
        return TlsFiles(ca.ca_cert, server.cert, server.key, client, key)

    cloud = make_broker(
        tls=tls(gateway.cert, gateway.key),
        require_client_cert=True,
        extra_config=[f"acl_file {ca.directory / 'broker.acl'}"],
    )
    field = make_broker()
    port = free_port("127.0.0.1")
    fleet = Fleet({DOOR: 3})
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=fleet.inventory(tmp_path / "inventory.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buffer.db",
        cloud_tls=tls(gateway.cert, gateway.key),
        sections={"http": {"address": f"127.0.0.1:{port}"}},
    )
    col = Collector(cloud, tls=tls(ingest.cert, ingest.key))
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    sent = []
    for i in range(30):
        topic, payload, r = fleet.payload(fleet.devices[i % 3])
        pub.publish(topic, payload)
        sent.append(r.reading_id)

    agent.wait_log("batch_refused")
    _until("/healthz to name the refusal", lambda: "cloud_refuses" in _healthz(port)[1], agent)
    status, body = _healthz(port)
    assert status == 503
    assert str(body["cloud_refuses"]).lower() == "not authorized"
    assert body["cloud"] == "up"  # connected, and refused

    def refused() -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith("linli_edge_batches_refused_total "):
                    return int(float(line.split()[1]))
        return 0

    _until("three refusals in a row", lambda: refused() >= 3, agent)
    assert agent.count("batch_refused") == 1  # said once, not once per batch
    assert col.reading_ids() == set()  # nothing reached anyone

    # The operator fixes the ACL (the gateway issued for its real community) and reloads it.
    ca.issue_gateway(GATEWAY, community_id=COMMUNITY)
    assert cloud.pid is not None
    os.kill(cloud.pid, signal.SIGHUP)
    assert col.wait_for(lambda c: set(sent) <= c.reading_ids(), 90), "the kept batches did not arrive"
    agent.wait_log("batches_accepted_again")
    _until("a healthy /healthz", lambda: _healthz(port)[0] == 200, agent)
    assert "cloud_refuses" not in _healthz(port)[1]
    assert agent.terminate() == 0

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from simulators.services import MosquittoBroker
from tests.edge.conftest import AgentProcess, Collector, Fleet, Publisher, write_config

pytestmark = pytest.mark.integration


def test_forwarding_end_to_end(
    tmp_path: Path,
    make_broker: Callable[..., MosquittoBroker],
    agent_factory: Callable[[Path], AgentProcess],
    collectors: list[Collector],
    publishers: list[Publisher],
) -> None:
    field, cloud = make_broker(), make_broker()
    fleet = Fleet({"generic_lorawan/door_contact": 3, "aqara/mccgq11lm": 2})
    cfg = write_config(
        tmp_path / "edge.toml",
        inventory=fleet.inventory(tmp_path / "inv.yaml"),
        field=field,
        cloud=cloud,
        buffer=tmp_path / "buf.db",
    )
    col = Collector(cloud)
    collectors.append(col)
    agent = agent_factory(cfg)
    agent.start()
    agent.wait_log("subscribed")
    pub = Publisher(field)
    publishers.append(pub)
    sent = []
    for i in range(50):
        topic, payload, r = fleet.payload(fleet.devices[i % 3])
        pub.publish(topic, payload)
        sent.append(r.reading_id)
    assert col.wait_for(lambda c: set(sent) <= c.reading_ids(), 20), (
        len(col.reading_ids()),
        agent.log.read_text()[-2000:],
    )
    assert agent.terminate() == 0

"""A cloud broker (or a proxy in front of it) that closes the TCP connection before its CONNACK
fails the connection attempt at once: the link does not sit out its whole ``connect_timeout_s``
before it tries again."""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from edge.logs import Logger
from edge.mqtt import MqttLink
from tests.edge.test_fieldlink_faults import LogEvents

pytestmark = pytest.mark.integration

CONNECT_TIMEOUT_S = 10.0


async def test_a_connection_closed_before_connack_fails_at_once() -> None:
    accepted = 0

    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal accepted
        accepted += 1
        await reader.read(1)  # the CONNECT begins to arrive; no CONNACK is ever sent
        writer.close()
        await writer.wait_closed()

    server = await asyncio.start_server(hang_up, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    records = LogEvents()
    logger = logging.getLogger("test.mqtt.connack")
    logger.addHandler(records)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    link = MqttLink(
        name="cloud",
        host="127.0.0.1",
        port=port,
        client_id="t-connack",
        connect_timeout_s=CONNECT_TIMEOUT_S,
        backoff_base_s=0.05,
        backoff_cap_s=0.1,
        log=Logger(logger),
    )
    started = time.monotonic()
    task = asyncio.create_task(link.run())
    try:
        failed = await records.wait("connect_failed", count=3, within_s=CONNECT_TIMEOUT_S)
        took = time.monotonic() - started
    finally:
        await link.close(grace_s=1)
        await task
        server.close()
        await server.wait_closed()
        logger.removeHandler(records)
    assert "before its CONNACK" in str(failed.get("error", "")), failed
    assert took < 3.0, f"three attempts took {took:.1f} s: each waited for a CONNACK that cannot come"
    assert accepted >= 3

"""Round trips through a real, private Mosquitto: paho-mqtt and aiomqtt, QoS 1, MQTT v5 and 3.1.1."""

from __future__ import annotations

import queue
import ssl
import uuid
from collections.abc import Callable

import aiomqtt
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode

from simulators.services import MosquittoBroker, TlsFiles
from tests.conftest import BrokerEndpoint

pytestmark = pytest.mark.integration


def _paho_round_trip(
    host: str, port: int, protocol: MQTTProtocolVersion, tls: TlsFiles | None = None
) -> tuple[str, bytes, int]:
    topic = f"linli/smoke/{uuid.uuid4().hex}"
    received: queue.Queue[tuple[str, bytes, int]] = queue.Queue()
    subscribed: queue.Queue[bool] = queue.Queue()
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2, client_id=f"smoke-{uuid.uuid4().hex[:8]}", protocol=protocol
    )
    if tls is not None:
        client.tls_set(
            ca_certs=str(tls.ca_cert),
            certfile=str(tls.client_cert),
            keyfile=str(tls.client_key),
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )

    def on_connect(c: mqtt.Client, _u: object, _f: object, rc: ReasonCode, _p: object) -> None:
        assert not rc.is_failure, rc
        c.subscribe(topic, qos=1)

    def on_subscribe(_c: mqtt.Client, _u: object, _mid: int, codes: list[ReasonCode], _p: object) -> None:
        subscribed.put(all(not code.is_failure for code in codes))

    def on_message(_c: mqtt.Client, _u: object, msg: mqtt.MQTTMessage) -> None:
        received.put((msg.topic, bytes(msg.payload), msg.qos))

    client.on_connect = on_connect
    client.on_subscribe = on_subscribe
    client.on_message = on_message
    client.connect(host, port)
    client.loop_start()
    try:
        assert subscribed.get(timeout=10)
        info = client.publish(topic, b"\x00hello\xff", qos=1)
        info.wait_for_publish(timeout=10)
        assert info.is_published()
        return received.get(timeout=10)
    finally:
        client.disconnect()
        client.loop_stop()


@pytest.mark.parametrize("protocol", [mqtt.MQTTv5, mqtt.MQTTv311], ids=["v5", "v3.1.1"])
def test_paho_publish_subscribe_qos1(mosquitto: BrokerEndpoint, protocol: MQTTProtocolVersion) -> None:
    topic, payload, qos = _paho_round_trip(mosquitto.host, mosquitto.port, protocol)
    assert topic.startswith("linli/smoke/")
    assert payload == b"\x00hello\xff"
    assert qos == 1


async def test_aiomqtt_publish_subscribe_qos1_v5(mosquitto: BrokerEndpoint) -> None:
    topic = f"linli/smoke/{uuid.uuid4().hex}"
    async with aiomqtt.Client(
        mosquitto.host, mosquitto.port, protocol=aiomqtt.ProtocolVersion.V5, identifier="smoke-aio"
    ) as client:
        await client.subscribe(topic, qos=1)
        await client.publish(topic, b'{"contact": true}', qos=1)
        async for message in client.messages:
            assert str(message.topic) == topic
            assert message.payload == b'{"contact": true}'
            assert message.qos == 1
            break


def test_mutual_tls_round_trip(make_broker: Callable[..., MosquittoBroker], test_pki: TlsFiles) -> None:
    broker = make_broker(tls=test_pki, require_client_cert=True)
    assert broker.url.startswith("mqtts://")
    _, payload, qos = _paho_round_trip(broker.host, broker.port, mqtt.MQTTv5, tls=test_pki)
    assert payload == b"\x00hello\xff"
    assert qos == 1


def test_mutual_tls_rejects_client_without_certificate(
    make_broker: Callable[..., MosquittoBroker], test_pki: TlsFiles
) -> None:
    broker = make_broker(tls=test_pki, require_client_cert=True)
    client = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    client.tls_set(ca_certs=str(test_pki.ca_cert), tls_version=ssl.PROTOCOL_TLS_CLIENT)

    def connect_and_read() -> None:
        client.connect(broker.host, broker.port)
        # TLS 1.3 reports the missing certificate on the first read, not in the handshake.
        for _ in range(50):
            if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                raise ConnectionError("broker closed the connection")

    with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
        connect_and_read()
    client.disconnect()

"""Service ports on loopback: outside the kernel's ephemeral range, so a stopped service's port
cannot be taken by an outgoing connection (nor by a client connecting to itself) before it restarts."""

from __future__ import annotations

import socket

from simulators.services import free_port
from simulators.services.net import ephemeral_port_range, service_port_range


def test_free_ports_are_outside_theephemeral_port_range_distinct_and_bindable() -> None:
    low, high = ephemeral_port_range()
    first, last = service_port_range()
    assert last < low or first > high
    ports = [free_port() for _ in range(100)]
    assert len(set(ports)) == len(ports)
    assert all(first <= p <= last for p in ports)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", ports[-1]))


def test_outgoing_connections_never_get_a_service_port() -> None:
    first, last = service_port_range()
    with socket.socket() as server:
        server.bind(("127.0.0.1", free_port()))
        server.listen(256)
        clients = []
        try:
            for _ in range(200):
                c = socket.create_connection(server.getsockname(), timeout=5)
                clients.append(c)
                server.accept()[0].close()
            local = [c.getsockname()[1] for c in clients]
            assert not [p for p in local if first <= p <= last]
        finally:
            for c in clients:
                c.close()


def test_a_stopped_service_gets_its_port_back_while_clients_retry() -> None:
    """Clients keep reconnecting to a stopped service's port (as an agent does to its broker);
    the service can bind it again afterwards."""
    port = free_port()
    for _ in range(500):
        with socket.socket() as c:
            c.settimeout(1)
            assert c.connect_ex(("127.0.0.1", port)) != 0  # refused: nothing listens, and no self-connect
    with socket.socket() as again:
        again.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        again.bind(("127.0.0.1", port))
        again.listen(1)

"""The chaos run's cut link: bytes pass, then pass neither way while nobody is told, then the
connections that lived through the cut are closed and new ones pass again."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator

import pytest

from simulators.chaos.linkcut import LinkCut


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(4096):
            self.request.sendall(data)


@pytest.fixture
def link() -> Iterator[LinkCut]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    relay = LinkCut(target_host="127.0.0.1", target_port=server.server_address[1])
    relay.start()
    yield relay
    relay.close()
    server.shutdown()
    server.server_close()


def _connect(link: LinkCut) -> socket.socket:
    return socket.create_connection(("127.0.0.1", link.port), timeout=5)


def _closed(sock: socket.socket) -> bool:
    """The relay closed `sock` (a FIN, or a reset when bytes it never read were pending)."""
    sock.settimeout(5)
    try:
        return sock.recv(16) == b""
    except ConnectionResetError:
        return True


def test_bytes_pass_until_the_cut_then_nothing_passes_and_nobody_is_told(link: LinkCut) -> None:
    with _connect(link) as before:
        before.sendall(b"ping")
        assert before.recv(16) == b"ping"
        link.cut()
        assert link.is_cut
        before.sendall(b"lost")
        before.settimeout(0.5)
        with pytest.raises(TimeoutError):  # no echo, and no close either: a silent link
            before.recv(16)
        with _connect(link) as during:  # accepted, but leads nowhere
            during.sendall(b"hello")
            during.settimeout(0.5)
            with pytest.raises(TimeoutError):
                during.recv(16)
            link.restore()
            assert _closed(during)  # closed when the link came back
        assert _closed(before)
    with _connect(link) as after:
        after.sendall(b"again")
        assert after.recv(16) == b"again"
    assert link.cuts == 1

"""A private Mosquitto broker on a loopback port, for tests, benchmarks and the demo."""

from __future__ import annotations

import getpass
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Self

from simulators.errors import ServiceError
from simulators.services.net import free_port, wait_for_port
from simulators.services.process import die_with_parent, log_tail, terminate
from simulators.services.tls import TlsFiles


def mosquitto_binary() -> str:
    found = shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )
    if found is None:
        raise ServiceError("mosquitto is not installed; run scripts/setup", service="mosquitto")
    return found


class MosquittoBroker:
    """One Mosquitto 2 process with its own config, persistence folder and log under `workdir`.

    Speaks MQTT v5 and v3.1.1 on `host:port`. With `tls`, the listener is TLS only, and with
    `require_client_cert` also mutual TLS (the client certificate's CN becomes the username).
    `stop()` then `start()` keeps the port, so clients can reconnect to the same URL.
    """

    def __init__(
        self,
        *,
        workdir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        tls: TlsFiles | None = None,
        require_client_cert: bool = False,
        max_queued_messages: int = 1_000_000,
        extra_config: Sequence[str] = (),
    ) -> None:
        if require_client_cert and tls is None:
            raise ValueError("require_client_cert needs tls files")
        self.workdir = workdir
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.tls = tls
        self.require_client_cert = require_client_cert
        self.max_queued_messages = max_queued_messages
        self.extra_config = tuple(extra_config)
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.workdir / "mosquitto.log"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def config_text(self) -> str:
        data = self.workdir / "data"
        lines = [
            f"listener {self.port} {self.host}",
            "allow_anonymous true",
            "persistence true",
            f"persistence_location {data}/",
            "autosave_interval 1",
            f"log_dest file {self.log_path}",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "connection_messages true",
            f"max_queued_messages {self.max_queued_messages}",
            "max_queued_bytes 0",
            "max_inflight_messages 1000",
            "persistent_client_expiration 2d",
            # small messages (an SOS, a command, its confirmation) go out at once, not held by
            # Nagle's algorithm until the receiver's delayed ACK (some 40 ms on Linux)
            "set_tcp_nodelay true",
            f"user {getpass.getuser()}",
        ]
        if self.tls is not None:
            lines += [
                f"cafile {self.tls.ca_cert}",
                f"certfile {self.tls.server_cert}",
                f"keyfile {self.tls.server_key}",
                "tls_version tlsv1.2",
            ]
            if self.require_client_cert:
                lines += ["require_certificate true", "use_identity_as_username true"]
        lines += list(self.extra_config)
        return "\n".join(lines) + "\n"

    def start(self, *, timeout: float = 15.0) -> None:
        if self.running:
            return
        (self.workdir / "data").mkdir(parents=True, exist_ok=True)
        conf = self.workdir / "mosquitto.conf"
        conf.write_text(self.config_text())
        self._proc = subprocess.Popen(  # noqa: S603 - our own binary and config
            die_with_parent([mosquitto_binary(), "-c", str(conf)]),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        if not wait_for_port(self.host, self.port, timeout=timeout, alive=lambda: self.running):
            self.stop()
            raise ServiceError(
                f"mosquitto did not listen on {self.host}:{self.port}",
                service="mosquitto",
                log_tail=log_tail(self.log_path),
            )

    def stop(self) -> None:
        if self._proc is not None:
            terminate(self._proc)
            self._proc = None

    def kill(self) -> None:
        """SIGKILL, as a crash or a power cut would (persistence only up to the last autosave)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(timeout=10)
        self._proc = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

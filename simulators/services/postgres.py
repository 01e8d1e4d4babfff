"""A private PostgreSQL 15 cluster with TimescaleDB preloaded, on a loopback port.

`initdb` refuses to run as root, so when we are root the cluster belongs to the `postgres` OS
user and every server command runs through `runuser`. The data folder keeps its contents between
`start()` calls: the demo reuses its data, tests start from a fresh temporary folder.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import Self

from simulators.errors import ServiceError
from simulators.services.net import free_port, wait_for_port
from simulators.services.process import as_user_prefix, chown_tree, die_with_parent, log_tail, run, wait_gone
from simulators.services.reaper import REAPER_SIGNAL

PG_MAJOR = 15


def pg_bindir() -> Path:
    """PostgreSQL 15's server binaries (Debian layout first, then whatever pg_config says)."""
    debian = Path(f"/usr/lib/postgresql/{PG_MAJOR}/bin")
    if (debian / "initdb").exists():
        return debian
    pg_config = shutil.which("pg_config")
    if pg_config:
        done = run([pg_config, "--bindir"])
        candidate = Path(done.stdout.strip())
        if (candidate / "initdb").exists():
            return candidate
    raise ServiceError(f"PostgreSQL {PG_MAJOR} is not installed; run scripts/setup", service="postgres")


class PostgresCluster:
    """One PostgreSQL server over its own data folder.

    Args:
        datadir: the cluster's folder; created by `initdb` on first start.
        port: TCP port on `host`; a free one when not given.
        preload_timescaledb: add TimescaleDB to `shared_preload_libraries`.
        durable: False trades crash safety for speed (fsync off): right for throw-away test
            clusters, wrong for anything whose data should survive a power cut.
    """

    def __init__(
        self,
        *,
        datadir: Path,
        host: str = "127.0.0.1",
        port: int | None = None,
        preload_timescaledb: bool = True,
        durable: bool = True,
        superuser: str = "postgres",
    ) -> None:
        self.datadir = datadir
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.preload_timescaledb = preload_timescaledb
        self.durable = durable
        self.superuser = superuser
        self._os_user = "postgres" if os.geteuid() == 0 else None
        self._reaper: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        return self.datadir.parent / f"{self.datadir.name}.log"

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@{self.host}:{self.port}/{dbname}"

    def _cmd(self, tool: str, *args: str) -> list[str]:
        return [*as_user_prefix(self._os_user), str(pg_bindir() / tool), *args]

    def _make_reachable(self) -> None:
        """Let the `postgres` OS user traverse to the data folder (execute bit only, no listing)."""
        for ancestor in self.datadir.resolve().parents:
            mode = ancestor.stat().st_mode
            if not mode & stat.S_IXOTH:
                ancestor.chmod(mode | stat.S_IXOTH)

    def _initdb(self) -> None:
        self.datadir.mkdir(parents=True, exist_ok=True)
        if self._os_user is not None:
            self._make_reachable()
            chown_tree(self.datadir, self._os_user)
        done = run(
            self._cmd(
                "initdb",
                "-D",
                str(self.datadir),
                "-U",
                self.superuser,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            )
        )
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.strip()}", service="postgres")

    def _write_config(self) -> None:
        settings = {
            "listen_addresses": f"'{self.host}'",
            "port": str(self.port),
            "unix_socket_directories": f"'{self.datadir}'",
            "max_connections": "200",
            "shared_buffers": "'256MB'",
            "timescaledb.telemetry_level": "off" if self.preload_timescaledb else None,
            "shared_preload_libraries": "'timescaledb'" if self.preload_timescaledb else None,
            "fsync": None if self.durable else "off",
            "synchronous_commit": None if self.durable else "off",
            "full_page_writes": None if self.durable else "off",
            "max_wal_size": "'2GB'",
            "log_min_messages": "warning",
        }
        body = "".join(f"{key} = {value}\n" for key, value in settings.items() if value is not None)
        (self.datadir / "linli.conf").write_text(body)
        main_conf = self.datadir / "postgresql.conf"
        text = main_conf.read_text()
        if "include_if_exists = 'linli.conf'" not in text:
            main_conf.write_text(text + "\ninclude_if_exists = 'linli.conf'\n")
        if self._os_user is not None:
            chown_tree(self.datadir, self._os_user)

    def _pid(self) -> int | None:
        try:
            return int((self.datadir / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    @property
    def running(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True

    def start(self, *, timeout: float = 60.0) -> None:
        if self.running:
            return
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        self._write_config()
        log = self.log_path
        log.touch()
        if self._os_user is not None:
            chown_tree(log, self._os_user)
        done = run(
            self._cmd(
                "pg_ctl", "-D", str(self.datadir), "-l", str(log), "-w", "-t", str(int(timeout)), "start"
            ),
            timeout=timeout + 10,
        )
        if done.returncode != 0 or not wait_for_port(self.host, self.port, timeout=10):
            said = (done.stdout + done.stderr).strip()
            raise ServiceError(
                f"PostgreSQL did not start (pg_ctl exit {done.returncode}"
                + (f": {said[-1000:]})" if said else ")"),
                service="postgres",
                log_tail=log_tail(log),
            )
        self._start_reaper()

    def _start_reaper(self) -> None:
        """`pg_ctl start` daemonises the server: a reaper beside this process stops it when this
        process dies without stopping it (a SIGKILL, a crash, a broken pipe)."""
        self._stop_reaper()
        stop = self._cmd("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop")
        self._reaper = subprocess.Popen(  # noqa: S603 - this interpreter, our own module and command
            die_with_parent(
                [sys.executable, "-m", "simulators.services.reaper", "--", *stop], sig=REAPER_SIGNAL
            ),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "LINLI_REAPER_PARENT": str(os.getpid())},
            start_new_session=True,
        )

    def _stop_reaper(self) -> None:
        reaper, self._reaper = self._reaper, None
        if reaper is not None and reaper.poll() is None:
            reaper.kill()
            reaper.wait(timeout=10)

    def stop(self, *, mode: str = "fast") -> None:
        self._stop_reaper()
        pid = self._pid()
        if pid is None:
            return
        run(self._cmd("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop"), timeout=60)
        if not wait_gone(pid, timeout=10):
            raise ServiceError(f"PostgreSQL (pid {pid}) did not stop", service="postgres")

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

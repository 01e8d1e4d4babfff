"""A child process of the demo or the benchmark: its own process group, log file, kill and stop."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

from simulators.services.process import die_with_parent


class Child:
    """One supervised subprocess, in its own session so a terminal's Ctrl-C reaches only us, and
    ended (SIGTERM) when its supervisor dies without stopping it.

    Output (stdout and stderr) goes to `log`, appended, so restarts keep the history.
    """

    def __init__(
        self, *, name: str, argv: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log = log
        self.env = dict(os.environ if env is None else env)
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self.restarts = 0

    @classmethod
    def python(
        cls, *, name: str, module: str, args: Sequence[str], log: Path, env: Mapping[str, str] | None = None
    ) -> Child:
        """``python -m module args...`` with this interpreter."""
        return cls(name=name, argv=[sys.executable, "-m", module, *args], log=log, env=env)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def returncode(self) -> int | None:
        return None if self._proc is None else self._proc.poll()

    def start(self) -> None:
        if self.running:
            return
        if self._proc is not None:
            self.restarts += 1
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self._close_log()
        self._log_file = open(self.log, "ab")  # noqa: SIM115 - closed in _close_log
        self._proc = subprocess.Popen(  # noqa: S603 - our own interpreter and modules
            die_with_parent(self.argv),
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL the child's process group, as a crash would, and reap it."""
        if self._proc is not None and self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(timeout=30)
        self._close_log()

    def stop(self, *, timeout: float = 30.0, sig: int = signal.SIGTERM) -> int | None:
        """Send `sig`, wait up to `timeout`, then SIGKILL. Returns the exit status."""
        proc = self._proc
        if proc is None:
            return None
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close_log()
        return proc.poll()

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to exit by itself (raises `subprocess.TimeoutExpired`)."""
        if self._proc is None:
            raise RuntimeError(f"{self.name} was never started")
        code = self._proc.wait(timeout=timeout)
        self._close_log()
        return code

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def _close_log(self) -> None:
        if self._log_file is not None and (self._proc is None or self._proc.poll() is not None):
            self._log_file.close()
            self._log_file = None

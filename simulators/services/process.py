"""Small helpers for running service binaries, as another OS user when we are root."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def as_user_prefix(user: str | None) -> list[str]:
    """Command prefix that runs a program as `user` (only when we are root and it differs)."""
    if user is None or os.geteuid() != 0 or pwd.getpwuid(os.geteuid()).pw_name == user:
        return []
    runuser = shutil.which("runuser") or "/usr/sbin/runuser"
    return [runuser, "-u", user, "--"]


def chown_tree(path: Path, user: str) -> None:
    entry = pwd.getpwnam(user)
    os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def die_with_parent(argv: Sequence[str], *, sig: str = "TERM") -> list[str]:
    """`argv`, run so that it gets SIG`sig` when the process that starts it dies, however it dies
    (a SIGKILL, a crash, a broken pipe): Linux's parent-death signal, set by util-linux `setpriv`
    just before it execs `argv` (same process, same pid). Without `setpriv`, `argv` unchanged.

    The signal follows the *thread* that starts the child: start children from a thread that
    lives as long as they should (the main thread of a supervisor)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", sig, "--", *argv] if setpriv else list(argv)


def run(cmd: Sequence[str], *, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603 - fixed argument vectors built by this package
        list(cmd), check=False, capture_output=True, text=True, timeout=timeout
    )


def terminate(proc: subprocess.Popen[bytes], *, timeout: float = 10.0) -> None:
    """SIGTERM, wait, then SIGKILL the process group that `proc` leads."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)


def wait_gone(pid: int, *, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False

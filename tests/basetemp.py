"""A temporary folder of its own for each test session (unless ``--basetemp`` is given).

Run as root, the tests run PostgreSQL as the ``postgres`` OS user, which needs the execute bit on
every folder above its data directory (`PostgresCluster` sets it). pytest's default folders are all
under ``/tmp/pytest-of-<user>``, and every new session resets that folder to 0700. So a second
session started on the machine (another ``make test``, a developer's pytest) cut off the first
session's running clusters: PostgreSQL PANICked at its next checkpoint ("could not open file
.../global/pg_control: Permission denied", the chaos test in a loaded run) or could not restart
after a stop (the database outage test's "PostgreSQL did not start"). Each session now has
``/tmp/linli-tests-*`` to itself, locked while it runs; the folders of finished sessions beyond
the newest `KEEP` are removed at the next start.
"""

from __future__ import annotations

import contextlib
import fcntl
import shutil
import tempfile
from pathlib import Path
from typing import IO

PREFIX = "linli-tests-"
KEEP = 3

_held: list[IO[bytes]] = []


def _lock(folder: Path) -> Path:
    return folder.with_name(folder.name + ".lock")


def _prune(tmp: Path) -> None:
    """Remove the folders of finished sessions, keeping the newest `KEEP` (a running session's
    folder is locked and never removed)."""
    folders = sorted(
        (p for p in tmp.glob(PREFIX + "*") if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True
    )
    for folder in folders[KEEP:]:
        lock = _lock(folder)
        with contextlib.suppress(OSError), lock.open("ab") as f:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a session still running
            shutil.rmtree(folder, ignore_errors=True)
            lock.unlink()


def private_basetemp() -> Path:
    """A new folder for this session's temporary files, locked until the process ends."""
    tmp = Path(tempfile.gettempdir())
    _prune(tmp)
    folder = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp))
    f = _lock(folder).open("ab")
    fcntl.flock(f, fcntl.LOCK_EX)
    _held.append(f)  # held (and the lock with it) for the life of the session
    return folder

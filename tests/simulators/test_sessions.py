"""Two test sessions on one machine leave each other's services alone: another pytest session
starting (one without this project's configuration, as a developer's would be) does not cut a
running PostgreSQL off its data directory (`tests.basetemp`)."""

from __future__ import annotations

import fcntl
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from simulators.services import PostgresCluster
from tests.basetemp import PREFIX


def test_this_session_has_a_temporary_folder_of_its_own_locked_while_it_runs(tmp_path: Path) -> None:
    own = [p for p in tmp_path.parents if p.name.startswith(PREFIX)]
    assert own, tmp_path
    # held by this session: never pruned by another
    with (own[0].parent / (own[0].name + ".lock")).open("ab") as lock, pytest.raises(BlockingIOError):
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)


@pytest.mark.integration
def test_another_session_starting_does_not_cut_off_a_running_postgresql(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    (other / "test_other.py").write_text("def test_uses_a_temporary_folder(tmp_path):\n    assert tmp_path\n")
    with PostgresCluster(datadir=tmp_path / "pg", durable=False) as cluster:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(other / "test_other.py")],
            cwd=other,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout[-2000:]
        # A checkpoint opens global/pg_control: refused when a folder above it lost its execute bit.
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            conn.execute("CHECKPOINT")
        cluster.stop()
        cluster.start()
        with psycopg.connect(cluster.dsn(), autocommit=True) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)

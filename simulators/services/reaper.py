"""``python -m simulators.services.reaper -- COMMAND...``: run COMMAND when the process that started
this one dies. For servers that leave their starter's process tree (PostgreSQL's ``pg_ctl start``
daemonises the server): the starter runs this beside it with `die_with_parent`, and kills it
first when it stops the server itself.

Its parent-death signal is SIGWINCH, whose default action is to ignore it: a parent that dies
while this process is still starting cannot kill it before it is ready; it then sees that its
parent is gone and runs COMMAND at once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Final

#: the parent-death signal to start the reaper with (`die_with_parent(..., sig=REAPER_SIGNAL)`)
REAPER_SIGNAL: Final = "WINCH"


def main(argv: list[str]) -> int:
    if not argv or argv[0] != "--" or len(argv) < 2:
        print("usage: python -m simulators.services.reaper -- COMMAND...", file=sys.stderr)
        return 2
    command = argv[1:]
    parent = int(os.environ.get("LINLI_REAPER_PARENT", "0"))
    wanted = {signal.SIGWINCH, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    if parent and os.getppid() != parent:  # orphaned while starting
        return subprocess.run(command, check=False, timeout=120).returncode  # noqa: S603 - our own command
    signal.sigwait(wanted)
    return subprocess.run(command, check=False, timeout=120).returncode  # noqa: S603 - our own command


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""How every ``linli bench`` that builds its own services runs: in ``--workdir`` (kept, to look at
afterwards) or a temporary folder (removed), with the machine's load average before and after
(a figure is only as good as the quiet it was measured in), its figures printed as one JSON line."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def run_in_workdir(workdir: Path | None, measure: Callable[[Path], dict[str, Any]], *, prefix: str) -> int:
    """Run `measure` in `workdir` or a new temporary folder named `prefix`..., print its figures."""
    root = workdir or Path(tempfile.mkdtemp(prefix=prefix))
    root.mkdir(parents=True, exist_ok=True)
    try:
        load_before = os.getloadavg()[0]
        figures = measure(root)
        figures["load_average_1m"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(figures))
    return 0

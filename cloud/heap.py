"""Giving the heap's free pages back to the operating system after a backlog.

CPython frees a backlog's objects into glibc's heaps (one per thread that allocated), which keep
the pages: a worker that held 100 MB during a database outage would stay that size for the rest
of its life. ``malloc_trim(0)`` returns every free page of every heap. It is glibc's; elsewhere
(musl, macOS) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import cache

log = logging.getLogger("linli.cloud.heap")


@cache
def _trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
        return trim
    except (OSError, AttributeError):
        return None


def release_free_heap() -> bool:
    """Return the heap's free pages to the system; False where glibc's ``malloc_trim`` is absent."""
    trim = _trim()
    if trim is None:
        return False
    trim(0)
    log.debug("released the heap's free pages")
    return True

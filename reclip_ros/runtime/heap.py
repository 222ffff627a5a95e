"""Return freed heap pages to the system in a long-running process (glibc; no-op elsewhere).

A node that handles a stream of camera frames allocates and frees frame-sized buffers on
several threads (executor, worker, DDS). glibc serves them from per-thread arenas and,
once its mmap threshold has risen (it rises each time a large block is freed), from the
heap; pages freed in the middle of an arena stay resident until ``malloc_trim`` hands
them back. :class:`HeapTrimmer` calls it at most every ``period_s`` seconds, from the
worker thread, between jobs. It changes nothing the program computes; ``reclip soak``
measures its effect on resident memory.
"""

from __future__ import annotations

import ctypes
import sys
import time
from typing import Optional

TRIM_PERIOD_S = 5.0


def _glibc() -> Optional[ctypes.CDLL]:
    if not sys.platform.startswith('linux'):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        return libc
    except (OSError, AttributeError):  # not glibc (e.g. musl has no malloc_trim)
        return None


_LIBC = _glibc()


def trim() -> bool:
    """Return free heap pages to the system; True when some memory was released."""
    if _LIBC is None:
        return False
    return bool(_LIBC.malloc_trim(0))


class HeapTrimmer:
    """Calls :func:`trim` at most once per *period_s* seconds (``maybe_trim``)."""

    def __init__(self, period_s: float = TRIM_PERIOD_S,
                 clock=time.monotonic) -> None:
        self.period_s = float(period_s)
        self.clock = clock
        self._last = clock()
        self.trims = 0

    def maybe_trim(self) -> bool:
        """Trim when the period has passed since the last trim; True when it ran."""
        now = self.clock()
        if now - self._last < self.period_s:
            return False
        self._last = now
        trim()
        self.trims += 1
        return True

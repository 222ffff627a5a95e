"""The heap trimmer: freed heap pages go back to the system (glibc), at most once per period."""

import ctypes
import subprocess
import sys
import textwrap

import pytest

from reclip_ros.runtime.heap import HeapTrimmer

GLIBC = sys.platform.startswith('linux') and hasattr(ctypes.CDLL(None), 'malloc_trim')


def test_trims_at_most_once_per_period():
    now = [100.0]
    trimmer = HeapTrimmer(period_s=5.0, clock=lambda: now[0])
    assert not trimmer.maybe_trim()          # the period starts at construction
    now[0] += 4.9
    assert not trimmer.maybe_trim()
    now[0] += 0.2
    assert trimmer.maybe_trim()
    assert not trimmer.maybe_trim()          # and restarts at each trim
    now[0] += 5.0
    assert trimmer.maybe_trim()
    assert trimmer.trims == 2


@pytest.mark.skipif(not GLIBC, reason='malloc_trim is glibc-only')
def test_trim_returns_pages_freed_inside_the_heap():
    """Blocks freed below a live one stay resident until trimmed (checked with libc itself).

    A fresh interpreter mallocs 400 blocks of 64 KiB (below glibc's mmap threshold, so
    they come from the heap), touches them, frees all but the last (which pins the heap
    top, so free() alone cannot shrink it) and reads VmRSS before and after ``trim``.
    """
    code = textwrap.dedent('''
        import ctypes
        from reclip_ros.runtime.heap import trim
        libc = ctypes.CDLL(None)
        libc.malloc.restype = ctypes.c_void_p
        libc.malloc.argtypes = [ctypes.c_size_t]
        libc.free.argtypes = [ctypes.c_void_p]
        def rss_kb():
            for line in open('/proc/self/status'):
                if line.startswith('VmRSS:'):
                    return int(line.split()[1])
        blocks = [libc.malloc(64 * 1024) for _ in range(400)]
        for b in blocks:
            ctypes.memset(b, 1, 64 * 1024)
        for b in blocks[:-1]:
            libc.free(b)
        before = rss_kb()
        released = trim()
        print(before, rss_kb(), released)
    ''')
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                         timeout=120, check=True).stdout.split()
    before, after, released = int(out[0]), int(out[1]), out[2]
    assert released == 'True'
    assert before - after > 15 * 1024, (before, after)  # 25 MB freed; most of it returned

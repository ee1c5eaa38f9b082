"""Keep freed memory for reuse, so that the hot loops do not pay page faults on every fresh array.

glibc returns large freed blocks (mmap'd ones) to the kernel at once; the next
array of that size is then faulted in page by page, which on these machines
made a training step about 20% slower. Raising the mmap and trim thresholds
keeps such blocks in the heap for the next allocation. The command-line entry
points call this once; importing scratchcap changes nothing.

The thresholds hold for glibc's main arena alone: a thread's own arena gives a
heap back to the kernel as soon as it is empty, whatever the thresholds, so the
pool's threads, each running a training step on its own captions
(scratchcap.thread_shards), page-faulted 9.6 thousand pages a step back in. One
arena for every thread (M_ARENA_MAX) keeps their memory too: on the 2-core Xeon
a 64-caption step on 2 threads took 666 ms instead of 731, and 112 faults. The
arena's lock costs little: NumPy allocates once per array, not per element.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8


def keep_freed_memory(threshold: int = 1 << 30) -> bool:
    """Ask glibc to keep freed blocks up to ``threshold`` bytes; False where that is not possible."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # not glibc (macOS, musl): nothing to do
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * threshold)) \
        and bool(mallopt(M_ARENA_MAX, 1))

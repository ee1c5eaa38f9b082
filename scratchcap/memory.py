"""Keep freed memory for reuse, so that the hot loops do not pay page faults on every fresh array.

glibc returns large freed blocks (mmap'd ones) to the kernel at once; the next
array of that size is then faulted in page by page, which on these machines
made a training step about 20% slower. Raising the mmap and trim thresholds
keeps such blocks in the heap for the next allocation. The command-line entry
points call this once; importing scratchcap changes nothing.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3


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
    return bool(mallopt(M_MMAP_THRESHOLD, threshold)) and bool(mallopt(M_TRIM_THRESHOLD, 2 * threshold))

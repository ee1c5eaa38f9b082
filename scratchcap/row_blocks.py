"""Elementwise NumPy work in cache-sized blocks of rows.

Notation:
    n        rows: the length of the first axis of the arrays a block function touches
    row      elements per row (L * A for the attention's (N, L, A) arrays)
    s        a slice of range(n); ``block(s)`` computes rows s of its outputs

NumPy runs each ufunc over the whole array, so a chain of them over (N, L, A)
streams 25 MB through memory once per operator. ``run(block, n, xp, row)``
calls ``block(s)`` for consecutive slices covering range(n): on NumPy in blocks
of about BLOCK_ELEMENTS elements, so the chain's temporaries stay in cache; on
CuPy once, with slice(None), since there each operator is one kernel over the
whole array anyway. A block function writes only its own rows and reduces
nothing across rows, so the result is bit for bit the unsplit one.

With more than one thread (scratchcap.threads), the blocks run on the pool, at
least one per thread: a block still writes only its own rows, so the result
does not depend on the thread count.
"""
from __future__ import annotations

import numpy

from . import threads

BLOCK_ELEMENTS = 1 << 18  # 1 MB of float32, 2 MB of uint64: a chain's temporaries stay in a core's cache


def slices(n: int, row: int):
    """Consecutive slices covering range(n), as many rows of ``row`` elements per slice as fit BLOCK_ELEMENTS,
    and at least one."""
    per_block = max(1, BLOCK_ELEMENTS // max(row, 1))
    return [slice(start, min(start + per_block, n)) for start in range(0, n, per_block)]


def run(block, n: int, xp, row: int) -> None:
    """Call ``block(s)`` for the slices covering range(n) (see the module notes)."""
    if xp.__name__ != "numpy":
        block(slice(None))
        return
    blocks = slices(n, row)
    parts = threads.count()
    if parts > 1 and n * row >= threads.MIN_ELEMENTS:
        # Blocks of one size, a whole number per thread (worker w takes blocks w, w + parts, ...): block1_pool's
        # 112 rows in blocks of 36, 36, 36 and 4 gave one thread 72 rows and the other 40.
        blocks = threads.split(n, -(-len(blocks) // parts) * parts)
    threads.parallel_for(lambda s, _: block(s), blocks, size=n * row)


def map_rows(fn, *arrays, dtype=None):
    """``fn(*arrays)``, computed by rows over the pool: out[s] = fn(*(a[s] for a in arrays)).

    For elementwise ``fn`` of arrays that share their first axis (the result's shape is arrays[0]'s, its dtype
    ``dtype`` or numpy.result_type(*arrays)). With one thread, on CuPy, under MIN_ELEMENTS or inside the
    pool it is the plain call, so the single-threaded path is unchanged; split or not, each element is
    computed by the same ufuncs.
    """
    first = arrays[0]
    if not isinstance(first, numpy.ndarray) or first.ndim == 0 or first.shape[0] < 2 \
            or threads._serial(numpy, first.size):
        return fn(*arrays)
    out = numpy.empty(first.shape, dtype=dtype or numpy.result_type(*arrays))

    def block(s):
        out[s] = fn(*(a[s] for a in arrays))
    blocks = threads.split(first.shape[0])
    threads.parallel_for(lambda s, _: block(s), blocks, size=first.size)
    return out

"""A rank's share of a global batch, and the dropout numbers that go with it.

The global batch stays ``--batch-size``: every rank walks the same seeded batches and takes
its contiguous slice of rows (rank r of N: rows lo..hi of ``numpy.array_split``), so a run's
result does not depend on N. Each rank divides its losses by the whole batch's counts
(``tokens_total``, ``captions_total``), and its dropout masks are rows lo..hi of the mask
the whole batch would have drawn (ShardRng): the summed gradients are one process's.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def shard_bounds(n: int, rank: int, size: int):
    """(lo, hi): rank's contiguous rows of n, the first n % size ranks one row more (may be empty)."""
    base, extra = divmod(n, size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


@dataclass
class ShardRng:
    """A NumPy generator shared by every rank (same seed, same state), and where this rank's rows start.

    scratchcap.backend.uniform draws the key from ``generator`` as one process would, then
    computes only rows ``row_offset``... of the whole batch's numbers.
    """
    generator: np.random.Generator
    row_offset: int

    @property
    def bit_generator(self):
        return self.generator.bit_generator


def batch_totals(examples, indices) -> dict:
    """The whole batch's real tokens (each caption's words and <end>) and captions, from the encoded examples."""
    return dict(tokens_total=int(sum(len(examples[k][1]) - 1 for k in indices)), captions_total=len(indices))

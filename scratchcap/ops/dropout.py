"""Inverted dropout with an explicit random generator.

Notation:
    x     any shape (...)
    mask  same shape as x: 0 where dropped, 1 / (1 - p) where kept
    out = x * mask, so activations keep their expected value and need no
    rescaling at test time.

The generator is an argument (numpy.random.Generator or cupy's), never hidden
global state, so a seeded run is reproducible and a test can replay the mask.
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import uniform
from . import _checks


def dropout_forward(x, p: float, rng, *, train: bool = True):
    """Returns (out, cache). With train=False or p=0 it is the identity."""
    _checks.floats("dropout", x=x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1), got {p}")
    if not train or p == 0.0:
        return x, (None,)
    scale = x.dtype.type(1.0 / (1.0 - p))
    mask = row_blocks.map_rows(lambda u: (u >= p) * scale, uniform(rng, x.shape, like=x), dtype=x.dtype)
    return row_blocks.map_rows(lambda a, m: a * m, x, mask, dtype=x.dtype), (mask,)


def dropout_backward(dout, cache):
    """Returns (dx,) = (dout * mask,)."""
    (mask,) = cache
    return (dout if mask is None else row_blocks.map_rows(lambda g, m: g * m, dout, mask, dtype=dout.dtype),)

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

from ..backend import uniform
from . import _checks


def dropout_forward(x, p: float, rng, *, train: bool = True):
    """Returns (out, cache). With train=False or p=0 it is the identity."""
    _checks.floats("dropout", x=x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must lie in [0, 1), got {p}")
    if not train or p == 0.0:
        return x, (None,)
    keep = uniform(rng, x.shape, like=x) >= p
    mask = keep * x.dtype.type(1.0 / (1.0 - p))
    return x * mask, (mask,)


def dropout_backward(dout, cache):
    """Returns (dx,) = (dout * mask,)."""
    (mask,) = cache
    return (dout if mask is None else dout * mask,)

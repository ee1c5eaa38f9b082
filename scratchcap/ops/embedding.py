"""Word embedding lookup.

Notation:
    idx (N, T)  integer word ids in [0, V)
    w   (V, E)  embedding matrix
    out (N, T, E)
"""
from __future__ import annotations

from ..backend import get_array_module, scatter_add
from . import _checks


def embedding_forward(idx, w):
    """Returns (out, cache) with out[n, t] = w[idx[n, t]]."""
    _checks.integers("embedding", "idx", idx)
    _checks.floats("embedding", w=w)
    _checks.ndim("embedding", "w", w, 2, "V, E")
    xp = get_array_module(idx, w)
    V = w.shape[0]
    _checks.index_range("embedding", "idx values", idx, V, f"w of shape {tuple(w.shape)}")
    out = xp.take(w, idx, axis=0)
    return out, (idx, w.shape, w.dtype)


def embedding_backward(dout, cache):
    """dout (N, T, E) -> (dw (V, E),). Repeated ids accumulate their gradients."""
    idx, wshape, dtype = cache
    xp = get_array_module(dout)
    dw = xp.zeros(wshape, dtype=dtype)
    scatter_add(dw, idx.reshape(-1), dout.reshape(-1, wshape[1]))
    return (dw,)

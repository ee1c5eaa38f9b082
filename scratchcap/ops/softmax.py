"""Numerically stable softmax and log-softmax along one axis.

Notation: x any shape, softmax taken along ``axis`` (default the last, e.g. V or L).
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import get_array_module
from . import _checks


def softmax(x, axis: int = -1):
    """exp(x - max) / sum(exp(x - max)); subtracting the max keeps exp from overflowing."""
    xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def log_softmax(x, axis: int = -1):
    """x - logsumexp(x), computed from the shifted values for stability.

    Along the last axis of a matrix (a decoding step's (N, V) logits) the rows are split over the thread
    pool in blocks; each row is computed alone, so the result does not depend on the thread count."""
    xp = get_array_module(x)
    if x.ndim == 2 and axis in (-1, 1) and xp.__name__ == "numpy":  # CuPy: one kernel each, no copy
        out = xp.empty_like(x)

        def rows(s):
            out[s] = _log_softmax(xp, x[s], -1)
        row_blocks.run(rows, x.shape[0], xp, x.shape[1])
        return out
    return _log_softmax(xp, x, axis)


def _log_softmax(xp, x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    shifted -= xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
    return shifted


def softmax_forward(x, axis: int = -1):
    """Returns (out, cache) with out = softmax(x) along axis."""
    _checks.floats("softmax", x=x)
    out = softmax(x, axis)
    return out, (out, axis)


def softmax_backward(dout, cache):
    """Returns (dx,) with dx = s * (dout - sum(dout * s))."""
    s, axis = cache
    return (s * (dout - (dout * s).sum(axis=axis, keepdims=True)),)


def log_softmax_forward(x, axis: int = -1):
    """Returns (out, cache) with out = log_softmax(x) along axis."""
    _checks.floats("log_softmax", x=x)
    out = log_softmax(x, axis)
    return out, (out, axis)


def log_softmax_backward(dout, cache):
    """Returns (dx,) with dx = dout - softmax(x) * sum(dout)."""
    out, axis = cache
    xp = get_array_module(out)
    return (dout - xp.exp(out) * dout.sum(axis=axis, keepdims=True),)

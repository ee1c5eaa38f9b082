"""Fully connected layer: out = x @ w + b over the last axis.

Notation:
    x  (..., D)  inputs, any number of leading axes (N, or N, T, or N, L, ...)
    w  (D, M)    weights
    b  (M,)      bias
    out (..., M)
"""
from __future__ import annotations

from ..threads import add_rows, matmul, sum_rows
from . import _checks


def linear_forward(x, w, b):
    """Returns (out, cache) with out = x @ w + b, shape (..., M)."""
    _checks.floats("linear", x=x, w=w, b=b)
    _checks.ndim("linear", "w", w, 2, "D, M")
    if x.ndim < 1 or x.shape[-1] != w.shape[0]:
        raise ValueError(
            f"linear: x has shape {tuple(x.shape)} but w has shape {tuple(w.shape)}; "
            "x's last axis must equal w's first (D)")
    _checks.shape("linear", "b", b, (w.shape[1],), "M", "w")
    # One 2-D GEMM: a batched (N, T, D) @ (D, M) matmul is far slower in NumPy.
    out = add_rows(matmul(x.reshape(-1, w.shape[0]), w), b)
    return out.reshape(x.shape[:-1] + (w.shape[1],)), (x, w)


def linear_backward(dout, cache, *, input_grad=True):
    """dout (..., M) -> (dx (..., D), dw (D, M), db (M,)).

    ``input_grad=False`` returns None for dx and skips its GEMM, for layers fed
    by data (the image features) rather than by another layer.
    """
    x, w = cache
    dx = matmul(dout.reshape(-1, w.shape[1]), w.T).reshape(x.shape) if input_grad else None
    dw, db = linear_weight_grads(x, dout)
    return dx, dw, db


def linear_weight_grads(x, dout):
    """x (..., D), dout (..., M) -> (dw (D, M), db (M,)): the weights' half of linear_backward.

    The rows may be gathered from anywhere: a decoder that applies the same
    weights at every step stacks the steps' inputs and output gradients, (T, N, D)
    and (T, N, M), and gets the sum over steps from one GEMM instead of T small
    ones and T additions.
    """
    d2 = dout.reshape(-1, dout.shape[-1])
    return matmul(x.reshape(-1, x.shape[-1]).T, d2), sum_rows(d2)

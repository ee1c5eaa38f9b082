"""Elementwise activations: relu, tanh, sigmoid.

Shapes: x is any shape (...); out and dx have the same shape and dtype as x.
Each backward returns a 1-tuple (dx,) to keep one calling convention for all layers.
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import get_array_module
from . import _checks


def relu_forward(x):
    """out = max(x, 0). Returns (out, cache)."""
    _checks.floats("relu", x=x)
    xp = get_array_module(x)
    out = row_blocks.map_rows(lambda v: xp.maximum(v, 0), x)
    return out, (out,)


def relu_backward(dout, cache):
    """Returns (dx,), with dx = dout where the output was positive, else 0."""
    (out,) = cache
    return (row_blocks.map_rows(lambda g, o: g * (o > 0), dout, out, dtype=dout.dtype),)


def tanh_forward(x):
    """out = tanh(x). Returns (out, cache)."""
    _checks.floats("tanh", x=x)
    out = get_array_module(x).tanh(x)
    return out, (out,)


def tanh_backward(dout, cache):
    """Returns (dx,), with dx = dout * (1 - tanh(x)^2)."""
    (out,) = cache
    return (dout * (1 - out * out),)


def sigmoid(x):
    """Logistic function, written through tanh so that large |x| cannot overflow exp."""
    xp = get_array_module(x)
    return 0.5 * (xp.tanh(0.5 * x) + 1)


def sigmoid_forward(x):
    """out = 1 / (1 + exp(-x)). Returns (out, cache)."""
    _checks.floats("sigmoid", x=x)
    out = sigmoid(x)
    return out, (out,)


def sigmoid_backward(dout, cache):
    """Returns (dx,), with dx = dout * s * (1 - s)."""
    (out,) = cache
    return (dout * out * (1 - out),)

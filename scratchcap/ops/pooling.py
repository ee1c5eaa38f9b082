"""Max pooling over (H, W) windows of a channels-last tensor.

Notation:
    x    (N, H, W, C)
    out  (N, Ho, Wo, C), Ho = (H - size) // stride + 1 (likewise Wo)
    arg  (N, Ho, Wo, C)  which of the size*size window offsets held the max
"""
from __future__ import annotations

from ..backend import get_array_module
from . import _checks
from .conv import _window


def max_pool2d_forward(x, *, size: int = 2, stride: int = 2):
    """Returns (out, cache). Loops over the size*size window offsets, not over pixels."""
    _checks.floats("max_pool2d", x=x)
    _checks.ndim("max_pool2d", "x", x, 4, "N, H, W, C")
    N, H, W, C = x.shape
    if size < 1 or stride < 1 or H < size or W < size:
        raise ValueError(
            f"max_pool2d: cannot pool x of shape {tuple(x.shape)} with size {size}, stride {stride}")
    xp = get_array_module(x)
    Ho, Wo = (H - size) // stride + 1, (W - size) // stride + 1
    out = x[:, _window(0, Ho, stride), _window(0, Wo, stride), :].copy()
    arg = xp.zeros(out.shape, dtype=xp.int32)
    for k in range(1, size * size):
        i, j = divmod(k, size)
        s = x[:, _window(i, Ho, stride), _window(j, Wo, stride), :]
        better = s > out
        xp.copyto(out, s, where=better)
        arg[better] = k
    return out, (x.shape, arg, size, stride)


def max_pool2d_backward(dout, cache):
    """dout (N, Ho, Wo, C) -> (dx (N, H, W, C),); each window's max receives its gradient."""
    x_shape, arg, size, stride = cache
    xp = get_array_module(dout)
    _, Ho, Wo, _ = dout.shape
    dx = xp.zeros(x_shape, dtype=dout.dtype)
    for k in range(size * size):
        i, j = divmod(k, size)
        dx[:, _window(i, Ho, stride), _window(j, Wo, stride), :] += dout * (arg == k)
    return (dx,)

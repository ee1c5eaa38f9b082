"""Max pooling over (H, W) windows of a channels-last tensor.

Notation:
    x    (N, H, W, C)
    out  (N, Ho, Wo, C), Ho = (H - size) // stride + 1 (likewise Wo)
    arg  (N, Ho, Wo, C)  which of the size*size window offsets held the max
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import get_array_module
from . import _checks
from .conv import _window


def max_pool2d_forward(x, *, size: int = 2, stride: int = 2):
    """Returns (out, cache). Loops over the size*size window offsets, not over pixels.

    The forward pass only takes maxima (VGG-16 inference needs nothing more);
    the cache keeps x and out, and the backward finds which offset held each max.
    """
    _checks.floats("max_pool2d", x=x)
    _checks.ndim("max_pool2d", "x", x, 4, "N, H, W, C")
    N, H, W, C = x.shape
    if size < 1 or stride < 1 or H < size or W < size:
        raise ValueError(
            f"max_pool2d: cannot pool x of shape {tuple(x.shape)} with size {size}, stride {stride}")
    xp = get_array_module(x)
    Ho, Wo = (H - size) // stride + 1, (W - size) // stride + 1
    out = xp.empty((N, Ho, Wo, C), dtype=x.dtype)

    def rows(s):  # output rows start..stop of every image
        start, stop, _ = s.indices(Ho)
        o = out[:, start:stop]
        for k in range(size * size):
            i, j = divmod(k, size)
            window = x[:, _window(i + start * stride, stop - start, stride), _window(j, Wo, stride), :]
            if k == 0:
                o[...] = window
            else:
                xp.maximum(o, window, out=o)
    row_blocks.run(rows, Ho, xp, N * Wo * C)
    return out, (x, out, size, stride)


def max_pool2d_backward(dout, cache):
    """dout (N, Ho, Wo, C) -> (dx (N, H, W, C),); each window's max receives its gradient.

    Where a window holds its max twice, the first offset (row-major) takes it, as in PyTorch.
    """
    x, out, size, stride = cache
    xp = get_array_module(dout)
    _, Ho, Wo, _ = dout.shape
    dx = xp.zeros(x.shape, dtype=dout.dtype)
    taken = xp.zeros(out.shape, dtype=bool)
    for k in range(size * size):
        i, j = divmod(k, size)
        window = (slice(None), _window(i, Ho, stride), _window(j, Wo, stride), slice(None))
        here = x[window] == out
        here &= ~taken
        taken |= here
        dx[window] += dout * here
    return (dx,)

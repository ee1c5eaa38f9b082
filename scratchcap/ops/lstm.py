"""LSTM cell and sequence, gates packed in the order i, f, g, o.

Notation:
    N batch, T time, D input, H hidden
    x   (N, D)      input at one step          xs (N, T, D) for the sequence
    h   (N, H)      previous hidden state      hs (N, T, H) every hidden state
    c   (N, H)      previous cell state
    wx  (D, 4H)     input weights     wh (H, 4H) recurrent weights     b (4H,) bias

    a = x @ wx + b + h @ wh                 (N, 4H)
    i, f, o = sigmoid(a_i), sigmoid(a_f), sigmoid(a_o);   g = tanh(a_g)
    c' = f * c + i * g
    h' = o * tanh(c')

The step and the sequence share one cell (``_cell_forward``); the sequence
computes x @ wx for all T steps in one GEMM before the time loop, and the
weight gradients of all T steps in one GEMM each after it. On CuPy the
cell's elementwise work is one fused kernel each way (ops/fused.py); on NumPy
it runs by blocks of rows on the thread pool (scratchcap.row_blocks).
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import get_array_module
from ..threads import matmul
from . import _checks, fused
from .activations import sigmoid
from .linear import linear_weight_grads


def _cell_forward(ax, h, c, wh):
    """ax = x @ wx + b (N, 4H) already computed. Returns h', c', cache."""
    xp = get_array_module(ax)
    H = h.shape[1]
    a = ax + matmul(h, wh)
    cell = fused.kernel(xp, "scratchcap_lstm_cell")
    if cell is not None:
        i, f, g, o, tc, c_next, h_next = cell(a[:, :H], a[:, H:2 * H], a[:, 2 * H:3 * H], a[:, 3 * H:], c)
        return h_next, c_next, (h, c, wh, i, f, g, o, tc)
    ifo, g = xp.empty_like(a), xp.empty_like(h)
    c_next, tc, h_next = xp.empty_like(h), xp.empty_like(h), xp.empty_like(h)

    def rows(s):  # the plain cell on rows s: NumPy gives blocks of rows to the pool's threads
        ifo[s] = sigmoid(a[s])
        g[s] = xp.tanh(a[s, 2 * H:3 * H])
        c_next[s] = ifo[s, H:2 * H] * c[s] + ifo[s, :H] * g[s]
        tc[s] = xp.tanh(c_next[s])
        h_next[s] = ifo[s, 3 * H:] * tc[s]
    row_blocks.run(rows, h.shape[0], xp, 6 * H)
    return h_next, c_next, (h, c, wh, ifo[:, :H], ifo[:, H:2 * H], g, ifo[:, 3 * H:], tc)


def _cell_backward(dh_next, dc_next, cache, da=None):
    """Returns (da, dh, dc) for one cell: the gradient of a = x @ wx + b + h @ wh (N, 4H), written into
    da where that buffer is given, and of h and c."""
    h, c, wh, i, f, g, o, tc = cache
    xp = get_array_module(h)
    H = h.shape[1]
    da = xp.empty((h.shape[0], 4 * H), dtype=h.dtype) if da is None else da
    cell = fused.kernel(xp, "scratchcap_lstm_cell_backward")
    if cell is not None:
        dc = xp.empty_like(c)
        cell(dh_next, xp.zeros((), dtype=c.dtype) if dc_next is None else dc_next, c, i, f, g, o, tc,
             da[:, :H], da[:, H:2 * H], da[:, 2 * H:3 * H], da[:, 3 * H:], dc)
        return da, matmul(da, wh.T), dc
    dc = xp.empty_like(c)

    def rows(s):
        dc_total = dh_next[s] * o[s] * (1 - tc[s] * tc[s])
        if dc_next is not None:
            dc_total += dc_next[s]
        da[s, :H] = dc_total * g[s] * i[s] * (1 - i[s])
        da[s, H:2 * H] = dc_total * c[s] * f[s] * (1 - f[s])
        da[s, 2 * H:3 * H] = dc_total * i[s] * (1 - g[s] * g[s])
        da[s, 3 * H:] = dh_next[s] * tc[s] * o[s] * (1 - o[s])
        dc[s] = dc_total * f[s]
    row_blocks.run(rows, h.shape[0], xp, 9 * H)
    return da, matmul(da, wh.T), dc


def _check(layer, x, h, c, wx, wh, b, seq):
    _checks.floats(layer, x=x, h=h, c=c, wx=wx, wh=wh, b=b)
    _checks.ndim(layer, "x", x, 3 if seq else 2, "N, T, D" if seq else "N, D")
    _checks.ndim(layer, "h", h, 2, "N, H")
    if seq and x.shape[1] < 1:
        raise ValueError(f"{layer}: x has shape {tuple(x.shape)}; a sequence needs T >= 1")
    N, D, H = x.shape[0], x.shape[-1], h.shape[1]
    _checks.shape(layer, "h", h, (N, H), "N, H", "x")
    _checks.shape(layer, "c", c, (N, H), "N, H", "h")
    _checks.shape(layer, "wx", wx, (D, 4 * H), "D, 4H", "x and h")
    _checks.shape(layer, "wh", wh, (H, 4 * H), "H, 4H", "h")
    _checks.shape(layer, "b", b, (4 * H,), "4H", "h")


def lstm_step_forward(x, h, c, wx, wh, b):
    """One step. Returns ((h', c'), cache), both (N, H)."""
    _check("lstm_step", x, h, c, wx, wh, b, seq=False)
    h_next, c_next, core = _cell_forward(matmul(x, wx) + b, h, c, wh)
    return (h_next, c_next), (x, wx, core)


def lstm_step_backward(douts, cache, *, dgates=None):
    """douts = (dh', dc'), either may be None. Returns (dx, dh, dc, dwx, dwh, db).

    ``dgates``, an (N, 4H) buffer, lets a decoder's time loop skip the weight
    gradients: the gradient of a is written into it and dwx, dwh and db come back
    as None. The decoder sums them over all steps with ``linear_weight_grads``
    (x with da gives dwx and db, h with da gives dwh).
    """
    dh_next, dc_next = douts
    x, wx, core = cache
    if dh_next is None:
        dh_next = get_array_module(x).zeros_like(core[0])
    da, dh, dc = _cell_backward(dh_next, dc_next, core, dgates)
    dx = matmul(da, wx.T)
    if dgates is not None:
        return dx, dh, dc, None, None, None
    dwx, db = linear_weight_grads(x, da)
    return dx, dh, dc, dwx, matmul(core[0].T, da), db


def lstm_forward(x, h0, c0, wx, wh, b):
    """Runs over x (N, T, D) from h0, c0 (N, H). Returns (hs (N, T, H), cache)."""
    _check("lstm", x, h0, c0, wx, wh, b, seq=True)
    xp = get_array_module(x)
    N, T, D = x.shape
    H = h0.shape[1]
    ax = (matmul(x.reshape(N * T, D), wx) + b).reshape(N, T, 4 * H)
    hs = xp.empty((N, T, H), dtype=x.dtype)
    h, c, cores = h0, c0, []
    for t in range(T):
        h, c, core = _cell_forward(ax[:, t], h, c, wh)
        hs[:, t] = h
        cores.append(core)
    return hs, (x, wx, cores)


def lstm_backward(dhs, cache):
    """dhs (N, T, H) -> (dx (N, T, D), dh0, dc0, dwx, dwh, db)."""
    x, wx, cores = cache
    xp = get_array_module(dhs)
    N, T, D = x.shape
    H = dhs.shape[2]
    dax = xp.empty((N, T, 4 * H), dtype=dhs.dtype)
    dh = xp.zeros((N, H), dtype=dhs.dtype)
    dc = None
    for t in reversed(range(T)):
        _, dh, dc = _cell_backward(dhs[:, t] + dh, dc, cores[t], dax[:, t])
    dax2 = dax.reshape(N * T, 4 * H)
    dx = matmul(dax2, wx.T).reshape(N, T, D)
    hprev = xp.stack([core[0] for core in cores], axis=1).reshape(N * T, H)  # h_{t-1}
    dwx, db = linear_weight_grads(x, dax2)
    return dx, dh, dc, dwx, matmul(hprev.T, dax2), db

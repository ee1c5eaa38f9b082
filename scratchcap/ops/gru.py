"""GRU cell and sequence, gates packed in the order r, z, n (PyTorch's GRU, Keras's reset_after=True).

Notation:
    N batch, T time, D input, H hidden
    x   (N, D)     input at one step           xs (N, T, D) for the sequence
    h   (N, H)     previous hidden state       hs (N, T, H) every hidden state
    wx  (D, 3H)    input weights      wh (H, 3H) recurrent weights
    bx  (3H,)      input bias         bh (3H,)  recurrent bias

    gx = x @ wx + bx,   gh = h @ wh + bh    (N, 3H)
    r = sigmoid(gx_r + gh_r)
    z = sigmoid(gx_z + gh_z)
    n = tanh(gx_n + r * gh_n)
    h' = (1 - z) * n + z * h

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


def _cell_forward(gx, h, wh, bh):
    """gx = x @ wx + bx (N, 3H) already computed. Returns h', cache."""
    xp = get_array_module(gx)
    H = h.shape[1]
    gh = matmul(h, wh) + bh
    ghn = gh[:, 2 * H:]
    cell = fused.kernel(xp, "scratchcap_gru_cell")
    if cell is not None:
        r, z, n, h_next = cell(gx[:, :H], gx[:, H:2 * H], gx[:, 2 * H:], gh[:, :H], gh[:, H:2 * H], ghn, h)
        return h_next, (h, wh, r, z, n, ghn)
    rz, n, h_next = xp.empty((h.shape[0], 2 * H), dtype=h.dtype), xp.empty_like(h), xp.empty_like(h)

    def rows(s):  # the plain cell on rows s: NumPy gives blocks of rows to the pool's threads
        rz[s] = sigmoid(gx[s, :2 * H] + gh[s, :2 * H])
        n[s] = xp.tanh(gx[s, 2 * H:] + rz[s, :H] * ghn[s])
        h_next[s] = n[s] + rz[s, H:] * (h[s] - n[s])
    row_blocks.run(rows, h.shape[0], xp, 3 * H)
    return h_next, (h, wh, rz[:, :H], rz[:, H:], n, ghn)


def _cell_backward(dh_next, cache, dgx=None, dgh=None):
    """Returns (dgx, dgh, dh) for one cell: the gradients of gx = x @ wx + bx and gh = h @ wh + bh,
    both (N, 3H), written into dgx and dgh where those buffers are given, and of h."""
    h, wh, r, z, n, ghn = cache
    xp = get_array_module(h)
    H = h.shape[1]
    dgx = xp.empty((h.shape[0], 3 * H), dtype=h.dtype) if dgx is None else dgx
    dgh = xp.empty_like(dgx) if dgh is None else dgh
    cell = fused.kernel(xp, "scratchcap_gru_cell_backward")
    if cell is not None:
        cell(dh_next, h, r, z, n, ghn, dgx[:, :H], dgx[:, H:2 * H], dgx[:, 2 * H:], dgh[:, 2 * H:])
        dgh[:, :2 * H] = dgx[:, :2 * H]
    else:
        def rows(s):
            dan = dh_next[s] * (1 - z[s]) * (1 - n[s] * n[s])
            dgx[s, :H] = dan * ghn[s] * r[s] * (1 - r[s])
            dgx[s, H:2 * H] = dh_next[s] * (h[s] - n[s]) * z[s] * (1 - z[s])
            dgx[s, 2 * H:] = dan
            dgh[s] = dgx[s]
            dgh[s, 2 * H:] *= r[s]
        row_blocks.run(rows, h.shape[0], xp, 6 * H)
    return dgx, dgh, dh_next * z + matmul(dgh, wh.T)


def _check(layer, x, h, wx, wh, bx, bh, seq):
    _checks.floats(layer, x=x, h=h, wx=wx, wh=wh, bx=bx, bh=bh)
    _checks.ndim(layer, "x", x, 3 if seq else 2, "N, T, D" if seq else "N, D")
    _checks.ndim(layer, "h", h, 2, "N, H")
    if seq and x.shape[1] < 1:
        raise ValueError(f"{layer}: x has shape {tuple(x.shape)}; a sequence needs T >= 1")
    N, D, H = x.shape[0], x.shape[-1], h.shape[1]
    _checks.shape(layer, "h", h, (N, H), "N, H", "x")
    _checks.shape(layer, "wx", wx, (D, 3 * H), "D, 3H", "x and h")
    _checks.shape(layer, "wh", wh, (H, 3 * H), "H, 3H", "h")
    _checks.shape(layer, "bx", bx, (3 * H,), "3H", "h")
    _checks.shape(layer, "bh", bh, (3 * H,), "3H", "h")


def gru_step_forward(x, h, wx, wh, bx, bh):
    """One step. Returns (h' (N, H), cache)."""
    _check("gru_step", x, h, wx, wh, bx, bh, seq=False)
    h_next, core = _cell_forward(matmul(x, wx) + bx, h, wh, bh)
    return h_next, (x, wx, core)


def gru_step_backward(dh_next, cache, *, dgates=None):
    """dh' (N, H) -> (dx, dh, dwx, dwh, dbx, dbh).

    ``dgates``, a pair of (N, 3H) buffers, lets a decoder's time loop skip the
    weight gradients: the gradients of gx and gh are written into them and dwx,
    dwh, dbx and dbh come back as None. The decoder sums them over all steps
    with ``linear_weight_grads`` (x with dgx gives dwx and dbx, h with dgh dwh and dbh).
    """
    x, wx, core = cache
    dgx, dgh, dh = _cell_backward(dh_next, core, *(dgates or (None, None)))
    dx = matmul(dgx, wx.T)
    if dgates is not None:
        return dx, dh, None, None, None, None
    dwx, dbx = linear_weight_grads(x, dgx)
    dwh, dbh = linear_weight_grads(core[0], dgh)
    return dx, dh, dwx, dwh, dbx, dbh


def gru_forward(x, h0, wx, wh, bx, bh):
    """Runs over x (N, T, D) from h0 (N, H). Returns (hs (N, T, H), cache)."""
    _check("gru", x, h0, wx, wh, bx, bh, seq=True)
    xp = get_array_module(x)
    N, T, D = x.shape
    H = h0.shape[1]
    gx = (matmul(x.reshape(N * T, D), wx) + bx).reshape(N, T, 3 * H)
    hs = xp.empty((N, T, H), dtype=x.dtype)
    h, cores = h0, []
    for t in range(T):
        h, core = _cell_forward(gx[:, t], h, wh, bh)
        hs[:, t] = h
        cores.append(core)
    return hs, (x, wx, cores)


def gru_backward(dhs, cache):
    """dhs (N, T, H) -> (dx (N, T, D), dh0, dwx, dwh, dbx, dbh)."""
    x, wx, cores = cache
    xp = get_array_module(dhs)
    N, T, D = x.shape
    H = dhs.shape[2]
    dgx = xp.empty((N, T, 3 * H), dtype=dhs.dtype)
    dgh = xp.empty_like(dgx)
    dh = xp.zeros((N, H), dtype=dhs.dtype)
    for t in reversed(range(T)):
        _, _, dh = _cell_backward(dhs[:, t] + dh, cores[t], dgx[:, t], dgh[:, t])
    dx = matmul(dgx.reshape(N * T, 3 * H), wx.T).reshape(N, T, D)
    dwx, dbx = linear_weight_grads(x, dgx)
    dwh, dbh = linear_weight_grads(xp.stack([core[0] for core in cores], axis=1), dgh)  # h_{t-1}, (N, T, H)
    return dx, dh, dwx, dwh, dbx, dbh

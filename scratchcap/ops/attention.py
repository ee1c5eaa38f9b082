"""Additive (Bahdanau) attention over image regions.

Notation:
    N batch, L regions (196 for a 14x14 grid), D feature, H query (decoder hidden), A attention
    features  (N, L, D)   annotation vectors
    query     (N, H)      decoder state that asks where to look; (N·k, H) asks k times per image
                          (beam search's k beams: rows n·k .. n·k + k - 1 ask of image n)
    w1 (D, A), b1 (A,)    project the features
    w2 (H, A), b2 (A,)    project the query
    v  (A,)               scores the joint projection
    mask      (N, L)      optional, True where a region may be attended

    projected = features @ w1 + b1                               (N, L, A)
    e     = tanh(projected + (query @ w2 + b2)[:, None, :]) @ v  (N, L)
    alpha = softmax over L of e (masked regions get 0)           (N, L)
    context = sum over L of alpha * features                     (N, D)

The features do not change while a caption is decoded, so ``projected`` can be
computed once per sequence. ``additive_attention_forward`` is the whole layer;
it is ``linear_forward`` (the projection) followed by ``attend_forward`` (the
per-step part). A decoder calls the two halves itself to hoist the projection
out of its time loop, summing ``dprojected`` over steps before one
``linear_backward``. Either way the maths lives in one place.
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import get_array_module
from ..threads import matmul
from . import _checks, fused
from .linear import linear_backward, linear_forward, linear_weight_grads


def attend_forward(features, projected, query, w2, b2, v, *, mask=None, keep=True):
    """The per-step half. Returns ((context (N·k, D), alpha (N·k, L)), cache).

    projected (N, L, A) must be ``features @ w1 + b1``. query (N·k, H): k >= 1 queries of each image,
    consecutive (rows n·k .. n·k + k - 1 ask of image n). Training asks one (k = 1); beam search asks
    one per beam, so an image's features and projection are read once for all its beams instead of
    being copied k times.

    ``keep=False`` (decoding: no backward follows) keeps no (N, k, L, A) activations for attend_backward:
    on NumPy each block's live in scratch that stays in cache, and the cache returned is None.
    """
    layer = "attend"
    _checks.floats(layer, features=features, projected=projected, query=query, w2=w2, b2=b2, v=v)
    _checks.ndim(layer, "features", features, 3, "N, L, D")
    _checks.ndim(layer, "projected", projected, 3, "N, L, A")
    _checks.ndim(layer, "query", query, 2, "N·k, H")
    N, L, D = features.shape
    A = projected.shape[2]
    M, H = query.shape
    _checks.shape(layer, "projected", projected, (N, L, A), "N, L, A", "features")
    if M == 0 or M % N:
        raise ValueError(f"{layer}: query has {M} rows for {N} images; it needs k >= 1 rows per image (N·k, H)")
    k = M // N
    _checks.shape(layer, "w2", w2, (H, A), "H, A", "query and projected")
    _checks.shape(layer, "b2", b2, (A,), "A", "projected")
    _checks.shape(layer, "v", v, (A,), "A", "projected")
    xp = get_array_module(features)
    if mask is not None:
        _checks.booleans(layer, "mask", mask)
        _checks.shape(layer, "mask", mask, (N, L), "N, L", "features")
        if not bool(mask.any(axis=1).all()):
            raise ValueError(f"{layer}: mask hides every region of some image; each row needs a True")

    pq = (matmul(query, w2) + b2).reshape(N, k, 1, A)
    add_tanh = fused.kernel(xp, "scratchcap_add_tanh")
    if add_tanh is not None:
        t = add_tanh(projected[:, None], pq)
    else:
        t = xp.empty((N, k, L, A), dtype=projected.dtype) if keep else None
    alpha = xp.empty((N, k, L), dtype=projected.dtype)
    context = xp.empty((N, k, D), dtype=projected.dtype)

    def attend_rows(s):  # scores, softmax and context of a block of images in one pass, while it is in cache
        if t is None:
            ts = xp.add(projected[s, None], pq[s])
            xp.tanh(ts, out=ts)
        else:
            ts = t[s]
            if add_tanh is None:
                xp.add(projected[s, None], pq[s], out=ts)
                xp.tanh(ts, out=ts)
        e = alpha[s]
        xp.matmul(ts.reshape(-1, A), v, out=e.reshape(-1))
        if mask is not None:
            e[xp.broadcast_to(~mask[s, None], e.shape)] = -xp.inf
        e -= e.max(axis=2, keepdims=True)
        xp.exp(e, out=e)
        e /= e.sum(axis=2, keepdims=True)
        xp.matmul(e, features[s], out=context[s])  # (k, L) @ (L, D) per image: its beams share one read
    row_blocks.run(attend_rows, N, xp, k * L * A)
    cache = (features, query, w2, v, t, alpha) if keep else None
    return (context.reshape(M, D), alpha.reshape(M, L)), cache


def attend_backward(douts, cache, *, features_grad=True, dprojected=None, dprojected_query=None):
    """douts = (dcontext (N·k, D), dalpha (N·k, L)), either may be None.

    Returns (dfeatures (N, L, D), dprojected (N, L, A), dquery (N·k, H), dw2, db2, dv); an image's
    k queries add up in its dfeatures and dprojected.

    Three keywords let a decoder's time loop skip work it can do once for all steps:
    - ``features_grad=False`` returns None for dfeatures; the decoder sums it
      over all steps at once with ``attend_features_grad``.
    - ``dprojected``, an (N, L, A) buffer: this step's gradient is added into
      it and the buffer is returned, so the loop allocates no sum of its own.
    - ``dprojected_query``, an (N·k, A) buffer: the gradient of the projected query
      (query @ w2 + b2) is written into it and dw2 and db2 come back as None; the
      decoder sums them over all steps with ``linear_weight_grads``.
    """
    dcontext, dalpha = douts
    features, query, w2, v, t, alpha = cache
    xp = get_array_module(features)
    N, L, D = features.shape
    k, A = t.shape[1], t.shape[3]
    dcontext = xp.zeros((N, k, D), dtype=features.dtype) if dcontext is None else dcontext.reshape(N, k, D)
    if dalpha is not None:
        dalpha = dalpha.reshape(N, k, L)
    dq = xp.empty((N * k, A), dtype=t.dtype) if dprojected_query is None else dprojected_query
    dq3 = dq.reshape(N, k, A)
    tanh_grad = fused.kernel(xp, "scratchcap_tanh_grad_scaled")
    accumulate = dprojected is not None
    in_place = tanh_grad is None and not accumulate and k == 1  # dpre is written where dprojected goes
    if tanh_grad is None and not accumulate:
        dprojected = xp.empty((N, L, A), dtype=t.dtype)
    de = xp.empty((N, k, L), dtype=t.dtype)
    dv_parts = {}

    def backward_rows(s):  # one pass over a block of images: t is read once, for dv and for the tanh
        da = matmul(features[s], dcontext[s].transpose(0, 2, 1)).transpose(0, 2, 1)  # (n, k, L)
        if dalpha is not None:
            da += dalpha[s]
        xp.multiply(alpha[s], da - (alpha[s] * da).sum(axis=2, keepdims=True), out=de[s])
        ts = t[s]
        dv_parts[s.start or 0] = (de[s].reshape(1, -1) @ ts.reshape(-1, A))[0]  # row-vector GEMMs; t.T @ de is slower
        if tanh_grad is not None:
            return
        dpre = xp.multiply(ts, ts, out=dprojected[s, None]) if in_place else ts * ts  # de * v * (1 - t^2)
        xp.subtract(1, dpre, out=dpre)
        dpre *= de[s, :, :, None]
        xp.sum(dpre, axis=2, out=dq3[s])
        dq3[s] *= v
        dpre *= v
        if in_place:
            return
        summed = _sum_queries(dpre)
        if accumulate:
            dprojected[s] += summed
        else:
            dprojected[s] = summed
    row_blocks.run(backward_rows, N, xp, k * L * A)
    dv = dv_parts.pop(0)
    for start in sorted(dv_parts):  # a fixed order: the blocks' partial sums, first to last
        dv += dv_parts[start]
    if tanh_grad is not None:
        dpre = tanh_grad(t, de[:, :, :, None], v)
        xp.sum(dpre, axis=2, out=dq3)
        summed = _sum_queries(dpre)
        if accumulate:
            dprojected += summed
        else:
            dprojected = summed
    dfeatures = attend_features_grad(alpha, dcontext) if features_grad else None
    dw2, db2 = (None, None) if dprojected_query is not None else linear_weight_grads(query, dq)
    return dfeatures, dprojected, matmul(dq, w2.T), dw2, db2, dv


def _sum_queries(d):
    """(n, k, L, A) -> (n, L, A): an image's k queries add up (k = 1 is a view, no copy)."""
    return d[:, 0] if d.shape[1] == 1 else d.sum(axis=1)


def attend_features_grad(alphas, dcontexts):
    """The gradient of features through the contexts of T steps in one batched GEMM.

    alphas (N, T, L), dcontexts (N, T, D) -> (N, L, D), the sum over t of
    alpha_t[:, :, None] * dcontext_t[:, None, :].
    """
    return matmul(alphas.transpose(0, 2, 1), dcontexts)


def additive_attention_forward(features, query, w1, b1, w2, b2, v, *, mask=None):
    """The whole layer. Returns ((context (N, D), alpha (N, L)), cache)."""
    _checks.floats("additive_attention", features=features, w1=w1, b1=b1)
    _checks.ndim("additive_attention", "features", features, 3, "N, L, D")
    projected, lin_cache = linear_forward(features, w1, b1)
    outs, att_cache = attend_forward(features, projected, query, w2, b2, v, mask=mask)
    return outs, (lin_cache, att_cache)


def additive_attention_backward(douts, cache):
    """douts = (dcontext, dalpha). Returns (dfeatures, dquery, dw1, db1, dw2, db2, dv)."""
    lin_cache, att_cache = cache
    dfeatures, dprojected, dquery, dw2, db2, dv = attend_backward(douts, att_cache)
    dfeat_proj, dw1, db1 = linear_backward(dprojected, lin_cache)
    return dfeatures + dfeat_proj, dquery, dw1, db1, dw2, db2, dv

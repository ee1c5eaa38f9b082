"""Additive (Bahdanau) attention over image regions.

Notation:
    N batch, L regions (196 for a 14x14 grid), D feature, H query (decoder hidden), A attention
    features  (N, L, D)   annotation vectors
    query     (N, H)      decoder state that asks where to look
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


def attend_forward(features, projected, query, w2, b2, v, *, mask=None):
    """The per-step half. Returns ((context (N, D), alpha (N, L)), cache).

    projected (N, L, A) must be ``features @ w1 + b1``.
    """
    layer = "attend"
    _checks.floats(layer, features=features, projected=projected, query=query, w2=w2, b2=b2, v=v)
    _checks.ndim(layer, "features", features, 3, "N, L, D")
    _checks.ndim(layer, "projected", projected, 3, "N, L, A")
    _checks.ndim(layer, "query", query, 2, "N, H")
    N, L, D = features.shape
    A = projected.shape[2]
    H = query.shape[1]
    _checks.shape(layer, "projected", projected, (N, L, A), "N, L, A", "features")
    _checks.shape(layer, "query", query, (N, H), "N, H", "features")
    _checks.shape(layer, "w2", w2, (H, A), "H, A", "query and projected")
    _checks.shape(layer, "b2", b2, (A,), "A", "projected")
    _checks.shape(layer, "v", v, (A,), "A", "projected")
    xp = get_array_module(features)
    if mask is not None:
        _checks.booleans(layer, "mask", mask)
        _checks.shape(layer, "mask", mask, (N, L), "N, L", "features")
        if not bool(mask.any(axis=1).all()):
            raise ValueError(f"{layer}: mask hides every region of some image; each row needs a True")

    pq = matmul(query, w2) + b2
    add_tanh = fused.kernel(xp, "scratchcap_add_tanh")
    t = add_tanh(projected, pq[:, None, :]) if add_tanh is not None else xp.empty_like(projected)
    alpha = xp.empty((N, L), dtype=t.dtype)
    context = xp.empty((N, D), dtype=t.dtype)

    def attend_rows(s):  # scores, softmax and context of a block of images in one pass, while it is in cache
        if add_tanh is None:
            xp.add(projected[s], pq[s, None, :], out=t[s])
            xp.tanh(t[s], out=t[s])
        e = alpha[s]
        xp.matmul(t[s].reshape(-1, A), v, out=e.reshape(-1))
        if mask is not None:
            e[~mask[s]] = -xp.inf
        e -= e.max(axis=1, keepdims=True)
        xp.exp(e, out=e)
        e /= e.sum(axis=1, keepdims=True)
        xp.matmul(e[:, None, :], features[s], out=context[s][:, None, :])
    row_blocks.run(attend_rows, N, xp, L * A)
    return (context, alpha), (features, query, w2, v, t, alpha)


def attend_backward(douts, cache, *, features_grad=True, dprojected=None, dprojected_query=None):
    """douts = (dcontext (N, D), dalpha (N, L)), either may be None.

    Returns (dfeatures, dprojected, dquery, dw2, db2, dv).

    Three keywords let a decoder's time loop skip work it can do once for all steps:
    - ``features_grad=False`` returns None for dfeatures; the decoder sums it
      over all steps at once with ``attend_features_grad``.
    - ``dprojected``, an (N, L, A) buffer: this step's gradient is added into
      it and the buffer is returned, so the loop allocates no sum of its own.
    - ``dprojected_query``, an (N, A) buffer: the gradient of the projected query
      (query @ w2 + b2) is written into it and dw2 and db2 come back as None; the
      decoder sums them over all steps with ``linear_weight_grads``.
    """
    dcontext, dalpha = douts
    features, query, w2, v, t, alpha = cache
    xp = get_array_module(features)
    N, L, D = features.shape
    A = t.shape[2]
    if dcontext is None:
        dcontext = xp.zeros((N, D), dtype=features.dtype)
    dq = xp.empty((N, A), dtype=t.dtype) if dprojected_query is None else dprojected_query
    tanh_grad = fused.kernel(xp, "scratchcap_tanh_grad_scaled")
    accumulate = dprojected is not None
    if tanh_grad is None and not accumulate:
        dprojected = xp.empty_like(t)
    de = xp.empty((N, L), dtype=t.dtype)
    dv_parts = {}

    def backward_rows(s):  # one pass over a block of images: t is read once, for dv and for the tanh
        da = matmul(features[s], dcontext[s][:, :, None])[:, :, 0]
        if dalpha is not None:
            da += dalpha[s]
        xp.multiply(alpha[s], da - (alpha[s] * da).sum(axis=1, keepdims=True), out=de[s])
        ts = t[s]
        dv_parts[s.start or 0] = (de[s].reshape(1, -1) @ ts.reshape(-1, A))[0]  # row-vector GEMMs; t.T @ de is slower
        if tanh_grad is not None:
            return
        dpre = ts * ts if accumulate else xp.multiply(ts, ts, out=dprojected[s])  # de * v * (1 - t^2), in place
        xp.subtract(1, dpre, out=dpre)
        dpre *= de[s, :, None]
        xp.sum(dpre, axis=1, out=dq[s])
        dq[s] *= v
        dpre *= v
        if accumulate:
            dprojected[s] += dpre
    row_blocks.run(backward_rows, N, xp, L * A)
    dv = dv_parts.pop(0)
    for start in sorted(dv_parts):  # a fixed order: the blocks' partial sums, first to last
        dv += dv_parts[start]
    if tanh_grad is not None:
        dpre = tanh_grad(t, de[:, :, None], v)
        xp.sum(dpre, axis=1, out=dq)
        if accumulate:
            dprojected += dpre
        else:
            dprojected = dpre
    dfeatures = alpha[:, :, None] * dcontext[:, None, :] if features_grad else None
    dw2, db2 = (None, None) if dprojected_query is not None else linear_weight_grads(query, dq)
    return dfeatures, dprojected, matmul(dq, w2.T), dw2, db2, dv


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

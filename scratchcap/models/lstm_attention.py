"""lstm-attention: Show, Attend and Tell (Xu et al. 2015), soft attention.

Notation: N batch, T steps, L regions, D feature, E embedding, H hidden, A attention, V vocabulary.

    h_0, c_0  = tanh(mean_L(a) @ Wh0 + bh0), tanh(mean_L(a) @ Wc0 + bc0)      from the mean annotation
    projected = a @ W1 + b1                                   (N, L, A)   once per batch
    at step t, with previous word w_t:
        context_t, alpha_t = attend(a, projected, h_{t-1})
        beta_t = sigmoid(h_{t-1} @ Wb + bb)                   (N, 1)      gating scalar
        z_t    = beta_t * context_t                           (N, D)
        h_t, c_t = LSTM([embed(w_t); z_t], h_{t-1}, c_{t-1})
    logits = dropout(tanh(embed(w) + hs @ Lh + bh + zs @ Lz)) @ Lo + bo     deep output, all steps at once
    loss   = masked mean cross-entropy + lam * sum_l (1 - sum_t alpha_tl)^2 (doubly stochastic, per caption)
"""
from __future__ import annotations

from .. import ops
from ..backend import get_array_module
from ..ops.softmax import log_softmax
from .common import (attention_penalty_forward, gate_orthogonal, glorot, initial_state_backward,
                     initial_state_forward, mean_grad, scale_features, shared_encoding, uniform, unscaled_grad,
                     zeros)

NAME = "lstm-attention"


def init_params(cfg, rng, dtype="float32"):
    D, E, H, A, V = (cfg[k] for k in "DEHAV")
    b = zeros(4 * H, dtype)
    b[H:2 * H] = 1.0  # forget gate starts open
    return {
        "attention/b1": zeros(A, dtype), "attention/b2": zeros(A, dtype),
        "attention/v": uniform(rng, (A,), dtype), "attention/w1": glorot(rng, (D, A), dtype),
        "attention/w2": glorot(rng, (H, A), dtype),
        "embedding/w": uniform(rng, (V, E), dtype),
        "gate/b": zeros(1, dtype), "gate/w": glorot(rng, (H, 1), dtype),
        "init/bc": zeros(H, dtype), "init/bh": zeros(H, dtype),
        "init/wc": glorot(rng, (D, H), dtype), "init/wh": glorot(rng, (D, H), dtype),
        "lstm/b": b, "lstm/wh": gate_orthogonal(rng, H, 4, dtype), "lstm/wx": glorot(rng, (E + D, 4 * H), dtype),
        "output/bh": zeros(E, dtype), "output/bo": zeros(V, dtype),
        "output/wh": glorot(rng, (H, E), dtype), "output/wo": glorot(rng, (E, V), dtype),
        "output/wz": glorot(rng, (D, E), dtype),
    }


def encode(p, features):
    """(features, projected, (h0, c0)), cache."""
    state, init_cache = initial_state_forward(p, features)
    projected, proj_cache = ops.linear_forward(features, p["attention/w1"], p["attention/b1"])
    return (features, projected), state, (init_cache, proj_cache)


def step(p, enc, state, emb_t, keep=True):
    """((h_t, c_t), alpha_t, z_t), cache; ``keep=False`` (decoding) keeps nothing for a backward."""
    features, projected = enc
    h, c = state
    (context, alpha), ca = ops.attend_forward(features, projected, h, p["attention/w2"], p["attention/b2"],
                                              p["attention/v"], keep=keep)
    gpre, cl = ops.linear_forward(h, p["gate/w"], p["gate/b"])
    beta, cs = ops.sigmoid_forward(gpre)
    z = beta * context
    xp = get_array_module(h)
    x = xp.concatenate([emb_t, z], axis=1)
    (h2, c2), cx = ops.lstm_step_forward(x, h, c, p["lstm/wx"], p["lstm/wh"], p["lstm/b"])
    return ((h2, c2), alpha, z), (ca, cl, cs, cx, beta, context, x, h)


def output(p, emb, hs, zs, rng, dropout, train):
    a, c1 = ops.linear_forward(hs, p["output/wh"], p["output/bh"])
    zz, c2 = ops.linear_forward(zs, p["output/wz"], get_array_module(zs).zeros_like(p["output/bh"]))
    t, c3 = ops.tanh_forward(emb + a + zz)
    d, c4 = ops.dropout_forward(t, dropout, rng, train=train)
    logits, c5 = ops.linear_forward(d, p["output/wo"], p["output/bo"])
    return logits, (c1, c2, c3, c4, c5)


def decode_start(p, features, cfg):
    features = scale_features(features, cfg)
    enc, state, _ = encode(p, features)
    return enc, state


expand_encoding = shared_encoding


def decode_step(p, enc, state, words):
    emb, _ = ops.embedding_forward(words[:, None], p["embedding/w"])
    (state2, alpha, z), _ = step(p, enc, state, emb[:, 0], keep=False)
    logits, _ = output(p, emb[:, 0], state2[0], z, None, 0.0, False)
    return log_softmax(logits), state2, alpha


def loss_and_grads(p, batch, cfg, rng=None, train=True, features_grad=False):
    """Teacher-forced loss and gradients keyed like p; info holds the parts of the loss and the alphas, and
    with ``features_grad`` the gradient of batch["features"] as "dfeatures" (for fine-tuning VGG-16)."""
    features, captions, mask = scale_features(batch["features"], cfg), batch["captions"], batch["mask"]
    xp = get_array_module(features)
    words, targets = captions[:, :-1], captions[:, 1:]
    N, T = words.shape
    L, D = features.shape[1:]
    enc, state, enc_cache = encode(p, features)
    emb, emb_cache = ops.embedding_forward(words, p["embedding/w"])
    H = state[0].shape[1]
    hs = xp.empty((N, T, H), dtype=features.dtype)
    zs = xp.empty((N, T, D), dtype=features.dtype)
    alphas = xp.empty((N, T, L), dtype=features.dtype)
    caches = []
    for t in range(T):
        (state, alpha, z), c = step(p, enc, state, emb[:, t])
        hs[:, t], zs[:, t], alphas[:, t] = state[0], z, alpha
        caches.append(c)
    logits, oc = output(p, emb, hs, zs, rng, cfg["dropout"], train)
    ce, ce_cache = ops.temporal_cross_entropy_forward(logits, targets, mask, normalizer=batch.get("tokens_total"),
                                                      weights=batch.get("caption_weights"),
                                                      smoothing=cfg.get("label_smoothing", 0.0) if train else 0.0)
    lam = cfg.get("lambda", 0.0)
    penalty, dalphas = attention_penalty_forward(alphas, mask, lam, batch.get("captions_total")) if lam \
        else (0.0, None)

    g = {}
    (dlogits,) = ops.temporal_cross_entropy_backward(1.0, ce_cache)
    dd, g["output/wo"], g["output/bo"] = ops.linear_backward(dlogits, oc[4])
    (dt,) = ops.dropout_backward(dd, oc[3])
    (dsum,) = ops.tanh_backward(dt, oc[2])
    dzs, g["output/wz"], _ = ops.linear_backward(dsum, oc[1])
    dhs, g["output/wh"], g["output/bh"] = ops.linear_backward(dsum, oc[0])
    demb = dsum.copy()
    dprojected = None  # the last step writes it, the others add to it: no 25 MB of zeros to fill and add to
    for k in ("attention/v", "gate/w", "gate/b"):
        g[k] = xp.zeros_like(p[k])
    # The LSTM's and the attention query's weight gradients of all steps come after the loop, one GEMM
    # each, from these time-major buffers.
    da = xp.empty((T, N, p["lstm/wx"].shape[1]), dtype=features.dtype)
    dqp = xp.empty((T, N, p["attention/w2"].shape[1]), dtype=features.dtype)
    dh = xp.zeros((N, H), dtype=features.dtype)
    dc = None
    E = emb.shape[2]
    dcontexts = xp.empty((N, T, D), dtype=features.dtype) if features_grad else None
    for t in reversed(range(T)):
        ca, cl, cs, cx, beta, context, _, _ = caches[t]
        dx, dh, dc, *_ = ops.lstm_step_backward((dhs[:, t] + dh, dc), cx, dgates=da[t])
        demb[:, t] += dx[:, :E]
        dz = dx[:, E:] + dzs[:, t]
        (dgpre,) = ops.sigmoid_backward((dz * context).sum(axis=1, keepdims=True), cs)
        dhg, dgw, dgb = ops.linear_backward(dgpre, cl)
        g["gate/w"] += dgw
        g["gate/b"] += dgb
        dalpha = None if dalphas is None else dalphas[:, t]
        dcontext = dz * beta
        if dcontexts is not None:
            dcontexts[:, t] = dcontext
        _, dprojected, dq, _, _, dv = ops.attend_backward((dcontext, dalpha), ca, features_grad=False,
                                                 dprojected=dprojected, dprojected_query=dqp[t])
        dh = dh + dq + dhg
        g["attention/v"] += dv
    xs = xp.stack([c[6] for c in caches])  # (T, N, E + D): each step's LSTM input
    queries = xp.stack([c[7] for c in caches])  # (T, N, H): h_{t-1}, the LSTM's state and the attention's query
    g["lstm/wx"], g["lstm/b"] = ops.linear_weight_grads(xs, da)
    g["lstm/wh"], _ = ops.linear_weight_grads(queries, da)  # a = x @ wx + b + h @ wh: b counted once
    g["attention/w2"], g["attention/b2"] = ops.linear_weight_grads(queries, dqp)
    (g["embedding/w"],) = ops.embedding_backward(demb, emb_cache)
    init_cache, proj_cache = enc_cache
    dfeatures, g["attention/w1"], g["attention/b1"] = ops.linear_backward(dprojected, proj_cache,
                                                                          input_grad=features_grad)
    dmean = initial_state_backward(dh, dc, init_cache, g, input_grad=features_grad)
    ce = float(ce)  # one copy to the host: on a GPU, a sync
    info = {"cross_entropy": ce, "penalty": penalty, "alphas": alphas}
    if features_grad:
        dfeatures += ops.attend_features_grad(alphas, dcontexts)
        info["dfeatures"] = unscaled_grad(dfeatures + mean_grad(dmean, L), cfg)
    return ce + penalty, g, info

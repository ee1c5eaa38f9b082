"""lstm-adaptive: adaptive attention with a visual sentinel (Lu, Xiong, Parikh and Socher, CVPR 2017).

Notation: N batch, T steps, L regions, D feature, E embedding, H hidden, A attention, V vocabulary.

    feats     = dropout(relu(features @ We + be))            (N, L, H)   FC encoder, the spatial features v_i
    glob      = relu(mean_L(features) @ Wg + bg)             (N, E)      the global feature v_g
    projected = feats @ W1 + b1                              (N, L, A)   once per batch
    h_0 = c_0 = 0; at step t, with previous word w_t:
        x_t      = [embed(w_t); glob]                        (N, 2E)
        h_t, c_t = LSTM(x_t, h_{t-1}, c_{t-1})
        g_t      = sigmoid([x_t; h_{t-1}] @ Ws + bs)         (N, H)      the sentinel gate
        s_t      = g_t * tanh(c_t)                           (N, H)      the visual sentinel
        c^_t, a^_t = attend([feats; s_t], [projected; s_t @ W3 + b3], h_t)    over L + 1 candidates
        beta_t   = a^_t[:, L]                                (N,)        how much the word comes from the sentinel
    logits = dropout(tanh((c^ + hs) @ Wh + bh)) @ Wo + bo    (N, T, V)   all steps at once
    loss   = masked mean cross-entropy + lam * doubly stochastic penalty over the L regions

Attention over the regions and the sentinel is the plain additive attention of
ops.attend with the sentinel appended as one more candidate: its softmax over
L + 1 scores gives beta_t = a^_t[L] and the regions a^_t[:L] = (1 - beta_t) alpha_t,
so that c^_t = beta_t s_t + (1 - beta_t) c_t is the paper's eq. 7 without new maths.
The query is h_t, the state after the step, as in the paper (the other decoders
ask with h_{t-1}). decode_step reports the L + 1 weights; SENTINEL tells decode.py
that the last one is beta.
"""
from __future__ import annotations

from .. import ops
from ..backend import get_array_module
from ..ops.softmax import log_softmax
from ..threads import matmul
from .common import (attention_penalty_forward, encoded_start, gate_orthogonal, glorot, mean_grad, scale_features,
                     uniform, unscaled_grad, zeros)

NAME = "lstm-adaptive"
SENTINEL = True  # decode_step's attention has L + 1 columns, the last the sentinel's beta


def init_params(cfg, rng, dtype="float32"):
    D, E, H, A, V = (cfg[k] for k in "DEHAV")
    b = zeros(4 * H, dtype)
    b[H:2 * H] = 1.0  # forget gate starts open
    return {
        "attention/b1": zeros(A, dtype), "attention/b2": zeros(A, dtype), "attention/b3": zeros(A, dtype),
        "attention/v": uniform(rng, (A,), dtype), "attention/w1": glorot(rng, (H, A), dtype),
        "attention/w2": glorot(rng, (H, A), dtype), "attention/w3": glorot(rng, (H, A), dtype),
        "embedding/w": uniform(rng, (V, E), dtype),
        "encoder/b": zeros(H, dtype), "encoder/w": glorot(rng, (D, H), dtype),
        "global/b": zeros(E, dtype), "global/w": glorot(rng, (D, E), dtype),
        "lstm/b": b, "lstm/wh": gate_orthogonal(rng, H, 4, dtype), "lstm/wx": glorot(rng, (2 * E, 4 * H), dtype),
        "output/bh": zeros(E, dtype), "output/bo": zeros(V, dtype),
        "output/wh": glorot(rng, (H, E), dtype), "output/wo": glorot(rng, (E, V), dtype),
        "sentinel/b": zeros(H, dtype), "sentinel/w": glorot(rng, (2 * E + H, H), dtype),
    }


def encode(p, features, cfg, rng, train):
    """features (N, L, D) -> (feats (N, L, H), projected (N, L, A), glob (N, E)), cache."""
    pre, c1 = ops.linear_forward(features, p["encoder/w"], p["encoder/b"])
    act, c2 = ops.relu_forward(pre)
    feats, c3 = ops.dropout_forward(act, cfg["dropout"], rng, train=train)
    projected, c4 = ops.linear_forward(feats, p["attention/w1"], p["attention/b1"])
    gpre, c5 = ops.linear_forward(features.mean(axis=1), p["global/w"], p["global/b"])
    glob, c6 = ops.relu_forward(gpre)
    return (feats, projected, glob), (c1, c2, c3, c4, c5, c6)


def init_state(p, enc):
    feats = enc[0]
    xp = get_array_module(feats)
    H = p["lstm/wh"].shape[0]
    return xp.zeros((feats.shape[0], H), dtype=feats.dtype), xp.zeros((feats.shape[0], H), dtype=feats.dtype)


def step(p, enc, state, emb_t, keep=True):
    """One decoder step: ((h_t, c_t), c^_t, a^_t (N, L + 1)), cache; ``keep=False`` (decoding) keeps nothing
    of the attention for a backward."""
    feats, projected, glob = enc
    h, c = state
    xp = get_array_module(h)
    x = xp.concatenate([emb_t, glob], axis=1)
    (h2, c2), cx = ops.lstm_step_forward(x, h, c, p["lstm/wx"], p["lstm/wh"], p["lstm/b"])
    xh = xp.concatenate([x, h], axis=1)
    gpre, cg = ops.linear_forward(xh, p["sentinel/w"], p["sentinel/b"])
    gate, cs = ops.sigmoid_forward(gpre)
    tc, ct = ops.tanh_forward(c2)
    s = gate * tc
    ps, _ = ops.linear_forward(s, p["attention/w3"], p["attention/b3"])
    candidates = xp.concatenate([feats, s[:, None, :]], axis=1)
    scored = xp.concatenate([projected, ps[:, None, :]], axis=1)
    (context, alpha), ca = ops.attend_forward(candidates, scored, h2, p["attention/w2"], p["attention/b2"],
                                              p["attention/v"], keep=keep)
    return ((h2, c2), context, alpha), (ca, cx, cg, cs, ct, gate, tc, s, x, h, xh)


def output(p, us, rng, dropout, train):
    """us = c^ + h (..., H) -> logits (..., V), cache."""
    a, c1 = ops.linear_forward(us, p["output/wh"], p["output/bh"])
    t, c2 = ops.tanh_forward(a)
    d, c3 = ops.dropout_forward(t, dropout, rng, train=train)
    logits, c4 = ops.linear_forward(d, p["output/wo"], p["output/bo"])
    return logits, (c1, c2, c3, c4)


def decode_start(p, features, cfg):
    """What greedy and beam search need: (encoded features, initial state)."""
    return encoded_start(encode, init_state, p, features, cfg)


def decode_step(p, enc, state, words):
    """words (N,) int -> (log-probabilities (N, V), next state, a^ (N, L + 1): the regions' weights, then beta)."""
    emb, _ = ops.embedding_forward(words[:, None], p["embedding/w"])
    (state2, context, alpha), _ = step(p, enc, state, emb[:, 0], keep=False)
    logits, _ = output(p, context + state2[0], None, 0.0, False)
    return log_softmax(logits), state2, alpha


def loss_and_grads(p, batch, cfg, rng=None, train=True, features_grad=False):
    """Teacher-forced loss and gradients keyed like p; info holds the parts of the loss and the (N, T, L + 1)
    weights, and with ``features_grad`` the gradient of batch["features"] as "dfeatures"."""
    features, captions, mask = scale_features(batch["features"], cfg), batch["captions"], batch["mask"]
    xp = get_array_module(features)
    words, targets = captions[:, :-1], captions[:, 1:]
    N, T = words.shape
    L = features.shape[1]
    enc, enc_cache = encode(p, features, cfg, rng, train)
    emb, emb_cache = ops.embedding_forward(words, p["embedding/w"])
    state = init_state(p, enc)
    H = state[0].shape[1]
    us = xp.empty((N, T, H), dtype=features.dtype)
    alphas = xp.empty((N, T, L + 1), dtype=features.dtype)
    caches, hs = [], []
    for t in range(T):
        (state, context, alpha), c = step(p, enc, state, emb[:, t])
        us[:, t] = context + state[0]
        alphas[:, t] = alpha
        hs.append(state[0])
        caches.append(c)
    logits, oc = output(p, us, rng, cfg["dropout"], train)
    ce, ce_cache = ops.temporal_cross_entropy_forward(logits, targets, mask, normalizer=batch.get("tokens_total"),
                                                      weights=batch.get("caption_weights"),
                                                      smoothing=cfg.get("label_smoothing", 0.0) if train else 0.0)
    lam = cfg.get("lambda", 0.0)
    penalty, dalphas = 0.0, None
    if lam:
        penalty, dregions = attention_penalty_forward(alphas[:, :, :L], mask, lam, batch.get("captions_total"))
        dalphas = xp.zeros_like(alphas)
        dalphas[:, :, :L] = dregions

    g = {}
    (dlogits,) = ops.temporal_cross_entropy_backward(1.0, ce_cache)
    dd, g["output/wo"], g["output/bo"] = ops.linear_backward(dlogits, oc[3])
    (dt,) = ops.dropout_backward(dd, oc[2])
    (da_out,) = ops.tanh_backward(dt, oc[1])
    dus, g["output/wh"], g["output/bh"] = ops.linear_backward(da_out, oc[0])
    E = emb.shape[2]
    feats, projected, _ = enc
    # The candidates' scores gradient: the regions' rows summed over all steps, the sentinel's row read per step
    # (zeroed before each step, since attend_backward adds into the buffer).
    dscored = xp.zeros((N, L + 1, projected.shape[2]), dtype=features.dtype)
    demb = xp.empty_like(emb)
    dglob = xp.zeros_like(enc[2])
    # Per step only what the next step back needs; the weights' gradients of all steps come after the loop,
    # one GEMM each, from these time-major buffers.
    dgates = xp.empty((T, N, 4 * H), dtype=features.dtype)
    dqp = xp.empty((T, N, p["attention/w2"].shape[1]), dtype=features.dtype)
    dps = xp.empty((T, N, p["attention/w3"].shape[1]), dtype=features.dtype)
    dgpre = xp.empty((T, N, H), dtype=features.dtype)
    g["attention/v"] = xp.zeros_like(p["attention/v"])
    dh = xp.zeros((N, H), dtype=features.dtype)
    dc = None
    for t in reversed(range(T)):
        ca, cx, cg, cs, ct, gate, tc, s, _, _, _ = caches[t]
        dcontext = dus[:, t]
        dscored[:, L] = 0
        dalpha = None if dalphas is None else dalphas[:, t]
        _, _, dq, _, _, dv = ops.attend_backward((dcontext, dalpha), ca, features_grad=False,
                                                 dprojected=dscored, dprojected_query=dqp[t])
        g["attention/v"] += dv
        dps[t] = dscored[:, L]
        # s_t is a candidate (weight beta_t in the context) and is scored through W3
        ds = alphas[:, t, L:] * dcontext + matmul(dps[t], p["attention/w3"].T)
        (dct,) = ops.tanh_backward(ds * gate, ct)
        (dgpre[t],) = ops.sigmoid_backward(ds * tc, cs)
        dxh = matmul(dgpre[t], p["sentinel/w"].T)
        dh_t = dus[:, t] + dq + dh
        dc_t = dct if dc is None else dc + dct
        dx, dh, dc, *_ = ops.lstm_step_backward((dh_t, dc_t), cx, dgates=dgates[t])
        dx += dxh[:, :2 * E]
        dh += dxh[:, 2 * E:]
        demb[:, t] = dx[:, :E]
        dglob += dx[:, E:]
    xs = xp.stack([c[8] for c in caches])  # (T, N, 2E): each step's LSTM input
    hprev = xp.stack([c[9] for c in caches])  # (T, N, H): h_{t-1}
    g["lstm/wx"], g["lstm/b"] = ops.linear_weight_grads(xs, dgates)
    g["lstm/wh"], _ = ops.linear_weight_grads(hprev, dgates)  # a = x @ wx + b + h @ wh: b counted once
    g["sentinel/w"], g["sentinel/b"] = ops.linear_weight_grads(xp.stack([c[10] for c in caches]), dgpre)
    g["attention/w3"], g["attention/b3"] = ops.linear_weight_grads(xp.stack([c[7] for c in caches]), dps)
    g["attention/w2"], g["attention/b2"] = ops.linear_weight_grads(xp.stack(hs), dqp)  # queried by h_t
    (g["embedding/w"],) = ops.embedding_backward(demb, emb_cache)
    c1, c2, c3, c4, c5, c6 = enc_cache
    dfeats, g["attention/w1"], g["attention/b1"] = ops.linear_backward(xp.ascontiguousarray(dscored[:, :L]), c4)
    dfeats += ops.attend_features_grad(xp.ascontiguousarray(alphas[:, :, :L]), dus)
    (dact,) = ops.dropout_backward(dfeats, c3)
    (dpre,) = ops.relu_backward(dact, c2)
    dfeatures, g["encoder/w"], g["encoder/b"] = ops.linear_backward(dpre, c1, input_grad=features_grad)
    (dgp,) = ops.relu_backward(dglob, c6)
    dmean, g["global/w"], g["global/b"] = ops.linear_backward(dgp, c5, input_grad=features_grad)
    ce = float(ce)  # one copy to the host: on a GPU, a sync
    info = {"cross_entropy": ce, "penalty": penalty, "alphas": alphas}
    if features_grad:
        info["dfeatures"] = unscaled_grad(dfeatures + mean_grad(dmean, L), cfg)
    return ce + penalty, g, info

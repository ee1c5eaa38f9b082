"""gru-attention: the ICapNet model (the attention decoder of TensorFlow's captioning tutorial).

Notation: N batch, T steps, L regions, D feature, E embedding, H hidden, A attention, V vocabulary.

    feats     = dropout(relu(features @ We + be))            (N, L, E)   FC encoder
    projected = feats @ W1 + b1                              (N, L, A)   once per batch
    h_0 = 0; at step t, with previous word w_t:
        context_t, alpha_t = attend(feats, projected, h_{t-1})         Bahdanau, queried by h_{t-1}
        h_t = GRU([context_t; embed(w_t)], h_{t-1})                    the state is carried on
    logits    = (hs @ Wf1 + bf1) @ Wf2 + bf2                 (N, T, V)   all steps at once
    loss      = masked mean cross-entropy + lam * doubly stochastic penalty (lam = 0 by default)
"""
from __future__ import annotations

from .. import ops
from ..backend import get_array_module
from ..ops.softmax import log_softmax
from .common import (attention_penalty_forward, encoded_start, gate_orthogonal, glorot, scale_features,
                     shared_encoding, uniform, unscaled_grad, zeros)

NAME = "gru-attention"


def init_params(cfg, rng, dtype="float32"):
    D, E, H, A, V = (cfg[k] for k in "DEHAV")
    return {
        "attention/b1": zeros(A, dtype), "attention/b2": zeros(A, dtype),
        "attention/v": uniform(rng, (A,), dtype), "attention/w1": glorot(rng, (E, A), dtype),
        "attention/w2": glorot(rng, (H, A), dtype),
        "embedding/w": uniform(rng, (V, E), dtype),
        "encoder/b": zeros(E, dtype), "encoder/w": glorot(rng, (D, E), dtype),
        "gru/bh": zeros(3 * H, dtype), "gru/bx": zeros(3 * H, dtype),
        "gru/wh": gate_orthogonal(rng, H, 3, dtype), "gru/wx": glorot(rng, (2 * E, 3 * H), dtype),
        "output/b1": zeros(H, dtype), "output/b2": zeros(V, dtype),
        "output/w1": glorot(rng, (H, H), dtype), "output/w2": glorot(rng, (H, V), dtype),
    }


def encode(p, features, cfg, rng, train):
    """features (N, L, D) -> (feats (N, L, E), projected (N, L, A)), cache."""
    pre, c1 = ops.linear_forward(features, p["encoder/w"], p["encoder/b"])
    act, c2 = ops.relu_forward(pre)
    feats, c3 = ops.dropout_forward(act, cfg["dropout"], rng, train=train)
    projected, c4 = ops.linear_forward(feats, p["attention/w1"], p["attention/b1"])
    return (feats, projected), (c1, c2, c3, c4)


def init_state(p, enc):
    feats = enc[0]
    return get_array_module(feats).zeros((feats.shape[0], p["gru/wh"].shape[0]), dtype=feats.dtype)


def step(p, enc, h, emb_t, keep=True):
    """One decoder step: ((h_t, alpha_t), cache); ``keep=False`` (decoding) keeps nothing for a backward."""
    feats, projected = enc
    (context, alpha), ca = ops.attend_forward(feats, projected, h, p["attention/w2"], p["attention/b2"],
                                              p["attention/v"], keep=keep)
    xp = get_array_module(h)
    x = xp.concatenate([context, emb_t], axis=1)
    h_next, cg = ops.gru_step_forward(x, h, p["gru/wx"], p["gru/wh"], p["gru/bx"], p["gru/bh"])
    return (h_next, alpha), (ca, cg, x, h)


def output(p, hs):
    """hs (..., H) -> logits (..., V), cache."""
    o1, c1 = ops.linear_forward(hs, p["output/w1"], p["output/b1"])
    logits, c2 = ops.linear_forward(o1, p["output/w2"], p["output/b2"])
    return logits, (c1, c2)


def decode_start(p, features, cfg):
    """What greedy and beam search need: (encoded features, initial state)."""
    return encoded_start(encode, init_state, p, features, cfg)


expand_encoding = shared_encoding


def decode_step(p, enc, state, words):
    """words (N,) int -> (log-probabilities (N, V), next state, alpha (N, L))."""
    emb, _ = ops.embedding_forward(words[:, None], p["embedding/w"])
    (h, alpha), _ = step(p, enc, state, emb[:, 0], keep=False)
    logits, _ = output(p, h)
    return log_softmax(logits), h, alpha


def loss_and_grads(p, batch, cfg, rng=None, train=True, features_grad=False):
    """Teacher-forced loss and gradients keyed like p; info holds the parts of the loss and the alphas, and
    with ``features_grad`` the gradient of batch["features"] as "dfeatures" (for fine-tuning VGG-16)."""
    features, captions, mask = scale_features(batch["features"], cfg), batch["captions"], batch["mask"]
    xp = get_array_module(features)
    words, targets = captions[:, :-1], captions[:, 1:]
    N, T = words.shape
    enc, enc_cache = encode(p, features, cfg, rng, train)
    feats, projected = enc
    emb, emb_cache = ops.embedding_forward(words, p["embedding/w"])
    h = init_state(p, enc)
    H, L = h.shape[1], feats.shape[1]
    hs = xp.empty((N, T, H), dtype=features.dtype)
    alphas = xp.empty((N, T, L), dtype=features.dtype)
    caches = []
    for t in range(T):
        (h, alpha), c = step(p, enc, h, emb[:, t])
        hs[:, t], alphas[:, t] = h, alpha
        caches.append(c)
    logits, out_cache = output(p, hs)
    ce, ce_cache = ops.temporal_cross_entropy_forward(logits, targets, mask, normalizer=batch.get("tokens_total"),
                                                      weights=batch.get("caption_weights"),
                                                      smoothing=cfg.get("label_smoothing", 0.0) if train else 0.0)
    lam = cfg.get("lambda", 0.0)
    penalty, dalphas = attention_penalty_forward(alphas, mask, lam, batch.get("captions_total")) if lam \
        else (0.0, None)

    g = {}
    (dlogits,) = ops.temporal_cross_entropy_backward(1.0, ce_cache)
    do1, g["output/w2"], g["output/b2"] = ops.linear_backward(dlogits, out_cache[1])
    dhs, g["output/w1"], g["output/b1"] = ops.linear_backward(do1, out_cache[0])
    dprojected = None  # the last step writes it, the others add to it: no 25 MB of zeros to fill and add to
    dcontexts = xp.empty((N, T, feats.shape[2]), dtype=features.dtype)
    demb = xp.empty_like(emb)
    # Per step only what the next step back needs; the weights' gradients of all steps come after the loop,
    # one GEMM each, from these time-major buffers.
    dgx = xp.empty((T, N, p["gru/wx"].shape[1]), dtype=features.dtype)
    dgh = xp.empty_like(dgx)
    dqp = xp.empty((T, N, p["attention/w2"].shape[1]), dtype=features.dtype)
    g["attention/v"] = xp.zeros_like(p["attention/v"])
    dh = xp.zeros((N, H), dtype=features.dtype)
    Dc = dcontexts.shape[2]
    for t in reversed(range(T)):
        ca, cg, _, _ = caches[t]
        dx, dh, *_ = ops.gru_step_backward(dhs[:, t] + dh, cg, dgates=(dgx[t], dgh[t]))
        demb[:, t] = dx[:, Dc:]
        dcontexts[:, t] = dx[:, :Dc]
        dalpha = None if dalphas is None else dalphas[:, t]
        _, dprojected, dq, _, _, dv = ops.attend_backward((dx[:, :Dc], dalpha), ca, features_grad=False,
                                                 dprojected=dprojected, dprojected_query=dqp[t])
        dh += dq
        g["attention/v"] += dv
    xs = xp.stack([c[2] for c in caches])  # (T, N, 2E): each step's GRU input
    queries = xp.stack([c[3] for c in caches])  # (T, N, H): h_{t-1}, the GRU's state and the attention's query
    g["gru/wx"], g["gru/bx"] = ops.linear_weight_grads(xs, dgx)
    g["gru/wh"], g["gru/bh"] = ops.linear_weight_grads(queries, dgh)
    g["attention/w2"], g["attention/b2"] = ops.linear_weight_grads(queries, dqp)
    (g["embedding/w"],) = ops.embedding_backward(demb, emb_cache)
    c1, c2, c3, c4 = enc_cache
    dfeats, g["attention/w1"], g["attention/b1"] = ops.linear_backward(dprojected, c4)
    dfeats += ops.attend_features_grad(alphas, dcontexts)
    (dact,) = ops.dropout_backward(dfeats, c3)
    (dpre,) = ops.relu_backward(dact, c2)
    dfeatures, g["encoder/w"], g["encoder/b"] = ops.linear_backward(dpre, c1, input_grad=features_grad)
    ce = float(ce)  # one copy to the host: on a GPU, a sync
    info = {"cross_entropy": ce, "penalty": penalty, "alphas": alphas}
    if features_grad:
        info["dfeatures"] = unscaled_grad(dfeatures, cfg)
    return ce + penalty, g, info

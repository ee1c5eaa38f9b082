"""lstm-noattention: a Show-and-Tell-style baseline without attention.

    h_0, c_0 = tanh(mean_L(a) @ Wh0 + bh0), tanh(mean_L(a) @ Wc0 + bc0)
    hs       = LSTM(embed(w_1..T), h_0, c_0)                  (N, T, H)   one sequence layer
    logits   = dropout(hs) @ Wo + bo                          (N, T, V)
"""
from __future__ import annotations

from .. import ops
from ..backend import get_array_module
from ..ops.softmax import log_softmax
from .common import (gate_orthogonal, glorot, initial_state_backward, initial_state_forward, mean_grad,
                     scale_features, uniform, unscaled_grad, zeros)

NAME = "lstm-noattention"


def init_params(cfg, rng, dtype="float32"):
    D, E, H, V = (cfg[k] for k in "DEHV")
    b = zeros(4 * H, dtype)
    b[H:2 * H] = 1.0
    return {
        "embedding/w": uniform(rng, (V, E), dtype),
        "init/bc": zeros(H, dtype), "init/bh": zeros(H, dtype),
        "init/wc": glorot(rng, (D, H), dtype), "init/wh": glorot(rng, (D, H), dtype),
        "lstm/b": b, "lstm/wh": gate_orthogonal(rng, H, 4, dtype), "lstm/wx": glorot(rng, (E, 4 * H), dtype),
        "output/b": zeros(V, dtype), "output/w": glorot(rng, (H, V), dtype),
    }


def decode_start(p, features, cfg):
    features = scale_features(features, cfg)
    state, _ = initial_state_forward(p, features)
    return None, state


def decode_step(p, enc, state, words):
    emb, _ = ops.embedding_forward(words[:, None], p["embedding/w"])
    (h, c), _ = ops.lstm_step_forward(emb[:, 0], state[0], state[1], p["lstm/wx"], p["lstm/wh"], p["lstm/b"])
    logits, _ = ops.linear_forward(h, p["output/w"], p["output/b"])
    return log_softmax(logits), (h, c), None


def loss_and_grads(p, batch, cfg, rng=None, train=True, features_grad=False):
    features, captions, mask = scale_features(batch["features"], cfg), batch["captions"], batch["mask"]
    words, targets = captions[:, :-1], captions[:, 1:]
    (h0, c0), enc_cache = initial_state_forward(p, features)
    emb, emb_cache = ops.embedding_forward(words, p["embedding/w"])
    hs, lc = ops.lstm_forward(emb, h0, c0, p["lstm/wx"], p["lstm/wh"], p["lstm/b"])
    d, dc_ = ops.dropout_forward(hs, cfg["dropout"], rng, train=train)
    logits, oc = ops.linear_forward(d, p["output/w"], p["output/b"])
    ce, ce_cache = ops.temporal_cross_entropy_forward(logits, targets, mask, normalizer=batch.get("tokens_total"),
                                                      weights=batch.get("caption_weights"),
                                                      smoothing=cfg.get("label_smoothing", 0.0) if train else 0.0)
    g = {}
    (dlogits,) = ops.temporal_cross_entropy_backward(1.0, ce_cache)
    dd, g["output/w"], g["output/b"] = ops.linear_backward(dlogits, oc)
    (dhs,) = ops.dropout_backward(dd, dc_)
    demb, dh0, dc0, g["lstm/wx"], g["lstm/wh"], g["lstm/b"] = ops.lstm_backward(dhs, lc)
    (g["embedding/w"],) = ops.embedding_backward(demb, emb_cache)
    dmean = initial_state_backward(dh0, dc0, enc_cache, g, input_grad=features_grad)
    xp = get_array_module(features)
    ce = float(ce)  # one copy to the host: on a GPU, a sync
    info = {"cross_entropy": ce, "penalty": 0.0, "alphas": xp.zeros((0,), dtype=features.dtype)}
    if features_grad:
        info["dfeatures"] = unscaled_grad(mean_grad(dmean, features.shape[1]), cfg)
    return ce, g, info

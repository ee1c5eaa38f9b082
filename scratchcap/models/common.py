"""Pieces the decoders share: initialisers, the doubly stochastic attention penalty, gradient sums.

Parameters live in flat dicts keyed "<part>/<name>" ("gru/wx", "attention/v"),
the same keys that gradients, optimizer state and checkpoints use.
"""
from __future__ import annotations

import numpy as np

from ..backend import get_array_module


def glorot(rng, shape, dtype):
    limit = np.sqrt(6.0 / (shape[0] + shape[-1]))
    return rng.uniform(-limit, limit, size=shape).astype(dtype)


def gate_orthogonal(rng, H, gates, dtype):
    """(H, gates*H) recurrent weights, an orthogonal block per gate (keeps early gradients alive)."""
    blocks = [np.linalg.qr(rng.standard_normal((H, H)))[0] for _ in range(gates)]
    return np.concatenate(blocks, axis=1).astype(dtype)


def uniform(rng, shape, dtype, scale=0.1):
    return rng.uniform(-scale, scale, size=shape).astype(dtype)


def zeros(shape, dtype):
    return np.zeros(shape, dtype=dtype)


def zero_grads(params, names):
    return {k: get_array_module(params[k]).zeros_like(params[k]) for k in names}


def attention_penalty_forward(alphas, mask, lam, captions_total=None):
    """Doubly stochastic regularization (Show, Attend and Tell, eq. 14).

    alphas (N, T, L), mask (N, T) bool: penalty = lam / N * sum_n sum_l (1 - sum_t alpha_ntl)^2,
    counting only the real time steps. Returns (penalty as float, dalphas (N, T, L)).
    ``captions_total`` replaces N (a data-parallel shard divides by the whole batch's captions).
    """
    xp = get_array_module(alphas)
    N = alphas.shape[0] if captions_total is None else captions_total
    w = mask.astype(alphas.dtype)[:, :, None]
    total = (alphas * w).sum(axis=1)  # (N, L)
    gap = 1 - total
    penalty = float(lam * (gap * gap).sum() / N)
    dalphas = (-2 * lam / N) * gap[:, None, :] * w
    return penalty, xp.asarray(dalphas, dtype=alphas.dtype)


def initial_state_forward(p, features):
    """h0, c0 = tanh(mean_L(features) @ W + b) for the two init MLPs ("init/wh", "init/wc"). Returns ((h0, c0), cache)."""
    from .. import ops

    mean = features.mean(axis=1)
    hp, c1 = ops.linear_forward(mean, p["init/wh"], p["init/bh"])
    h0, c2 = ops.tanh_forward(hp)
    cp, c3 = ops.linear_forward(mean, p["init/wc"], p["init/bc"])
    c0, c4 = ops.tanh_forward(cp)
    return (h0, c0), (c1, c2, c3, c4)


def initial_state_backward(dh0, dc0, cache, grads, input_grad=False):
    """Adds the init MLPs' gradients to ``grads``. Returns the gradient of the mean annotation (N, D) with
    ``input_grad`` (the features are data unless VGG-16 is fine-tuned), else None."""
    from .. import ops

    c1, c2, c3, c4 = cache
    (dcp,) = ops.tanh_backward(dc0, c4)
    dmean_c, grads["init/wc"], grads["init/bc"] = ops.linear_backward(dcp, c3, input_grad=input_grad)
    (dhp,) = ops.tanh_backward(dh0, c2)
    dmean_h, grads["init/wh"], grads["init/bh"] = ops.linear_backward(dhp, c1, input_grad=input_grad)
    return dmean_c + dmean_h if input_grad else None


def mean_grad(dmean, L):
    """The gradient of features (N, L, D) through their mean over L, from that of the mean (N, D)."""
    xp = get_array_module(dmean)
    return xp.broadcast_to((dmean / dmean.dtype.type(L))[:, None, :], (dmean.shape[0], L, dmean.shape[1]))


def unscaled_grad(dfeatures, cfg):
    """The gradient of the features as given, from that of scale_features's output."""
    scale = cfg.get("feature_scale", 1.0)
    return dfeatures if scale == 1.0 else dfeatures * dfeatures.dtype.type(scale)


def scale_features(features, cfg):
    """The features as a model sees them: times cfg["feature_scale"].

    Training sets it to 1 / (the features' RMS over train images), so that the
    tanh and sigmoid units fed by them start unsaturated; checkpoints without it
    see raw features.
    """
    scale = cfg.get("feature_scale", 1.0)
    return features if scale == 1.0 else features * features.dtype.type(scale)


def shared_encoding(enc, k):
    """expand_encoding of a decoder whose attention takes k queries per image: beam search's k rows of state
    per image share its encoding as it is."""
    return enc


def encoded_start(encode, init_state, p, features, cfg):
    """decode_start of a decoder with an FC encoder: (the encoded features, the initial state), no dropout."""
    enc, _ = encode(p, scale_features(features, cfg), cfg, None, train=False)
    return enc, init_state(p, enc)

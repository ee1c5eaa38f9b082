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


def attention_penalty_forward(alphas, mask, lam):
    """Doubly stochastic regularization (Show, Attend and Tell, eq. 14).

    alphas (N, T, L), mask (N, T) bool: penalty = lam / N * sum_n sum_l (1 - sum_t alpha_ntl)^2,
    counting only the real time steps. Returns (penalty as float, dalphas (N, T, L)).
    """
    xp = get_array_module(alphas)
    N = alphas.shape[0]
    w = mask.astype(alphas.dtype)[:, :, None]
    total = (alphas * w).sum(axis=1)  # (N, L)
    gap = 1 - total
    penalty = float(lam * (gap * gap).sum() / N)
    dalphas = (-2 * lam / N) * gap[:, None, :] * w
    return penalty, xp.asarray(dalphas, dtype=alphas.dtype)

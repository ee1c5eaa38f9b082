"""Masked cross-entropy over a sequence of word predictions.

Notation:
    logits   (N, T, V)  unnormalized scores for each time step
    targets  (N, T)     integer word ids in [0, V)
    mask     (N, T)     True for real tokens, False for padding
    weights  (N,)       optional per-caption weight w_n (default 1)
    eps                 label smoothing (default 0): the target is (1 - eps) onehot + eps / V
    loss = -sum_{n,t: mask} w_n * [(1 - eps) logp[n, t, target] + eps / V * sum_v logp[n, t, v]] / #mask
    dlogits[n, t] = (softmax - (1 - eps) onehot - eps / V) * w_n * mask / #mask

The mean is over real tokens, not padding, so short captions are not diluted.
With no real tokens at all the loss is 0 and so is its gradient. ``normalizer``
replaces #mask by another count: a data-parallel rank divides its shard's sum by
the real tokens of the whole batch, so that the ranks' losses and gradients add
up to the one-process mean exactly (scratchcap.distributed).

``weights`` makes the same layer the policy-gradient loss of self-critical
training (scratchcap.scst): w_n is the advantage of sampled caption n and the
normalizer the number of samples, so loss = -mean_n A_n log p(caption n), the
sum over its tokens, <end> included. A negative weight pushes a caption down.
"""
from __future__ import annotations

from .. import row_blocks
from ..backend import get_array_module
from . import _checks
from .softmax import log_softmax


def _check(logits, targets, mask, weights):
    layer = "temporal_cross_entropy"
    _checks.floats(layer, logits=logits)
    _checks.ndim(layer, "logits", logits, 3, "N, T, V")
    N, T, V = logits.shape
    _checks.integers(layer, "targets", targets)
    _checks.shape(layer, "targets", targets, (N, T), "N, T", "logits")
    _checks.booleans(layer, "mask", mask)
    _checks.shape(layer, "mask", mask, (N, T), "N, T", "logits")
    _checks.index_range(layer, "targets", targets, V, f"logits of shape {tuple(logits.shape)}")
    if weights is not None:
        _checks.floats(layer, logits=logits, weights=weights)
        _checks.shape(layer, "weights", weights, (N,), "N", "logits")


def temporal_cross_entropy_forward(logits, targets, mask, *, normalizer=None, weights=None, smoothing=0.0):
    """Returns (loss, cache); loss is a 0-d array of logits' dtype. ``normalizer``: divide by it, not #mask;
    ``weights`` (N,): each caption's tokens count w_n times; ``smoothing``: label smoothing eps in [0, 1)."""
    _check(logits, targets, mask, weights)
    xp = get_array_module(logits)
    N, T, V = logits.shape
    logp = log_softmax(logits.reshape(N * T, V), axis=-1)  # a matrix: its rows go over the pool
    flat_t = targets.reshape(-1)
    if not 0.0 <= smoothing < 1.0:
        raise ValueError(f"temporal_cross_entropy: smoothing must lie in [0, 1), got {smoothing}")
    picked = logp[xp.arange(N * T), flat_t]
    if smoothing:
        picked = (1 - smoothing) * picked + (smoothing / V) * logp.sum(axis=1)
    token_weights = mask.astype(logits.dtype)
    if weights is not None:
        token_weights = token_weights * weights[:, None]
    token_weights = token_weights.reshape(-1)
    count = max(int(mask.sum()), 1) if normalizer is None else normalizer
    if count <= 0:
        raise ValueError(f"temporal_cross_entropy: normalizer must be positive, got {normalizer}")
    loss = -(picked * token_weights).sum() / logits.dtype.type(count)
    return loss, (logp, flat_t, token_weights, count, logits.shape, smoothing)


def temporal_cross_entropy_backward(dloss, cache):
    """dloss scalar -> (dlogits (N, T, V),) = (softmax - (1 - eps) onehot - eps / V) * mask * w_n / #mask * dloss."""
    logp, flat_t, weights, count, shape, smoothing = cache
    xp = get_array_module(logp)
    scale = xp.asarray(dloss, dtype=logp.dtype) / count
    row_scale = weights * scale

    def rows(lp, t, w):  # rows of (N*T, V); alone, so that the pool can take blocks of them
        d = xp.exp(lp)
        d[xp.arange(d.shape[0]), t] -= 1 - smoothing
        if smoothing:
            d -= smoothing / shape[-1]
        d *= w[:, None]
        return d
    return (row_blocks.map_rows(rows, logp, flat_t, row_scale, dtype=logp.dtype).reshape(shape),)

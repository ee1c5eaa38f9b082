"""Small float64 inputs for every layer, for the gradient check and its tests.

``layer_cases(xp, sizes)`` builds one or more cases per layer from a dict of
sizes in the fixed letters (N batch, T time, L regions, D feature, E embedding,
H hidden, A attention, V vocabulary, C/F conv channels, S image side), so that
the same table serves the command-line check and the test suite's edge shapes
(N=1, T=1, L=1, ...).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy

from . import ops

SIZES = dict(N=2, T=3, L=4, D=5, E=3, H=4, A=3, V=7, C=2, F=3, S=5)


@dataclass
class Case:
    name: str
    forward: object
    backward: object
    inputs: list
    kwargs: dict = field(default_factory=dict)


def _masks(rng, n, length, whole_rows_hidden: bool):
    """Boolean (n, length) mask with ragged rows; optionally the last row fully hidden."""
    lengths = rng.integers(1, length + 1, size=n)
    lengths[0] = length
    mask = numpy.arange(length)[None, :] < lengths[:, None]
    if whole_rows_hidden and n > 1:
        mask[-1] = False
    return mask


def caption_batch(rng, N, T, L, D, V, dtype="float64", min_words=0):
    """A random teacher-forcing batch: features (N, L, D), captions (N, T + 1), mask (N, T).

    Each caption is <start> (1), between min_words and T - 1 words from 3..V-1, <end> (2), then <pad> (0).
    """
    caps = numpy.zeros((N, T + 1), dtype=numpy.int64)
    caps[:, 0] = 1
    for n in range(N):
        k = int(rng.integers(min_words + 1, T + 1))
        caps[n, 1:k] = rng.integers(3, V, size=k - 1)
        caps[n, k] = 2
    return dict(features=rng.standard_normal((N, L, D)).astype(dtype), captions=caps, mask=caps[:, 1:] != 0)


def _conv2d_winograd(x, w, b, **kwargs):
    # The transformed kernel follows w, so that perturbing w moves the output.
    return ops.conv2d_forward(x, w, b, winograd=ops.winograd_kernel(w), **kwargs)


def layer_cases(xp, sizes=None, seed: int = 0):
    s = dict(SIZES, **(sizes or {}))
    N, T, L, D, E, H, A, V, C, F, S = (s[k] for k in "N T L D E H A V C F S".split())
    rng = numpy.random.default_rng(seed)

    def r(*shape, scale=1.0):
        return xp.asarray(rng.standard_normal(shape) * scale)

    def away_from_zero(*shape):
        # relu's kink at 0 would spoil central differences.
        x = rng.standard_normal(shape)
        return xp.asarray(numpy.sign(x) * (0.05 + numpy.abs(x)))

    def distinct(*shape):
        # max pooling needs a unique max per window for a well-defined gradient.
        return xp.asarray(rng.permutation(int(numpy.prod(shape))).reshape(shape) * 0.1)

    def ints(high, *shape):
        return xp.asarray(rng.integers(0, high, size=shape))

    def bools(mask):
        return xp.asarray(mask)

    def dropout_fresh(x):
        # A fresh generator per call replays the same mask, as a checker needs.
        return ops.dropout_forward(x, 0.3, numpy.random.default_rng(seed + 1))

    cases = [
        Case("relu", ops.relu_forward, ops.relu_backward, [away_from_zero(N, T, D)]),
        Case("tanh", ops.tanh_forward, ops.tanh_backward, [r(N, T, D)]),
        Case("sigmoid", ops.sigmoid_forward, ops.sigmoid_backward, [r(N, T, D, scale=3.0)]),
        Case("linear", ops.linear_forward, ops.linear_backward, [r(N, T, D), r(D, H), r(H)]),
        Case("linear (N, D)", ops.linear_forward, ops.linear_backward, [r(N, D), r(D, H), r(H)]),
        Case("embedding", ops.embedding_forward, ops.embedding_backward,
             [ints(min(V, 3), N, T), r(V, E)]),
        Case("conv2d same", ops.conv2d_forward, ops.conv2d_backward,
             [r(N, S, S, C), r(3, 3, C, F), r(F)]),
        Case("conv2d stride 2 valid", ops.conv2d_forward, ops.conv2d_backward,
             [r(N, S, S, C), r(3, 3, C, F), r(F)], dict(stride=2, padding="valid")),
        Case("conv2d stride 2 same", ops.conv2d_forward, ops.conv2d_backward,
             [r(N, S + 1, S, C), r(3, 2, C, F), r(F)], dict(stride=2, padding="same")),
        Case("conv2d padding 1", ops.conv2d_forward, ops.conv2d_backward,
             [r(N, S, S, C), r(2, 2, C, F), r(F)], dict(padding=1)),
        Case("conv2d winograd", _conv2d_winograd, ops.conv2d_backward,
             [r(N, S, S, C), r(3, 3, C, F), r(F)]),
        Case("conv2d winograd valid", _conv2d_winograd, ops.conv2d_backward,
             [r(N, S + 1, S + 2, C), r(3, 3, C, F), r(F)], dict(padding="valid")),
        Case("max_pool2d", ops.max_pool2d_forward, ops.max_pool2d_backward,
             [distinct(N, 2 * S, 2 * S - 1, C)]),
        Case("max_pool2d size 3 stride 2", ops.max_pool2d_forward, ops.max_pool2d_backward,
             [distinct(N, S, S, C)], dict(size=3, stride=2)),
        Case("dropout", dropout_fresh, ops.dropout_backward, [r(N, T, D)]),
        Case("softmax", ops.softmax_forward, ops.softmax_backward, [r(N, T, V)]),
        Case("log_softmax", ops.log_softmax_forward, ops.log_softmax_backward, [r(N, T, V)]),
        Case("temporal_cross_entropy", ops.temporal_cross_entropy_forward,
             ops.temporal_cross_entropy_backward,
             [r(N, T, V), ints(V, N, T), bools(_masks(rng, N, T, False))]),
        Case("temporal_cross_entropy hidden rows", ops.temporal_cross_entropy_forward,
             ops.temporal_cross_entropy_backward,
             [r(N, T, V), ints(V, N, T), bools(_masks(rng, N, T, True))]),
        Case("temporal_cross_entropy normalizer", ops.temporal_cross_entropy_forward,
             ops.temporal_cross_entropy_backward,
             [r(N, T, V), ints(V, N, T), bools(_masks(rng, N, T, False))], dict(normalizer=3 * N * T + 1)),
        Case("temporal_cross_entropy caption weights", ops.temporal_cross_entropy_forward,
             ops.temporal_cross_entropy_backward,
             [r(N, T, V), ints(V, N, T), bools(_masks(rng, N, T, True))], dict(normalizer=N, weights=r(N))),
        Case("temporal_cross_entropy label smoothing", ops.temporal_cross_entropy_forward,
             ops.temporal_cross_entropy_backward,
             [r(N, T, V), ints(V, N, T), bools(_masks(rng, N, T, True))], dict(smoothing=0.2)),
        Case("lstm_step", ops.lstm_step_forward, ops.lstm_step_backward,
             [r(N, D), r(N, H), r(N, H), r(D, 4 * H), r(H, 4 * H), r(4 * H)]),
        Case("lstm", ops.lstm_forward, ops.lstm_backward,
             [r(N, T, D), r(N, H), r(N, H), r(D, 4 * H, scale=0.5), r(H, 4 * H, scale=0.5),
              r(4 * H)]),
        Case("gru_step", ops.gru_step_forward, ops.gru_step_backward,
             [r(N, D), r(N, H), r(D, 3 * H), r(H, 3 * H), r(3 * H), r(3 * H)]),
        Case("gru", ops.gru_forward, ops.gru_backward,
             [r(N, T, D), r(N, H), r(D, 3 * H, scale=0.5), r(H, 3 * H, scale=0.5), r(3 * H),
              r(3 * H)]),
        Case("additive_attention", ops.additive_attention_forward,
             ops.additive_attention_backward,
             [r(N, L, D), r(N, H), r(D, A), r(A), r(H, A), r(A), r(A)]),
        Case("additive_attention masked", ops.additive_attention_forward,
             ops.additive_attention_backward,
             [r(N, L, D), r(N, H), r(D, A), r(A), r(H, A), r(A), r(A)],
             dict(mask=bools(_masks(rng, N, L, False)))),
        Case("attend", ops.attend_forward, ops.attend_backward,
             [r(N, L, D), r(N, L, A), r(N, H), r(H, A), r(A), r(A)]),
        Case("attend 3 queries per image", ops.attend_forward, ops.attend_backward,  # beam search's k beams
             [r(N, L, D), r(N, L, A), r(3 * N, H), r(H, A), r(A), r(A)]),
        Case("additive_attention 2 queries per image masked", ops.additive_attention_forward,
             ops.additive_attention_backward,
             [r(N, L, D), r(2 * N, H), r(D, A), r(A), r(H, A), r(A), r(A)],
             dict(mask=bools(_masks(rng, N, L, False)))),
    ]
    return cases

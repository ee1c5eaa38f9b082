"""One self-critical step: sample, reward, baseline, then the teacher-forced backward on the samples.

Notation: N images of the batch (this rank's share), k samples each, S = N_total * k samples of the
whole batch, r_nj the reward of sample j of image n, b_nj its baseline.

    b_nj = mean_{i != j} r_ni                    "mean" (default; Luo 2020's new self-critical)
    b_nj = r(greedy caption of image n)          "greedy" (Rennie et al. 2017)
    A_nj = r_nj - b_nj
    loss = -1/S sum_nj A_nj sum_t log p(w_t | w_<t, image n)      w_1 .. <end>, every token the sample drew
    grad = the gradient of loss: the REINFORCE estimate of -grad E[r]

The loss is the models' own masked cross-entropy on the sampled captions as targets, each
caption weighted by its advantage (the loss layer's ``weights``) and divided by S (its
``normalizer``), so every decoder gets SCST from its existing forward and backward.

Dropout and the attention penalty are off in both the sampling and the gradient: the gradient
is then exactly that of the policy that drew the samples. Dropout's masks would have to be the
same in the step-by-step sampler and the all-steps teacher-forced pass (different shapes and
draws), and the penalty is a cross-entropy-era regulariser whose gradient owes nothing to the
reward.
"""
from __future__ import annotations

import time

import numpy as np

from .. import thread_shards
from ..backend import get_array_module
from ..data.vocab import END
from ..decode import greedy
from .reward import sample_words
from .sampling import sample_captions

BASELINES = ("mean", "greedy")


def advantages(rewards, k, baseline="mean", greedy_rewards=None):
    """(A (N*k,), b (N*k,)) from rewards (N*k,) of k samples per image."""
    r = np.asarray(rewards, dtype=np.float64).reshape(-1, k)
    if baseline == "mean":
        if k < 2:
            raise ValueError("the mean-of-the-others baseline needs at least 2 samples per image (--scst-samples)")
        b = (r.sum(axis=1, keepdims=True) - r) / (k - 1)
    elif baseline == "greedy":
        b = np.repeat(np.asarray(greedy_rewards, dtype=np.float64)[:, None], k, axis=1)
    else:
        raise ValueError(f"unknown SCST baseline {baseline!r}; one of {', '.join(BASELINES)}")
    return (r - b).reshape(-1), b.reshape(-1)


def sampled_batch(features, ids, lengths, vocab, k, weights, samples_total):
    """The teacher-forcing batch of the samples: <start> + the sampled tokens, their mask and weights."""
    xp = get_array_module(features)
    rows, T = ids.shape
    captions = np.full((rows, T + 1), vocab.pad, dtype=np.int64)
    captions[:, 0] = vocab.start
    captions[:, 1:] = ids
    mask = np.arange(T)[None, :] < lengths[:, None]
    return dict(features=xp.repeat(features, k, axis=0), captions=xp.asarray(captions), mask=xp.asarray(mask),
                caption_weights=xp.asarray(weights, dtype=features.dtype),
                tokens_total=samples_total)  # the loss layer divides by this: the samples, not the tokens


def scst_loss_and_grads(model, params, features, image_ids, cfg, vocab, reward, key, *, k=5, baseline="mean",
                        max_length=20, row_offset=0, samples_total=None):
    """(loss, grads, stats) of one batch of images ``features`` (N, L, D) with ids ``image_ids``.

    ``reward(image_ids, word_lists)`` scores samples (CiderReward, or any function for a test). stats:
    reward_sum, advantage_sum, samples, reward_seconds, and the drawn ids.
    """
    k = int(k)
    N = features.shape[0]
    samples_total = N * k if samples_total is None else samples_total
    ids, lengths, ended = sample_captions(model, params, features, cfg, vocab, k, key, max_length,
                                          row_offset=row_offset, rows_total=samples_total)
    t0 = time.perf_counter()
    rewards = reward([i for i in image_ids for _ in range(k)], sample_words(vocab, ids, lengths))
    greedy_rewards = None
    seconds = time.perf_counter() - t0
    if baseline == "greedy":  # the test-time caption: <unk> masked, as decoding does
        words = [res["words"] + ([END] if len(res["words"]) < max_length else [])
                 for res in greedy(model, params, features, cfg, vocab, max_length)]
        t0 = time.perf_counter()
        greedy_rewards = reward(list(image_ids), words)
        seconds += time.perf_counter() - t0
    adv, _ = advantages(rewards, k, baseline, greedy_rewards)
    batch = sampled_batch(features, ids, lengths, vocab, k, adv, samples_total)
    loss, grads, _ = thread_shards.loss_and_grads(model, params, batch, dict(cfg, dropout=0.0, **{"lambda": 0.0}),
                                                  None, train=False)
    stats = dict(reward_sum=float(rewards.sum()), advantage_sum=float(adv.sum()), samples=len(rewards),
                 reward_seconds=seconds, ids=ids, lengths=lengths, rewards=rewards)
    return float(loss), grads, stats

"""Captions drawn from a model's own distribution, batched over images, on NumPy or CuPy.

Notation: N images, k samples per image, V vocabulary, T = max_length.

    rows      n * k + j is sample j of image n                       (N*k rows)
    p_t       softmax(log p(. | w_<t, image) / temperature)           (N*k, V)
    w_t       the word whose cumulative probability first exceeds u * sum(p_t),
              u = counter_uniform(key)[t * rows_total + row_offset + row]   one uniform per row and step
    a row stops at <end> (kept: it is a word the reward and the gradient count) or at T words

Every token can be drawn, <pad>, <start> and <unk> included: the reward, which never matches
them, is what teaches the model to avoid them. Excluding them from the draw excludes them from
the gradient too, and then every negative advantage moves probability onto them: a first run
that did so put 54% on <start> after "on a" within two epochs, which decoding, which drops
non-words, printed as the fragment "a boy is playing on a".

The uniforms come from one 64-bit key and each row's global position (scratchcap.counter_random),
so a data-parallel rank that holds rows row_offset.. of a batch draws exactly those rows of the
one-process draw, and NumPy and CuPy draw the same numbers. The pool's threads take the images
the same way where there are enough of them (decode.image_groups), each drawing its rows.
"""
from __future__ import annotations

import numpy as np

from .. import threads
from ..backend import get_array_module, to_numpy
from ..counter_random import counter_uniform
from ..decode import expand_encoding, image_groups, repeat_rows


def sample_captions(model, params, features, cfg, vocab, k, key, max_length=20, temperature=1.0,
                    row_offset=0, rows_total=None):
    """(ids (N*k, T) int64, <pad> after the end, lengths (N*k,) tokens counting <end>, ended (N*k,) bool).

    ``features`` (N, L, D) as the model's decode_start takes them. Host arrays out, whatever the device.
    """
    if k < 1:
        raise ValueError(f"sample_captions: k must be at least 1, got {k}")
    if not temperature > 0:
        raise ValueError(f"sample_captions: temperature must be positive, got {temperature}")
    rows = features.shape[0] * k
    rows_total = rows if rows_total is None else rows_total
    groups = image_groups(features, k)
    if groups is not None:  # each pool thread draws its images' rows of the whole draw, as a rank would
        parts = threads.map_pieces(lambda g: sample_captions(model, params, features[g], cfg, vocab, k, key, max_length,
                                                             temperature, row_offset + g.start * k, rows_total), groups)
        return tuple(np.concatenate([part[i] for part in parts]) for i in range(3))
    xp = get_array_module(features)
    enc, state = model.decode_start(params, features, cfg)
    enc, state = expand_encoding(model, enc, k), repeat_rows(state, k)
    words = xp.full((rows,), vocab.start, dtype=xp.int64)
    ids = np.full((rows, max_length), vocab.pad, dtype=np.int64)
    done = np.zeros(rows, dtype=bool)
    lengths = np.zeros(rows, dtype=np.int64)
    for t in range(max_length):
        logp, state, _ = model.decode_step(params, enc, state, words)
        scaled = logp if temperature == 1.0 else logp / logp.dtype.type(temperature)
        p = xp.exp(scaled - scaled.max(axis=1, keepdims=True))
        cdf = xp.cumsum(p, axis=1, dtype=xp.float64)  # float64: u * total stays below the last entry
        u = counter_uniform(xp, key, (rows,), np.float64, start=t * rows_total + row_offset)
        threshold = (u * cdf[:, -1])[:, None]
        drawn = xp.minimum((cdf <= threshold).sum(axis=1), p.shape[1] - 1)  # the first entry past u * total
        w = to_numpy(drawn).astype(np.int64)
        live = ~done
        ids[live, t] = w[live]
        lengths[live] += 1
        done |= w == vocab.end
        if done.all():
            break
        words = xp.asarray(np.where(done, vocab.pad, w))
    return ids, lengths, done

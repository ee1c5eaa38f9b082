"""The self-critical reward: CIDEr-D of each sampled caption against its image's training references.

    r(sample) = CIDEr-D(sample + [<end>], refs + [<end>])   document frequencies over the train split's images

Each image's group of references is one document (as coco-caption counts them), and <end>
is a word on both sides: without it, a fragment ("a dog in the") that matches the start of
every reference is rewarded as well as the whole caption (Hu et al. 2023). A sample cut at
the maximum length has no <end>. The references' tf-idf vectors are computed once, when the
reward is built (scratchcap.metrics.CiderD); a step only counts the samples' n-grams.
"""
from __future__ import annotations

import numpy as np

from ..data.text import normalize
from ..data.vocab import END
from ..metrics import CiderD


def sample_words(vocab, ids, lengths):
    """The tokens of each sampled row, by name: <end> where the row ended, and <pad>, <start> or <unk> where
    they were drawn (they match no reference, so they cost reward)."""
    return [[vocab.words[i] for i in row[:n]] for row, n in zip(ids, lengths)]


class CiderReward:
    """reward(image_ids, word_lists) -> float64 array: CIDEr-D against the records' references."""

    def __init__(self, records):
        self.scorer = CiderD({r.image_id: [normalize(c) + [END] for c in r.captions] for r in records})

    def __call__(self, image_ids, word_lists):
        return np.array([self.scorer.score(i, w) for i, w in zip(image_ids, word_lists)], dtype=np.float64)

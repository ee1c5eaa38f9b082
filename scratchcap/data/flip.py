"""Left-right mirrored images as extra training data (``scratchcap train --flip``).

A mirrored photo is another photo of the same scene, except that what was on the left is now on the right,
so its captions are the originals with "left" and "right" exchanged. Its features come from a second cache
of mirrored images (``scratchcap features --flip``): VGG-16's filters are not mirror-symmetric, so mirroring
the feature grid is not the same thing.

Each epoch every training caption is, with probability 1/2, replaced by its mirrored twin: the coin is
seeded by (seed, epoch), so a resumed epoch draws the same coins, and an epoch holds as many captions as
without --flip. A twin's tokens have the original's length, so bucketing builds the same batches.

A mirrored image's id is FLIPPED + its id; ``FlipFeatures.get`` reads those from the mirrored cache.
"""
from __future__ import annotations

import numpy as np

FLIPPED = "<flipped>"  # '<' and '>' are not in any data set's file names
SWAPPED = ("left", "right")
FLIP_STREAM = 0x666C6970  # "flip": the coins' own stream, apart from shuffling's


def flipped_examples(examples, vocab):
    """The mirrored twin of each (image_id, tokens) example: FLIPPED + id, "left" and "right" exchanged."""
    ids = [vocab.index.get(w) for w in SWAPPED]
    swap = {a: b for a, b in (ids, ids[::-1]) if a is not None and b is not None}
    return [(FLIPPED + image_id, [swap.get(t, t) for t in tokens]) for image_id, tokens in examples]


def epoch_examples(examples, flipped, seed, epoch):
    """Epoch ``epoch``'s examples: each one, or with probability 1/2 its mirrored twin."""
    coins = np.random.default_rng([seed, epoch, FLIP_STREAM]).random(len(examples)) < 0.5
    return [f if c else e for e, f, c in zip(examples, flipped, coins)]


class FlipFeatures:
    """Features by image id from two caches: ``plain`` for ids, ``mirrored`` for FLIPPED + id."""

    def __init__(self, plain, mirrored):
        self.plain, self.mirrored = plain, mirrored
        if plain.region_shape != mirrored.region_shape:
            raise ValueError(f"the mirrored features have regions {mirrored.region_shape}, the others "
                             f"{plain.region_shape}")

    @property
    def region_shape(self):
        return self.plain.region_shape

    def get(self, ids):
        ids = list(ids)
        mirrored = [k for k, i in enumerate(ids) if i.startswith(FLIPPED)]
        if not mirrored:
            return self.plain.get(ids)
        plain = [k for k, i in enumerate(ids) if not i.startswith(FLIPPED)]
        out = np.empty((len(ids),) + tuple(self.region_shape), dtype=np.float32)
        out[mirrored] = self.mirrored.get([ids[k][len(FLIPPED):] for k in mirrored])
        if plain:
            out[plain] = self.plain.get([ids[k] for k in plain])
        return out

    def close(self):
        self.plain.close()
        self.mirrored.close()

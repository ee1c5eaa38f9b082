"""Padded caption batches over a feature cache.

Every caption of every image is one example, so an epoch sees all five captions
of each image. The order is a seeded permutation per epoch; with bucketing,
captions of similar length share a batch (less padding), and the batches are
then shuffled.

A batch is a dict:
    features   (N, L, D) float32   the image's cached VGG-16 regions
    captions   (N, T+1) int64      <start> w1 ... wk <end> <pad>...
    mask       (N, T) bool         True where captions[:, 1:] is a real token (the targets)
    image_ids  list of N ids
"""
from __future__ import annotations

import numpy as np

from ..feature_cache import FeatureCache
from .text import normalize

DEFAULT_MEMORY_LIMIT = 4 << 30


class Features:
    """Cached features by image id: in memory when they fit, streamed from HDF5 otherwise."""

    def __init__(self, cache_path, ids, in_memory="auto", memory_limit=DEFAULT_MEMORY_LIMIT):
        self.cache = FeatureCache(cache_path)
        missing = [i for i in ids if i not in self.cache]
        if missing:
            raise KeyError(f"{len(missing)} images are not in the feature cache {cache_path}, "
                           f"e.g. {missing[:3]}; run python -m scratchcap.features first")
        self.ids = sorted(set(ids), key=self.cache.index.get)  # cache order: contiguous reads
        need = len(self.ids) * int(np.prod(self.cache.region_shape)) * self.cache.dtype.itemsize
        self.in_memory = need <= memory_limit if in_memory == "auto" else bool(in_memory)
        self.rows = None
        if self.in_memory:
            self.rows = {i: k for k, i in enumerate(self.ids)}
            self.data = self.cache.read(self.ids, dtype=self.cache.dtype)

    @property
    def region_shape(self):
        return self.cache.region_shape

    def get(self, ids):
        if self.in_memory:
            return self.data[[self.rows[i] for i in ids]].astype(np.float32)
        return self.cache.read(list(ids), dtype=np.float32)

    def close(self):
        self.cache.close()


def encode_records(records, vocab, max_length=None):
    """[(image_id, [<start>, ..., <end>])] for every caption of every record."""
    return [(r.image_id, vocab.encode(normalize(c), max_length)) for r in records for c in r.captions]


def epoch_batches(examples, batch_size, seed, epoch, bucket=False):
    """Lists of example indices for one epoch, shuffled by (seed, epoch)."""
    rng = np.random.default_rng([seed, epoch])
    order = rng.permutation(len(examples))
    if not bucket:
        return [order[i:i + batch_size].tolist() for i in range(0, len(order), batch_size)]
    window = batch_size * 50
    batches = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start:start + window], key=lambda k: len(examples[k][1]))
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[k] for k in rng.permutation(len(batches))]


def make_batch(examples, indices, features, pad_id=0, length=None):
    """The batch of examples ``indices``; ``length`` pads the captions to T+1 = length (a data-parallel shard
    pads to its whole batch's longest caption, so that every rank's arrays, and dropout masks, have one shape)."""
    ids = [examples[k][0] for k in indices]
    caps = [examples[k][1] for k in indices]
    T1 = max(len(c) for c in caps) if length is None else length
    captions = np.full((len(caps), T1), pad_id, dtype=np.int64)
    for n, c in enumerate(caps):
        captions[n, :len(c)] = c
    return dict(features=features.get(ids), captions=captions, mask=captions[:, 1:] != pad_id, image_ids=ids)


def iterate_batch_indices(examples, batch_size, seed, epoch, bucket=False, start=0):
    """Yield (batch number, example indices) for one epoch, from batch number ``start`` on (for resuming)."""
    for b, indices in enumerate(epoch_batches(examples, batch_size, seed, epoch, bucket)):
        if b >= start:
            yield b, indices


def iterate_batches(examples, features, batch_size, seed, epoch, bucket=False, start=0):
    """Yield (batch number, batch) for one epoch, from batch number ``start`` on (for resuming)."""
    for b, indices in iterate_batch_indices(examples, batch_size, seed, epoch, bucket, start):
        yield b, make_batch(examples, indices, features)

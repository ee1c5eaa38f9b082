"""A training step's rows split over the pool's threads, as the MPI ranks split a batch between processes.

Notation:
    R        rows of the batch: its captions (N), or a self-critical step's samples (N·k)
    n        the pool's thread count (scratchcap.threads)
    shard t  rows lo_t .. hi_t - 1 (distributed.shard_bounds(R, t, n)): consecutive, in thread order

    loss, grads = sum over t of model.loss_and_grads(params, batch[lo_t:hi_t])   (in shard order)

Each thread runs the model's whole step on its shard, every operator unsplit, instead of every
operator being split over the n threads: a decoder step's operators are small (a GRU cell on
(64, 1536) gates), and handing each to a thread costs more than a thread's share of it. On the
2-core Xeon a gru-attention training step of 64 captions took 677 ms this way against 816 ms split
by operator (benchmarks/results/RESULTS.md).

The sum is the one-thread step, to float rounding, for the reasons it is the one-process step
under MPI: every shard divides its losses by the whole batch's tokens and captions
(``tokens_total``, ``captions_total``; taken from the mask where the batch has none), and its
dropout masks are its rows of the whole batch's draw (distributed.ShardRng), each thread drawing
the same keys from its own copy of the step's generator, which then moves on as one draw would.
"""
from __future__ import annotations

import numpy as np

from . import threads
from .backend import get_array_module
from .distributed.shard import ShardRng, shard_bounds

# Fewer rows per thread leave each GEMM too few rows to run well; then the operators are split instead.
ROWS_PER_THREAD = 16


def shards(rows: int, xp=np):
    """[(lo, hi)] for each pool thread, or None where the operators should be split instead (one thread, CuPy,
    inside the pool already, or under ROWS_PER_THREAD rows for each thread)."""
    n = threads.count()
    if n < 2 or xp is not np or threads.in_pool() or rows < n * ROWS_PER_THREAD:
        return None
    return [shard_bounds(rows, t, n) for t in range(n)]


def loss_and_grads(model, params, batch, cfg, rng=None, train=True):
    """``model.loss_and_grads(params, batch, cfg, rng, train)``, its rows split over the pool's threads where
    there are enough of them; (loss, grads, info) as the model gives them (info's arrays joined by rows, its
    numbers added). ``rng``: a NumPy Generator, a ShardRng (this rank's rows of a larger batch) or None."""
    rows = batch["captions"].shape[0]
    parts = shards(rows, get_array_module(batch["features"]))
    generator = getattr(rng, "generator", rng)
    if parts is None or not (rng is None or isinstance(generator, np.random.Generator)):
        return model.loss_and_grads(params, batch, cfg, rng, train=train)
    whole = dict(batch)
    whole.setdefault("tokens_total", max(int(batch["mask"].sum()), 1))
    whole.setdefault("captions_total", rows)
    offset = getattr(rng, "row_offset", 0)
    copies = [None if rng is None else _copy(generator) for _ in parts]

    def step(t):
        lo, hi = parts[t]
        shard = {k: (v[lo:hi] if _by_rows(v, rows) else v) for k, v in whole.items()}
        shard_rng = None if rng is None else ShardRng(copies[t], offset + lo)
        return model.loss_and_grads(params, shard, cfg, shard_rng, train=train)
    results = threads.map_pieces(step, range(len(parts)))
    if rng is not None:  # every copy drew the same keys: the step's generator moves on as one draw would
        generator.bit_generator.state = copies[0].bit_generator.state
    return _sum(results)


def _copy(generator):
    twin = np.random.Generator(type(generator.bit_generator)(0))
    twin.bit_generator.state = generator.bit_generator.state
    return twin


def _by_rows(value, rows):
    return not isinstance(value, (str, bytes, int, float)) and hasattr(value, "__len__") and len(value) == rows \
        and getattr(value, "ndim", 1) > 0


def _sum(results):
    """The shards' (loss, grads, info) added in shard order: gradients over the pool, a parameter per piece."""
    loss = sum(float(r[0]) for r in results)
    names = sorted(results[0][1], key=lambda k: -results[0][1][k].size)  # the largest first, dealt round-robin
    grads = {}

    def add(name, _):
        total = results[0][1][name] + results[1][1][name]
        for r in results[2:]:
            total += r[1][name]
        grads[name] = total
    threads.parallel_for(add, names)
    info = {}
    for key, value in results[0][2].items():
        if getattr(value, "ndim", 0) > 0:
            info[key] = _concatenate([r[2][key] for r in results])
        else:
            info[key] = sum(float(r[2][key]) for r in results)
    return loss, {name: grads[name] for name in results[0][1]}, info


def _concatenate(arrays):
    return get_array_module(arrays[0]).concatenate(arrays, axis=0)

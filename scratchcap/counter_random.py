"""Uniform numbers computed where the array lives, from a key and each element's index.

Notation:
    key   a 64-bit integer, drawn once per call from the caller's NumPy generator
    i     the flat index of an element, 0 .. n-1
    z_i   SplitMix64's output function (Steele, Lea and Flood, 2014) applied to
          key + i * gamma (mod 2^64), gamma = 0x9E3779B97F4A7C15
    u     float32: the top 24 bits of each 32-bit half of z, times 2^-24 (two per z);
          float64: the top 53 bits of z, times 2^-53; both in [0, 1)

Only integer arithmetic, so NumPy and CuPy give the same bits. Dropout needs one
uniform per activation of the (N, L, D) features every training step: at batch 64
that is 6.4 million numbers, which NumPy's generator drew in 27 ms on the project's
CPU, then a 51 MB copy, while the GPU waited. Here the draw is a few elementwise
kernels on the device (on NumPy: 16 ms in cache-sized blocks, once per step).
"""
from __future__ import annotations

import math

import numpy

from . import row_blocks

GAMMA = 0x9E3779B97F4A7C15
_MIX = ((30, 0xBF58476D1CE4E5B9), (27, 0x94D049BB133111EB))


def splitmix64(xp, key: int, count: int, start: int = 0):
    """z_start .. z_{start+count-1} (uint64, module xp) for ``key``; see the module notation."""
    u64 = xp.uint64
    z = xp.arange(start, start + count, dtype=u64)
    z *= u64(GAMMA)
    z += u64(key % 2**64)
    for shift, multiplier in _MIX:
        z ^= z >> u64(shift)
        z *= u64(multiplier)
    z ^= z >> u64(31)
    return z


def counter_uniform(xp, key: int, shape, dtype, start: int = 0):
    """Uniform [0, 1) samples of ``shape`` and ``dtype`` (float32 or float64) in module xp.

    They are samples start .. start + n - 1 of the key's stream, so a slice of rows of a
    larger draw can be computed alone (a data-parallel rank's shard of a batch).
    The hashes are computed in blocks of consecutive indices (scratchcap.row_blocks):
    on NumPy in cache-sized pieces, on CuPy in one piece.
    """
    dtype = numpy.dtype(dtype)
    if dtype not in (numpy.float32, numpy.float64):
        raise ValueError(f"counter_uniform: float32 or float64, got {dtype}")
    n = math.prod(shape)
    per_hash = 2 if dtype == numpy.float32 else 1  # samples one 64-bit hash gives
    lead, first_hash = start % per_hash, start // per_hash  # a float32 start may fall in a hash's second half
    hashes = -(-(lead + n) // per_hash)
    u = xp.empty(lead + n, dtype=dtype)

    def fill(s):
        first, stop, _ = s.indices(hashes)
        z = splitmix64(xp, key, stop - first, first_hash + first)
        out = u[first * per_hash:stop * per_hash]
        if per_hash == 2:
            halves = z.view(xp.uint32)[:out.size]  # little-endian: each hash's low half first
            xp.right_shift(halves, xp.uint32(8), out=halves)
            out[...] = halves
            out *= numpy.float32(2.0 ** -24)
        else:
            z >>= xp.uint64(11)
            out[...] = z
            out *= 2.0 ** -53
    row_blocks.run(fill, hashes, xp, 1)
    return (u[lead:] if lead else u).reshape(shape)

"""Winograd's minimal filtering F(2x2, 3x3): the forward pass of a 3x3, stride-1 conv2d in 2.25x fewer multiplies.

Lavin and Gray, "Fast Algorithms for Convolutional Neural Networks" (CVPR 2016). The output
is cut into 2x2 tiles; each needs the 4x4 input tile around it, and

    Y = A^T [ (G w G^T) * (B^T d B) ] A        (* elementwise, per channel pair)

gives the tile with 16 multiplies per (c, f) instead of im2col's 36. Summed over c, the
elementwise products become 16 GEMMs, one per tile position (a, b).

Notation:
    N   batch size        C  input channels      Th, Tw  output tiles down and across
    P   tiles, N*Th*Tw    F  output channels     a, b    position in a 4x4 tile
    xpad (N, 2Th+2, 2Tw+2, C)  padded input; tile (ty, tx) reads rows 2ty..2ty+3, cols 2tx..2tx+3
    w    (3, 3, C, F)          kernel, HWIO
    U    (16, C, F)            G w G^T for every (c, f), the 4x4 flattened as 4a + b
    V    (4, 4, P, C)          B^T d B for every tile and channel
    M    (4, 4, P, F)          M[a, b] = V[a, b] @ U[4a + b]
    out  (N, 2Th, 2Tw, F)      A^T M A, tile by tile

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

B and A hold only 0 and +-1, so the transforms are additions; the rounding error stays
within a few float32 ulps of im2col's. The result is the same function as im2col's, so
conv2d_backward serves both.
"""
from __future__ import annotations

import numpy as np

from .. import threads
from ..backend import get_array_module
from ..threads import matmul

_G = np.array([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]])


def winograd_kernel(w):
    """w (3, 3, C, F) -> U (16, C, F) = G w G^T per channel pair; compute once per kernel."""
    if w.ndim != 4 or w.shape[:2] != (3, 3):
        raise ValueError(f"winograd_kernel: needs a 3x3 kernel (3, 3, C, F), got shape {tuple(w.shape)}")
    xp = get_array_module(w)
    g = xp.asarray(_G, dtype=w.dtype)
    gw = xp.tensordot(g, w, axes=([1], [0]))      # (4a, 3j, C, F)
    u = xp.tensordot(gw, g, axes=([1], [1]))      # (4a, C, F, 4b)
    return xp.ascontiguousarray(u.transpose(0, 3, 1, 2)).reshape(16, w.shape[2], w.shape[3])


def _input_transform(xpad, r0, r1, t, v):
    """v (4, 4, n, r1-r0, Tw, C) = B^T d B for the tiles in tile rows r0..r1 of xpad (n, 2Th+2, 2Tw+2, C).

    B^T runs down whole padded rows first (t (4, n, r1-r0, 2Tw+2, C) is scratch), then
    across them: neighbouring tiles share two columns, so this does half the work of
    transforming each tile on its own.
    """
    xp = get_array_module(v)
    tw = v.shape[4]
    d = [xpad[:, 2 * r0 + k:2 * r1 + k:2] for k in range(4)]   # row k of every tile: (n, th, 2Tw+2, C)
    xp.subtract(d[0], d[2], out=t[0])
    xp.add(d[1], d[2], out=t[1])
    xp.subtract(d[2], d[1], out=t[2])
    xp.subtract(d[1], d[3], out=t[3])
    e = [t[:, :, :, k:k + 2 * tw:2] for k in range(4)]          # column k of every tile: (4, n, th, Tw, C)
    xp.subtract(e[0], e[2], out=v[:, 0])
    xp.add(e[1], e[2], out=v[:, 1])
    xp.subtract(e[2], e[1], out=v[:, 2])
    xp.subtract(e[1], e[3], out=v[:, 3])


def _output_transform(m, s, y):
    """m (4, 4, n, th, Tw, F) -> y (2, 2, n, th, Tw, F) view into out = A^T m A; s is scratch."""
    xp = get_array_module(m)
    xp.add(m[0], m[1], out=s[0])
    s[0] += m[2]
    xp.subtract(m[1], m[2], out=s[1])
    s[1] -= m[3]
    xp.add(s[:, 0], s[:, 1], out=y[:, 0])
    y[:, 0] += s[:, 2]
    xp.subtract(s[:, 1], s[:, 2], out=y[:, 1])
    y[:, 1] -= s[:, 3]


def winograd_conv3x3(xpad, u, b, out, blocks, workspace, relu, chunk_bytes):
    """Fill out (N, 2Th, 2Tw, F) with the 3x3, stride-1 convolution of xpad by U, plus b.

    blocks lists (images, first tile row, end tile row): each block is one batch of 16
    GEMMs, as large as its budget allows, since small GEMMs run slowly. Its input
    transform goes in chunks of about chunk_bytes of scratch, which stay in cache. On NumPy
    the blocks run on the thread pool (scratchcap.threads), each with scratch of its own.
    A single block runs each of its steps on the pool instead: its transforms by chunks of
    tile rows, its 16 GEMMs (threads.matmul) a share of them per thread, so that each thread
    reads its share of U, not all of it (see conv._winograd_forward).
    """
    xp = get_array_module(xpad)
    f, c = u.shape[2], xpad.shape[3]
    tw, wp = out.shape[2] // 2, xpad.shape[2]
    out_tiles = out.reshape(out.shape[0], out.shape[1] // 2, 2, tw, 2, f)  # out is contiguous: a view
    step = max(1, chunk_bytes // (4 * wp * c * xpad.dtype.itemsize))

    def block(piece, worker):  # one batch of 16 GEMMs and its transforms; scratch of the worker's own
        images, r0, r1 = piece
        part = xpad[images]
        n, th = part.shape[0], r1 - r0
        v = workspace.get(xp, f"winograd_v{worker}", (4, 4, n, th, tw, c), xpad.dtype)
        m = workspace.get(xp, f"winograd_m{worker}", (4, 4, n, th, tw, f), xpad.dtype)
        s = workspace.get(xp, f"winograd_s{worker}", (2, 4, n, th, tw, f), xpad.dtype)
        if n * th <= step:  # the whole block in one chunk (on a GPU: one transform per layer)
            t = workspace.get(xp, f"winograd_t{worker}", (4, n, th, wp, c), xpad.dtype)
            _input_transform(part, r0, r1, t, v)
        else:
            chunks = [(i, a, min(a + step, r1)) for i in range(n) for a in range(r0, r1, step)]

            def chunk(piece, inner):  # inside the pool inner is 0; a single block runs here with worker 0
                i, a, z = piece
                t = workspace.get(xp, f"winograd_t{worker + inner}", (4, 1, z - a, wp, c), xpad.dtype)
                _input_transform(part[i:i + 1], a, z, t, v[:, :, i:i + 1, a - r0:z - r0])
            threads.parallel_for(chunk, chunks, xp, size=v.size)
        p = n * th * tw
        matmul(v.reshape(16, p, c), u, out=m.reshape(16, p, f))
        y = out_tiles[images, r0:r1].transpose(2, 4, 0, 1, 3, 5)   # (2, 2, n, th, Tw, F)

        def finish(rows, _):  # bias, A^T M A and ReLU of tile rows ``rows``
            mr = m[:, :, :, rows]
            mr[1, 1] += b                                 # A^T e1 e1^T A is all ones: b reaches all 4 outputs
            _output_transform(mr, s[:, :, :, rows], y[:, :, :, rows])
            if relu:
                target = out[images, 2 * (r0 + rows.start):2 * (r0 + rows.stop)]
                xp.maximum(target, 0, out=target)
        # Pieces only where they run at once: inside the pool (or on CuPy) they would run one after the other.
        whole = xp is not np or threads.in_pool()
        threads.parallel_for(finish, [slice(0, th)] if whole else threads.split(th), xp, size=m.size)
    # Sized by V and M, not by the output: block5's at batch 1 (100k elements) stayed on one thread under
    # MIN_ELEMENTS, for GEMMs of 400 MFLOP.
    tiles = out.shape[0] * out.shape[1] // 2 * tw
    threads.parallel_for(block, blocks, xp, size=16 * tiles * (c + f))

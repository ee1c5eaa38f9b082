"""2-D convolution (cross-correlation, as in Keras and PyTorch) as one GEMM over im2col columns.

Notation:
    N   batch size               C   input channels
    H   input height             F   output channels (filters)
    W   input width              KH  kernel height
    Ho  output height            KW  kernel width
    Wo  output width             s   stride
    x     (N, H, W, C)     channels-last input
    w     (KH, KW, C, F)   kernel in HWIO order, as Keras stores it
    b     (F,)             bias
    cols  (N, Ho, Wo, KH, KW, C)  every receptive field laid out as a row
    out   (N, Ho, Wo, F) = cols.reshape(N*Ho*Wo, KH*KW*C) @ w.reshape(KH*KW*C, F) + b

The Python loops run over the KH*KW kernel offsets (9 for VGG), never over pixels.
"""
from __future__ import annotations

import math

import numpy as np

from .. import row_blocks, threads
from ..backend import get_array_module
from ..threads import matmul
from . import _checks
from .winograd import winograd_conv3x3


def conv_output_size(size: int, k: int, stride: int, padding) -> tuple[int, int, int]:
    """(out_size, pad_before, pad_after) along one axis.

    'same' follows Keras/TensorFlow: out = ceil(size / stride), with any odd
    padding pixel going after. 'valid' pads nothing. An int pads both sides.
    """
    if padding == "same":
        out = -(-size // stride)
        total = max((out - 1) * stride + k - size, 0)
        return out, total // 2, total - total // 2
    if padding == "valid":
        pad = 0
    elif isinstance(padding, int) and not isinstance(padding, bool) and padding >= 0:
        pad = padding
    else:
        raise ValueError(f"conv2d: padding must be 'same', 'valid' or an int >= 0, got {padding!r}")
    out = (size + 2 * pad - k) // stride + 1
    return out, pad, pad


def _window(start: int, count: int, stride: int) -> slice:
    """Slice picking ``count`` positions from ``start`` every ``stride``."""
    return slice(start, start + stride * (count - 1) + 1, stride)


class Workspace:
    """Scratch buffers reused across calls.

    Writing into freshly allocated memory costs page faults; an inference loop
    (VGG-16 over thousands of images) passes one Workspace to every conv2d call
    so that the padded input and the im2col columns reuse the same memory.
    Scratch of one tag shares one flat buffer, grown to the largest request, so
    layers of different shapes do not each hold their own; ``zeros=True`` buffers
    (whose border must stay zero) are kept per exact shape.
    """

    def __init__(self):
        self._buffers = {}

    def get(self, xp, tag: str, shape, dtype, zeros: bool = False):
        shape = tuple(int(n) for n in shape)
        if zeros:
            key = (xp.__name__, tag, shape, str(dtype))
            buf = self._buffers.get(key)
            if buf is None:
                buf = self._buffers[key] = xp.zeros(shape, dtype=dtype)
            return buf
        size = math.prod(shape)
        key = (xp.__name__, tag, str(dtype))
        buf = self._buffers.get(key)
        if buf is None or buf.size < size:
            buf = self._buffers[key] = xp.empty(size, dtype=dtype)
        return buf[:size].reshape(shape)


def _pad(x, pads, workspace=None):
    (pt, pb), (pl, pr) = pads
    if pt == pb == pl == pr == 0:
        return x
    xp = get_array_module(x)
    N, H, W, C = x.shape
    shape = (N, H + pt + pb, W + pl + pr, C)
    if workspace is None:
        xpad = xp.zeros(shape, dtype=x.dtype)
    else:
        # The border stays zero. Keyed by the pads too: another split of the same
        # shape would find old interior values in its border.
        xpad = workspace.get(xp, f"pad{pads}", shape, x.dtype, zeros=True)

    def rows(s):  # a layer's whole input is copied here: in blocks of rows, on the pool
        start, stop, _ = s.indices(H)
        xpad[:, pt + start:pt + stop, pl:pl + W, :] = x[:, start:stop]
    row_blocks.run(rows, H, xp, N * W * C)
    return xpad


def im2col(x, kh: int, kw: int, stride: int, pads, out_hw, out=None):
    """x (N, H, W, C) -> cols (N, Ho, Wo, KH, KW, C); pads = ((top, bottom), (left, right))."""
    xp = get_array_module(x)
    N, _, _, C = x.shape
    Ho, Wo = out_hw
    xpad = _pad(x, pads)
    cols = xp.empty((N, Ho, Wo, kh, kw, C), dtype=x.dtype) if out is None else out
    _fill_cols(cols, xpad, stride)
    return cols


def _fill_cols(cols, xpad, stride):
    """cols[:, :, :, i, j, :] = the (i, j)-shifted, strided view of the padded input.

    One copy per kernel row i: a strided view of (N, Ho, Wo, KW, C) windows, whose
    (KW, C) axes are KW*C contiguous floats at stride 1, so the copy moves runs of
    KW*C values instead of C (3 for the first VGG-16 layer).
    """
    xp = get_array_module(xpad)
    N, Ho, Wo, kh, kw, C = cols.shape
    for i in range(kh):
        rows = xpad[:, _window(i, Ho, stride)]
        s = rows.strides
        cols[:, :, :, i] = xp.lib.stride_tricks.as_strided(
            rows, shape=(N, Ho, Wo, kw, C), strides=(s[0], s[1], s[2] * stride, s[2], s[3]))


def col2im(dcols, x_shape, stride: int, pads):
    """Adjoint of im2col: dcols (N, Ho, Wo, KH, KW, C) -> dx (N, H, W, C), overlaps summed."""
    xp = get_array_module(dcols)
    N, H, W, C = x_shape
    _, Ho, Wo, kh, kw, _ = dcols.shape
    (pt, pb), (pl, pr) = pads
    dxpad = xp.zeros((N, H + pt + pb, W + pl + pr, C), dtype=dcols.dtype)
    for i in range(kh):
        for j in range(kw):
            dxpad[:, _window(i, Ho, stride), _window(j, Wo, stride), :] += dcols[:, :, :, i, j, :]
    return dxpad[:, pt:pt + H, pl:pl + W, :]


# Largest im2col block (bytes) built at once when a Workspace is given; big enough for an
# efficient GEMM, small enough to stay in a core's cache and not to hold 9x the input in memory.
# VGG-16's block1_conv2 at batch 1 on a 2-core EPYC (1 MB L2 each, 16 MB L3 shared): 61 / 33 ms
# on 1 / 2 threads at 2 MB, 61 / 43 at 8 MB, where the two threads' blocks no longer fit the L3.
BLOCK_BYTES = 2 << 20
# Winograd: V and M of one batch of GEMMs (large: small GEMMs run slowly), and the
# scratch of one input-transform chunk (small: it should stay in cache).
WINOGRAD_BLOCK_BYTES = 64 << 20
WINOGRAD_CHUNK_BYTES = 2 << 20
# A GPU has no cache to fit and pays a kernel launch per operation of every block, so
# there the budgets above grow to this: a layer of a VGG-16 batch of 8 is one block.
GPU_BLOCK_BYTES = 1 << 30


def _budget(xp, cpu_bytes):
    return cpu_bytes if xp is np else max(cpu_bytes, GPU_BLOCK_BYTES)


def _row_blocks(n_images, rows, row_bytes, budget, parts=1):
    """[(images, first row, end row)] covering the batch, each block within the budget where it can be,
    and at least ``parts`` blocks (one per thread of the pool) where there are rows enough.

    Whole images, where one fits the budget and there is one for every part: the batch is first cut into
    ``parts`` even runs of images, one per thread, then each run into blocks within the budget, listed so
    that parallel_for's worker w (items w, w + parts, ...) takes run w. Blocks cut from the batch alone put
    10 of a VGG-16 batch of 16 on one thread and 6 on the other in block4 (blocks of 5, 5, 5 and 1), and
    block5's 16 images, one block, went image by image. Otherwise, blocks of rows of one image each, all of one
    size to a row.
    """
    if rows * row_bytes <= budget and n_images >= parts:
        runs = threads.split(n_images, parts)
        per_run = -(-max(r.stop - r.start for r in runs) // (budget // (rows * row_bytes)))
        cuts = [[slice(r.start + s.start, r.start + s.stop) for s in threads.split(r.stop - r.start, per_run)]
                for r in runs]
        return [(run[j], 0, rows) for j in range(per_run) for run in cuts if j < len(run)]
    per_image = max(-(-rows // max(1, budget // row_bytes)), -(-parts // n_images))   # blocks in each image
    if n_images * per_image < 4 * parts:
        # Few blocks: a whole number for each thread. block1_conv1's 224 rows at batch 1, in blocks of 85, 85
        # and 54, gave one thread 139 of them.
        per_thread = -(-n_images * per_image // parts)
        per_image = min(rows, -(-per_thread * parts // n_images))
    return [(slice(n, n + 1), r.start, r.stop) for n in range(n_images) for r in threads.split(rows, per_image)]


def _parts(xp):
    return threads.count() if xp is np else 1


def conv2d_forward(x, w, b, *, stride: int = 1, padding="same", workspace=None, relu=False, winograd=None):
    """Returns (out, cache) with out (N, Ho, Wo, F).

    x (N, H, W, C), w (KH, KW, C, F), b (F,); padding is 'same', 'valid' or an int.
    The cache keeps x, not the columns, so a forward pass holds only one column
    buffer at a time; the backward rebuilds them. With a ``Workspace``, the
    columns are built in blocks of output rows into reused buffers (inference).
    ``relu=True`` (inference) applies max(out, 0) to each block while it is still
    in cache, and returns no cache: there is no backward through the fused pair.
    ``winograd=winograd_kernel(w)`` (3x3 kernels, stride 1) computes the same
    output by Winograd's F(2x2, 3x3) instead of im2col (see ops/winograd.py).
    """
    _checks.floats("conv2d", x=x, w=w, b=b)
    _checks.ndim("conv2d", "x", x, 4, "N, H, W, C")
    _checks.ndim("conv2d", "w", w, 4, "KH, KW, C, F")
    kh, kw, c, f = w.shape
    if x.shape[3] != c:
        raise ValueError(
            f"conv2d: x has {x.shape[3]} channels (shape {tuple(x.shape)}) but w expects "
            f"{c} (shape {tuple(w.shape)}, HWIO)")
    _checks.shape("conv2d", "b", b, (f,), "F", "w")
    if not isinstance(stride, int) or stride < 1:
        raise ValueError(f"conv2d: stride must be an int >= 1, got {stride!r}")
    N, H, W, _ = x.shape
    Ho, pt, pb = conv_output_size(H, kh, stride, padding)
    Wo, pl, pr = conv_output_size(W, kw, stride, padding)
    if Ho < 1 or Wo < 1:
        raise ValueError(
            f"conv2d: x of shape {tuple(x.shape)} is smaller than the {kh}x{kw} kernel "
            f"with padding {padding!r}")
    pads = ((pt, pb), (pl, pr))
    cache = None if relu else (x, w, stride, pads)
    if winograd is not None:
        return _winograd_forward(x, w, b, winograd, stride, pads, (Ho, Wo), workspace, relu), cache
    xp = get_array_module(x)
    w2 = w.reshape(kh * kw * c, f)
    if workspace is None:
        cols = im2col(x, kh, kw, stride, pads, (Ho, Wo))
        out = matmul(cols.reshape(N * Ho * Wo, kh * kw * c), w2)
        out += b
        if relu:
            xp.maximum(out, 0, out=out)
        return out.reshape(N, Ho, Wo, f), cache

    xpad = _pad(x, pads, workspace)
    out = xp.empty((N, Ho, Wo, f), dtype=x.dtype)

    def block(piece, worker):  # columns, GEMM, bias and ReLU of one block while it is in cache
        images, r0, r1 = piece
        part = xpad[images, r0 * stride:(r1 - 1) * stride + kh]
        n = part.shape[0]
        cols = workspace.get(xp, f"cols{worker}", (n, r1 - r0, Wo, kh, kw, c), x.dtype)
        _fill_cols(cols, part, stride)
        target = out[images, r0:r1].reshape(n * (r1 - r0) * Wo, f)
        matmul(cols.reshape(-1, kh * kw * c), w2, out=target)
        target += b
        if relu:
            xp.maximum(target, 0, out=target)
    blocks = _row_blocks(N, Ho, Wo * kh * kw * c * x.dtype.itemsize, _budget(xp, BLOCK_BYTES), _parts(xp))
    threads.parallel_for(block, blocks, xp, size=N * Ho * Wo * kh * kw * c)  # the columns: see winograd_conv3x3
    return out, cache


def _winograd_forward(x, w, b, u, stride, pads, out_hw, workspace, relu):
    """conv2d_forward's output by F(2x2, 3x3): pads to whole 2x2 tiles, then cuts the extra row/column off."""
    kh, kw, c, f = w.shape
    if (kh, kw) != (3, 3) or stride != 1:
        raise ValueError(f"conv2d: winograd needs a 3x3 kernel and stride 1, got {kh}x{kw}, stride {stride}")
    if tuple(u.shape) != (16, c, f) or u.dtype != w.dtype:
        raise ValueError(
            f"conv2d: winograd kernel has shape {tuple(u.shape)} ({u.dtype}); expected "
            f"(16, {c}, {f}) ({w.dtype}) from winograd_kernel(w)")
    xp = get_array_module(x)
    workspace = Workspace() if workspace is None else workspace
    N = x.shape[0]
    Ho, Wo = out_hw
    th, tw = -(-Ho // 2), -(-Wo // 2)
    (pt, pb), (pl, pr) = pads
    xpad = _pad(x, ((pt, pb + 2 * th - Ho), (pl, pr + 2 * tw - Wo)), workspace)  # whole tiles
    out = xp.empty((N, 2 * th, 2 * tw, f), dtype=x.dtype)
    tile_row_bytes = 16 * tw * (c + f) * x.dtype.itemsize   # V and M for one row of tiles
    # Where U (16, C, F) outweighs V (16, P, C), as in block4 and block5 at batch 1, one block whose steps each run
    # on the pool: blocks of tiles, one per thread, would each read all of U, which comes from memory.
    parts = 1 if f > N * th * tw else _parts(xp)
    blocks = _row_blocks(N, th, tile_row_bytes, _budget(xp, WINOGRAD_BLOCK_BYTES), parts)
    winograd_conv3x3(xpad, u, b, out, blocks, workspace, relu, _budget(xp, WINOGRAD_CHUNK_BYTES))
    if (2 * th, 2 * tw) != (Ho, Wo):
        out = xp.ascontiguousarray(out[:, :Ho, :Wo])
    return out


def conv2d_backward(dout, cache):
    """dout (N, Ho, Wo, F) -> (dx (N, H, W, C), dw (KH, KW, C, F), db (F,))."""
    x, w, stride, pads = cache
    kh, kw, c, f = w.shape
    N, Ho, Wo, _ = dout.shape
    d2 = dout.reshape(N * Ho * Wo, f)
    cols = im2col(x, kh, kw, stride, pads, (Ho, Wo)).reshape(N * Ho * Wo, kh * kw * c)
    dw = matmul(cols.T, d2).reshape(w.shape)
    db = d2.sum(axis=0)
    dcols = matmul(d2, w.reshape(kh * kw * c, f).T).reshape(N, Ho, Wo, kh, kw, c)
    dx = col2im(dcols, x.shape, stride, pads)
    return dx, dw, db

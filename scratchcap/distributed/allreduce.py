"""One allreduce per training step: every gradient and the loss in one flat, reused buffer, in sorted name order.

Notation: the step's gradients {name: array} keyed like the parameters (the same names
as checkpoints and optimizer state), and extra scalars (the loss).

    buffer = [g[name_1].ravel(), ..., g[name_k].ravel(), scalars]      one array, allocated once
    Allreduce(IN_PLACE, buffer, SUM)                                    one call, not one per parameter
    g[name] = buffer[offset(name) : ...].reshape(shape)                 views into the buffer

Each rank's gradients are already divided by the whole batch's token count (the loss
layer's ``normalizer``), so the sum is the one-process gradient. On CuPy the buffer lives
on the device and the sum runs through NCCL where a communicator was made (its unique id
broadcast over MPI); otherwise through host memory over MPI, which works with any MPI
build, CUDA-aware or not.
"""
from __future__ import annotations

import math

import numpy as np

from ..backend import get_array_module, to_device, to_numpy


class GradientAllreducer:
    def __init__(self, world, nccl=None):
        self.world, self.nccl = world, nccl
        self.layout, self.buffer = None, None

    def _make(self, grads, n_scalars, xp, dtype):
        names = sorted(grads)
        offsets, at = {}, 0
        for name in names:
            size = math.prod(grads[name].shape)
            offsets[name] = (at, at + size, tuple(grads[name].shape))
            at += size
        self.layout = (names, offsets, at, n_scalars, xp, dtype)
        self.buffer = xp.empty(at + n_scalars, dtype=dtype)

    def __call__(self, grads: dict, *scalars):
        """(summed grads, summed scalars): the sums over every rank; one process gets its own back."""
        if self.world.size == 1:
            return grads, tuple(float(s) for s in scalars)
        first = grads[min(grads)]
        xp, dtype = get_array_module(first), first.dtype
        if self.layout is None or self.layout[0] != sorted(grads) or self.layout[3] != len(scalars) \
                or self.layout[4] is not xp or self.layout[5] != dtype:
            self._make(grads, len(scalars), xp, dtype)
        names, offsets, total, _, _, _ = self.layout
        buf = self.buffer
        for name in names:
            lo, hi, _ = offsets[name]
            buf[lo:hi] = grads[name].reshape(-1)
        if scalars:
            buf[total:] = xp.asarray(scalars, dtype=dtype)
        self._sum(buf, xp)
        out = {name: buf[offsets[name][0]:offsets[name][1]].reshape(offsets[name][2]) for name in names}
        return out, tuple(float(v) for v in to_numpy(buf[total:]))

    def _sum(self, buf, xp):
        if xp is np:
            self.world.allreduce_(buf)
        elif self.nccl is not None:
            self.nccl.allreduce_(buf)
        else:  # through host memory: any MPI build
            host = np.ascontiguousarray(to_numpy(buf))
            self.world.allreduce_(host)
            buf[...] = to_device(host, "gpu")


class NcclAllreduce:
    """An NCCL communicator over the job's ranks, one GPU each (cupy.cuda.nccl; the unique id over MPI)."""

    def __init__(self, world):
        from cupy.cuda import nccl

        self.nccl = nccl
        uid = nccl.get_unique_id() if world.rank == 0 else None
        uid = world.bcast(uid)
        self.comm = nccl.NcclCommunicator(world.size, uid, world.rank)

    def allreduce_(self, buf):
        import cupy

        kinds = {np.dtype("float32"): self.nccl.NCCL_FLOAT32, np.dtype("float64"): self.nccl.NCCL_FLOAT64}
        stream = cupy.cuda.get_current_stream()
        self.comm.allReduce(buf.data.ptr, buf.data.ptr, buf.size, kinds[np.dtype(buf.dtype)], self.nccl.NCCL_SUM,
                            stream.ptr)
        stream.synchronize()


def make_allreducer(world, device, log=print, nccl="auto"):
    """The step's allreducer: NCCL between GPUs where it can be had, else MPI through host memory."""
    if world.size == 1 or device != "gpu" or nccl == "off":
        return GradientAllreducer(world)
    try:
        return GradientAllreducer(world, NcclAllreduce(world))
    except Exception as exc:  # no NCCL in this CuPy build, or it refused: host memory is always there
        log(f"NCCL is not available ({type(exc).__name__}: {exc}); gradients go through host memory over MPI")
        return GradientAllreducer(world)


def params_checksum(params) -> float:
    """A cheap fingerprint of every parameter (a float64 sum of sums), to see that the ranks still agree."""
    return float(sum(float(to_numpy(params[k]).astype(np.float64).sum()) * (i + 1)
                     for i, k in enumerate(sorted(params))))

"""Who we are among the processes of a job: one process, or the ranks of an MPI job (mpi4py).

    world = get_world("auto")      # under mpiexec with 2+ ranks: MPIWorld; else SingleProcess
    world.rank, world.size
    world.bcast(obj), world.gather(obj), world.barrier()
    world.allreduce_(buffer)       # in place: the elementwise sum over ranks
    world.abort(message)           # ends every rank of the job, now

SingleProcess does each of these as one process would (bcast and allreduce return what
they are given), so training code calls them unconditionally and stays one code path.
The engine is MPI through mpi4py, never a protocol of our own.
"""
from __future__ import annotations

import os
import sys
import time

from ..threads import share_cores

# Environment variables that the common launchers set in every rank (MPICH/Hydra, Open MPI, Slurm, Intel MPI).
LAUNCHER_SIZE_VARS = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MPI_LOCALNRANKS", "PMIX_SIZE", "SLURM_NTASKS")


class DistributedError(RuntimeError):
    pass


def launched_size() -> int:
    """The world size that a launcher announced in the environment (1 when there is none)."""
    for name in LAUNCHER_SIZE_VARS:
        value = os.environ.get(name)
        if value and value.isdigit():
            return int(value)
    return 1


class SingleProcess:
    rank, size, local_rank, name = 0, 1, 0, "one process"

    def bcast(self, obj, root=0):
        return obj

    def gather(self, obj, root=0):
        return [obj]

    def allgather(self, obj):
        return [obj]

    def barrier(self):
        pass

    def allreduce_(self, buffer):
        return buffer

    def abort(self, message, code=1):
        print(message, file=sys.stderr, flush=True)
        raise SystemExit(code)


ABORT_GRACE_S = 0.5  # seconds for the launcher to forward an aborting rank's message


class MPIWorld:
    """COMM_WORLD of mpi4py; local_rank is the rank among the processes of this machine (for its GPU)."""

    def __init__(self, comm=None):
        from mpi4py import MPI

        self.MPI = MPI
        self.comm = comm or MPI.COMM_WORLD
        self.rank, self.size = self.comm.Get_rank(), self.comm.Get_size()
        local = self.comm.Split_type(MPI.COMM_TYPE_SHARED, key=self.rank)
        self.local_rank = local.Get_rank()
        self.local_size = local.Get_size()
        local.Free()
        share_cores(self.local_size)  # ranks on one machine split its cores, not each take all of them
        self.name = f"MPI rank {self.rank} of {self.size} ({MPI.Get_library_version().splitlines()[0].strip()})"

    def bcast(self, obj, root=0):
        return self.comm.bcast(obj, root=root)

    def gather(self, obj, root=0):
        return self.comm.gather(obj, root=root)

    def allgather(self, obj):
        return self.comm.allgather(obj)

    def barrier(self):
        self.comm.Barrier()

    def allreduce_(self, buffer):
        """Sums ``buffer`` (a contiguous NumPy array) over the ranks, in place, in one call."""
        self.comm.Allreduce(self.MPI.IN_PLACE, buffer, op=self.MPI.SUM)
        return buffer

    def abort(self, message, code=1):
        """Print ``message`` and end the whole job: the other ranks may be waiting in a collective."""
        print(f"rank {self.rank}: {message}", file=sys.stderr, flush=True)
        # The launcher forwards a rank's output from a pipe; Abort has it kill the job, and a message still in the
        # pipe can be lost with it (seen once in CI on a loaded 2-core machine: the job ended, its stderr empty).
        time.sleep(ABORT_GRACE_S)
        self.comm.Abort(code)


def stop_job(world, message, code=1):
    """In a job of several ranks, end every rank now with ``message`` (the others may wait in a collective).

    One process (or no world yet) returns, and the caller reports the error its usual way.
    """
    if world is not None and world.size > 1:
        world.abort(message, code)


def get_world(mode="auto"):
    """``auto``: MPI when a launcher started 2+ ranks; ``off``: one process; ``mpi``: MPI, even with one rank."""
    if mode == "off":
        return SingleProcess()
    if mode not in ("auto", "mpi"):
        raise DistributedError(f"--distributed must be auto, off or mpi, got {mode!r}")
    if mode == "auto" and launched_size() <= 1:
        return SingleProcess()
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        raise DistributedError(
            f"this process was started as one of {launched_size()} ranks (or --distributed mpi), which needs "
            "mpi4py: pip install 'scratchcap[mpi]' (mpi4py and the mpich wheel, with its mpiexec); "
            "or run with --distributed off") from None
    world = MPIWorld()
    if mode == "auto" and world.size == 1:
        return SingleProcess()
    return world


def use_local_gpu(world):
    """Each rank on the GPU of its local rank (ranks of one machine share it round robin); the device's id."""
    import cupy

    count = cupy.cuda.runtime.getDeviceCount()
    device = world.local_rank % max(count, 1)
    cupy.cuda.Device(device).use()
    return device


def add_distributed_argument(parser):
    parser.add_argument("--distributed", choices=["auto", "off", "mpi"], default="auto",
                        help="data-parallel over MPI ranks: auto (when run under mpiexec with 2+ ranks), "
                             "off (one process), mpi (always)")
    return parser

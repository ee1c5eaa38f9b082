"""Past one machine: data-parallel training and sharded feature extraction on MPI (mpi4py), NCCL between GPUs.

    mpiexec -n 4 python -m scratchcap.train --dataset flickr8k --data-dir ../shared/flickr8k
    mpiexec -n 4 python -m scratchcap.features IMAGES --out CACHE

- world.py: which rank this process is (SingleProcess or MPIWorld), broadcast, gather, abort;
- shard.py: a rank's rows of the global batch, and the dropout numbers of exactly those rows;
- allreduce.py: the step's gradients and loss summed in one flat buffer (MPI, or NCCL on GPUs).

The training step stays a function (params, batch) -> (loss, grads); the allreduce sits between it and
the optimizer. pip install 'scratchcap[mpi]' brings mpi4py and the mpich wheel (with mpiexec).
"""
from .allreduce import GradientAllreducer, make_allreducer, params_checksum
from .shard import ShardRng, batch_totals, shard_bounds
from .world import DistributedError, MPIWorld, SingleProcess, add_distributed_argument, get_world, stop_job

__all__ = ["DistributedError", "GradientAllreducer", "MPIWorld", "ShardRng", "SingleProcess",
           "add_distributed_argument", "batch_totals", "get_world", "make_allreducer", "params_checksum",
           "shard_bounds", "stop_job"]

"""Jobs that tests/test_distributed.py runs under ``mpiexec -n N python -m mpi4py tests/mpi_jobs.py JOB ...``.

    features OUT WEIGHTS IMAGE... [--die-on-rank R --after K]   sharded extraction (shards of 2 images);
                                                                 rank R dies after K batches;
                                                                 [--late-rank R]: rank R starts 1 s late
    train-fails-on-rank R STEP ARGS...                           scratchcap.train, where rank R raises at STEP
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def features(argv):
    from scratchcap.distributed import get_world
    from scratchcap.features import extract
    from scratchcap.vgg16 import VGG16

    die_rank, after, late_rank = None, None, None
    if "--late-rank" in argv:  # this rank starts a second late: the others have written shards by then
        k = argv.index("--late-rank")
        late_rank = int(argv[k + 1])
        argv = argv[:k] + argv[k + 2:]
    if "--die-on-rank" in argv:
        k = argv.index("--die-on-rank")
        die_rank, after = int(argv[k + 1]), int(argv[k + 3])
        argv = argv[:k]
    out, weights, images = argv[0], argv[1], argv[2:]
    world = get_world("auto")
    model = VGG16.load(weights, widths=None)
    if world.rank == die_rank:
        real, calls = model.forward, []

        def forward(x, **kw):
            calls.append(1)
            if len(calls) > after:
                os._exit(9)  # killed: no clean-up, no message, as a lost machine would be
            return real(x, **kw)
        model.forward = forward
    if world.rank == late_rank:
        import time
        time.sleep(1.0)
    extract(images, out, model, image_size=32, batch_size=2, shard_size=2, progress=False, log=lambda *_: None,
            world=world)


def train_fails(argv):
    from mpi4py import MPI

    from scratchcap import train
    from scratchcap.models import get_model

    rank, step, args = int(argv[0]), int(argv[1]), argv[2:]
    me = MPI.COMM_WORLD.Get_rank()
    model = get_model("gru-attention")
    real, calls = model.loss_and_grads, []

    def failing(*a, **k):
        calls.append(1)
        if me == rank and len(calls) == step:
            raise RuntimeError(f"simulated failure on rank {rank} at step {step}")
        return real(*a, **k)
    model.loss_and_grads = failing
    sys.exit(train.main(args))


if __name__ == "__main__":
    job, rest = sys.argv[1], sys.argv[2:]
    {"features": features, "train-fails-on-rank": train_fails}[job](rest)

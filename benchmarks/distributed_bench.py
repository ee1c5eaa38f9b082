"""python benchmarks/distributed_bench.py [--rounds 2] [--steps 6] [--json benchmarks/results/distributed-COMMIT.json]

Data parallelism on this machine, in one run:
- one gradient allreduce (scratchcap.distributed's flat buffer, MPI) for the real model sizes
  (gru-attention and lstm-attention with the Flickr8k configuration: E 256, H 512, A 256, V 2526);
- the training step at the benchmark's shapes (batch 64, 20 words, L 196, D 512, gru-attention), for
  1 process with 2 BLAS threads against 2 MPI ranks with 1 thread each.
The two settings alternate, round by round, each in its own processes. Without --worker this script is
the driver; it starts the workers (``mpiexec -n 2 python -m mpi4py benchmarks/distributed_bench.py --worker``).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [os.path.dirname(HERE)]

CFG = dict(E=256, H=512, A=256, V=2526, D=512, L=196, dropout=0.5, feature_scale=0.14, **{"lambda": 0.0})
MPI_ENV = {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1", "MPIR_CVAR_POLLS_BEFORE_YIELD": "10"}


def worker(steps, repeats):
    import numpy as np

    from scratchcap.distributed import GradientAllreducer, get_world
    from scratchcap.memory import keep_freed_memory
    from scratchcap.models import MODELS
    from scratchcap.threads import count
    from scratchcap.train import train_step

    keep_freed_memory()  # as scratchcap train does
    world = get_world("auto")
    out = dict(ranks=world.size, threads=count(), allreduce={}, step_ms=[])  # each rank's pool
    for name in ("gru-attention", "lstm-attention"):
        params = MODELS[name].init_params(CFG, np.random.default_rng(0), "float32")
        grads = {k: v.copy() for k, v in params.items()}
        reduce = GradientAllreducer(world)
        reduce(grads, 1.0)  # allocates the buffer
        times = []
        for _ in range(repeats):
            world.barrier()
            t0 = time.perf_counter()
            reduce(grads, 1.0)
            times.append(time.perf_counter() - t0)
        size = sum(v.size for v in params.values())
        out["allreduce"][name] = dict(parameters=int(size), bytes=int(size * 4),
                                      median_ms=round(float(np.median(times)) * 1e3, 3))

    rng = np.random.default_rng(1)
    N, T = 64, 20
    examples = [(f"im{k}", [1] + list(rng.integers(4, CFG["V"], size=int(rng.integers(8, T)))) + [2])
                for k in range(N)]

    class Feats:  # a feature cache in memory: every image the same random grid
        grid = rng.standard_normal((CFG["L"], CFG["D"])).astype(np.float32)

        def get(self, ids):
            return np.repeat(self.grid[None], len(ids), axis=0)

    model = MODELS["gru-attention"]
    params = model.init_params(CFG, np.random.default_rng(0), "float32")
    reduce = GradientAllreducer(world)
    gen = np.random.default_rng(5)
    for k in range(steps + 1):
        world.barrier()
        t0 = time.perf_counter()
        train_step(model, params, examples, list(range(N)), Feats(), dict(CFG, dtype="float32"), gen, world,
                   reduce, "cpu")
        if k:  # the first step warms caches and allocators
            out["step_ms"].append(round((time.perf_counter() - t0) * 1e3, 1))
    if world.rank == 0:
        print(json.dumps(out), flush=True)


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def run_setting(ranks, threads, steps, repeats):
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               SCRATCHCAP_NUM_THREADS=str(threads), **MPI_ENV)
    me = [os.path.abspath(__file__), "--worker", "--steps", str(steps), "--repeats", str(repeats)]
    cmd = ([_mpiexec(), "-n", str(ranks), sys.executable, "-m", "mpi4py", *me] if ranks > 1
           else [sys.executable, *me])
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv=None):
    p = argparse.ArgumentParser(prog="python benchmarks/distributed_bench.py", description=__doc__.splitlines()[2])
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--repeats", type=int, default=20, help="allreduce calls timed per model")
    p.add_argument("--json")
    args = p.parse_args(argv)
    if args.worker:
        return worker(args.steps, args.repeats)
    import numpy as np

    from scratchcap.atomic import write_json

    settings = [(1, 2), (2, 1)]
    runs = {s: [] for s in settings}
    for r in range(args.rounds):
        for s in (settings if r % 2 == 0 else settings[::-1]):
            runs[s].append(run_setting(*s, args.steps, args.repeats))
    rows = []
    for (ranks, threads), results in runs.items():
        steps = [t for res in results for t in res["step_ms"]]
        row = dict(ranks=ranks, threads_per_rank=threads, step_median_ms=round(float(np.median(steps)), 1),
                   step_times_ms=steps)
        if ranks > 1:
            row["allreduce"] = {m: dict(results[0]["allreduce"][m],
                                        median_ms=round(float(np.median([res["allreduce"][m]["median_ms"]
                                                                          for res in results])), 3))
                                for m in results[0]["allreduce"]}
        rows.append(row)
        print(f"{ranks} rank(s) x {threads} thread(s): step {row['step_median_ms']:.1f} ms (median of {len(steps)})")
        for m, a in row.get("allreduce", {}).items():
            print(f"  allreduce {m}: {a['parameters']} parameters, {a['bytes'] / 2 ** 20:.1f} MiB, "
                  f"{a['median_ms']:.2f} ms")
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=HERE).stdout.strip() or None
    info = dict(commit=commit, cpus=os.cpu_count(), batch=64, words=20, config=CFG, rounds=args.rounds)
    if args.json:
        write_json(args.json, dict(info=info, results=rows), indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

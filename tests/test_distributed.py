"""Data-parallel training and sharded features on MPI: exact equivalence to one process, resuming with another
number of ranks, and failing ranks. Each test starts ``mpiexec -n 2 python -m mpi4py ...`` with a timeout, and
skips, saying why, where MPI cannot start."""
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from scratchcap.checkpoint import load_checkpoint
from scratchcap.distributed import SingleProcess, ShardRng, batch_totals, get_world, shard_bounds
from scratchcap.feature_cache import FeatureCache
from tolerances import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
JOBS = os.path.join(ROOT, "tests", "mpi_jobs.py")
# MPICH on 2 cores: ranks that busy-poll starve each other; these make them yield.
MPI_ENV = {"MPIR_CVAR_CH4_PROGRESS_THROTTLE": "1", "MPIR_CVAR_POLLS_BEFORE_YIELD": "10"}


def _mpiexec():
    here = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    return here if os.path.exists(here) else shutil.which("mpiexec")


def _mpi_reason():
    try:
        import mpi4py  # noqa: F401  (is it installed?)
    except ImportError:
        return "mpi4py is not installed (pip install '.[mpi]')"
    if _mpiexec() is None:
        return "no mpiexec (the mpich wheel brings one: pip install '.[mpi]')"
    try:
        proc = subprocess.run([_mpiexec(), "-n", "2", sys.executable, "-c",
                               "from mpi4py import MPI; c = MPI.COMM_WORLD; c.Get_rank() or print(c.Get_size())"],
                              capture_output=True, text=True, timeout=60, env=dict(os.environ, **MPI_ENV))
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"mpiexec does not start here: {exc}"
    if proc.stdout.strip() != "2":
        return f"mpiexec does not start 2 ranks here: {proc.stdout[-200:]} {proc.stderr[-300:]}"
    return None


REASON = _mpi_reason()
needs_mpi = pytest.mark.skipif(REASON is not None, reason=str(REASON))


def _run(n, *args, timeout=240, module=("-m", "scratchcap.train")):
    cmd = ([_mpiexec(), "-n", str(n), sys.executable, "-m", "mpi4py", *module, *args] if n > 1
           else [sys.executable, *module, *args])
    env = dict(os.environ, **MPI_ENV)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)


# ---- pieces, in one process -----------------------------------------------------------------------------

def test_shards_cover_the_batch_in_order_and_may_be_empty():
    for n in range(0, 9):
        for size in (1, 2, 3, 4):
            bounds = [shard_bounds(n, r, size) for r in range(size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == n
            assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))
            assert max(hi - lo for lo, hi in bounds) - min(hi - lo for lo, hi in bounds) <= 1


def test_a_shard_draws_exactly_its_rows_of_the_whole_batch_dropout(xp):
    from scratchcap import ops

    x = xp.ones((7, 3, 5), dtype=xp.float64)
    whole, _ = ops.dropout_forward(x, 0.4, np.random.default_rng(3))
    for lo, hi in ((0, 4), (4, 7), (2, 3)):
        part, _ = ops.dropout_forward(x[lo:hi], 0.4, ShardRng(np.random.default_rng(3), lo))
        np.testing.assert_array_equal(np.asarray(part.get() if hasattr(part, "get") else part),
                                      np.asarray(whole[lo:hi].get() if hasattr(whole, "get") else whole[lo:hi]))


def test_token_and_caption_totals_of_a_batch():
    examples = [("a", [1, 5, 6, 2]), ("b", [1, 7, 2]), ("c", [1, 2])]
    assert batch_totals(examples, [0, 1, 2]) == dict(tokens_total=3 + 2 + 1, captions_total=3)


@pytest.mark.parametrize("model", ["gru-attention", "lstm-attention", "lstm-noattention"])
def test_shard_gradients_sum_to_the_whole_batch_gradient_in_float64(model):
    """The arithmetic behind the exactness: rows split three ways, each divided by the batch's totals."""
    from scratchcap.gradcheck_cases import caption_batch
    from scratchcap.models import MODELS

    rng = np.random.default_rng(0)
    cfg = dict(D=6, E=5, H=4, A=3, V=11, dropout=0.3, feature_scale=0.5, **{"lambda": 0.7})
    batch = caption_batch(rng, 7, 5, 4, cfg["D"], cfg["V"], "float64", min_words=1)
    params = MODELS[model].init_params(cfg, np.random.default_rng(1), "float64")
    loss, grads, _ = MODELS[model].loss_and_grads(params, batch, cfg, np.random.default_rng(9), train=True)
    tokens, captions = int(batch["mask"].sum()), batch["mask"].shape[0]
    total_loss, total = 0.0, {k: np.zeros_like(v) for k, v in grads.items()}
    for lo, hi in (shard_bounds(7, r, 3) for r in range(3)):
        part = {k: v[lo:hi] for k, v in batch.items()}
        part.update(tokens_total=tokens, captions_total=captions)
        l, g, _ = MODELS[model].loss_and_grads(params, part, cfg, ShardRng(np.random.default_rng(9), lo), train=True)
        total_loss += float(l)
        for k in total:
            total[k] += g[k]
    assert total_loss == pytest.approx(float(loss), rel=1e-12)
    for k in grads:
        assert_close(total[k], grads[k], "float64", depth=64, err_msg=k)


def test_one_process_world_and_asking_for_mpi_without_it(monkeypatch):
    world = get_world("off")
    assert isinstance(world, SingleProcess) and world.size == 1 and world.bcast(5) == 5
    monkeypatch.setenv("PMI_SIZE", "4")
    monkeypatch.setitem(sys.modules, "mpi4py", None)  # as if it were not installed
    from scratchcap.distributed import DistributedError
    with pytest.raises(DistributedError, match=r"scratchcap\[mpi\]"):
        get_world("auto")
    assert get_world("off").size == 1


# ---- training under mpiexec ---------------------------------------------------------------------------

def _args(root, weights, out, model, *extra):
    # float64, dropout on, batches of 7: shards of 4 and 3 rows with different token counts, and the last batch
    # of one caption leaves rank 1 empty.
    return ["--data-dir", str(root / "data"), "--shapes-images", "24,6,2", "--image-size", "32", "--weights",
            str(weights), "--features", str(root / "cache.h5"), "--embed", "8", "--hidden", "6", "--attention", "5",
            "--batch-size", "7", "--lr", "0.01", "--no-progress", "--device", "cpu", "--dtype", "float64",
            "--dropout", "0.3", "--model", model, "--out", str(out), "--checkpoint-every", "5", *extra]


def _same_params(a, b):
    pa, pb = load_checkpoint(a)["params"], load_checkpoint(b)["params"]
    assert sorted(pa) == sorted(pb)
    for k in pa:
        err = float(np.abs(pa[k] - pb[k]).max()) / max(float(np.abs(pa[k]).max()), 1e-300)
        assert err <= 1e-10, (k, err)


@needs_mpi
@pytest.mark.parametrize("model, extra", [("gru-attention", ()), ("lstm-attention", ("--lambda", "0.5")),
                                          ("lstm-noattention", ())])
def test_two_ranks_train_exactly_like_one_process_and_resume_with_either_count(workspace, model, extra):
    root, weights = workspace
    one = root / f"{model}-one"
    proc = _run(1, *_args(root, weights, one, model, "--epochs", "2", *extra))
    assert proc.returncode == 0, proc.stderr[-3000:]
    # epoch 1 on two ranks, epoch 2 resumed in one process
    two = root / f"{model}-two"
    proc = _run(2, *_args(root, weights, two, model, "--epochs", "1", *extra))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "data-parallel on 2 ranks" in proc.stdout
    proc = _run(1, "--resume", str(two), "--epochs", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_params(two / "checkpoint-last.h5", one / "checkpoint-last.h5")
    if model == "gru-attention":  # and the other way: epoch 1 in one process, epoch 2 on two ranks
        three = root / f"{model}-three"
        assert _run(1, *_args(root, weights, three, model, "--epochs", "1", *extra)).returncode == 0
        proc = _run(2, "--resume", str(three), "--epochs", "2", "--no-progress")
        assert proc.returncode == 0, proc.stderr[-3000:]
        _same_params(three / "checkpoint-last.h5", one / "checkpoint-last.h5")
        lines = [x for x in open(three / "metrics.jsonl")]
        assert len(lines) == 2  # rank 0 alone wrote the history


@needs_mpi
def test_two_rank_self_critical_training_is_one_process_and_resumes_with_either_count(workspace):
    """SCST under mpiexec: each rank samples its images' rows of the one-process draw; batches of 23 images
    give shards of 12 and 11, then a batch of one that leaves rank 1 empty."""
    root, weights = workspace
    xe = root / "scst-base"
    assert _run(1, *_args(root, weights, xe, "lstm-attention", "--epochs", "1")).returncode == 0
    init = str(xe / "checkpoint-last.h5")

    def scst(out, *extra):
        return ["--init-from", init, "--objective", "scst", "--out", str(out), "--batch-size", "23",
                "--scst-samples", "3", "--lr", "0.001", "--dtype", "float64", "--no-progress", "--device", "cpu",
                *extra]

    one, two = root / "scst-one", root / "scst-two"
    proc = _run(1, *scst(one, "--epochs", "2"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = _run(2, *scst(two, "--epochs", "1"))
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "data-parallel on 2 ranks" in proc.stdout
    proc = _run(1, "--resume", str(two), "--epochs", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr[-3000:]
    _same_params(two / "checkpoint-last.h5", one / "checkpoint-last.h5")
    rows_one = [json.loads(x) for x in open(one / "metrics.jsonl")]
    rows_two = [json.loads(x) for x in open(two / "metrics.jsonl")]
    assert rows_one[0]["reward"] == pytest.approx(rows_two[0]["reward"], rel=1e-9)
    assert rows_one[0]["CIDEr"] == pytest.approx(rows_two[0]["CIDEr"], rel=1e-9)


@needs_mpi
def test_a_rank_that_raises_ends_the_job_with_its_message_and_the_checkpoint_stays_valid(workspace):
    root, weights = workspace
    out = root / "fails"
    started = time.monotonic()
    proc = _run(2, "train-fails-on-rank", "1", "9", *_args(root, weights, out, "gru-attention", "--epochs", "2"),
                module=(JOBS,), timeout=120)
    assert proc.returncode != 0 and time.monotonic() - started < 60
    assert "simulated failure on rank 1 at step 9" in proc.stderr
    assert load_checkpoint(out / "checkpoint-last.h5")["progress"]["batch"] == 5  # the last save before the fault


# ---- features under mpiexec ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    folder = tmp_path_factory.mktemp("mpi-images")
    rng = np.random.default_rng(0)
    paths = []
    for k in range(11):
        path = folder / f"im{k:02d}.png"
        Image.fromarray(rng.integers(0, 255, (30 + k, 40, 3), dtype=np.uint8)).save(path)
        paths.append(str(path))
    (folder / "im99.png").write_bytes(b"not an image")
    return paths + [str(folder / "im99.png")]


def _cache(path):
    with FeatureCache(path) as c:
        ids = sorted(c.ids)
        return ids, c.read(ids), dict(c.failed)


@needs_mpi
def test_two_rank_features_equal_one_process_and_a_killed_job_resumes_with_one(workspace, images, tmp_path):
    _, weights = workspace
    one, two, killed = (str(tmp_path / n) for n in ("one.h5", "two.h5", "killed.h5"))
    assert _run(1, "features", one, str(weights), *images, module=(JOBS,)).returncode == 0
    # rank 1 starts late: what is still to do must not be read again after rank 0 has written shards
    proc = _run(2, "features", two, str(weights), *images, "--late-rank", "1", module=(JOBS,))
    assert proc.returncode == 0, proc.stderr[-3000:]
    ids1, feats1, failed1 = _cache(one)
    ids2, feats2, failed2 = _cache(two)
    assert ids1 == ids2 and len(ids1) == 11 and failed1 == failed2 and list(failed1) == ["im99.png"]
    assert_close(feats2, feats1, "float16", depth=2)  # another batch composition: one float16 rounding at most
    proc = _run(2, "features", killed, str(weights), *images, "--die-on-rank", "1", "--after", "2",
                module=(JOBS,), timeout=120)
    assert proc.returncode != 0 and not os.path.exists(killed)
    assert os.listdir(killed + ".parts")  # finished shards survived the kill
    assert _run(1, "features", killed, str(weights), *images, module=(JOBS,)).returncode == 0
    ids3, feats3, failed3 = _cache(killed)
    assert ids3 == ids1 and failed3 == failed1
    assert not os.path.exists(killed + ".parts"), os.listdir(killed + ".parts")
    assert_close(feats3, feats1, "float16", depth=2)


@needs_mpi
def test_the_features_command_under_mpiexec(workspace, images, tmp_path):
    _, weights = workspace
    out = tmp_path / "cmd.h5"
    proc = _run(2, *images, "--out", str(out), "--weights", str(weights), "--image-size", "32", "--no-progress",
                module=("-m", "scratchcap.features"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("wrote") == 1 and "on 2 ranks" in proc.stdout  # rank 0 speaks for the job
    ids, _, failed = _cache(out)
    assert len(ids) == 11 and list(failed) == ["im99.png"]


@needs_mpi
def test_sigterm_to_the_job_stops_every_rank_and_the_run_resumes(workspace):
    """A scheduler's SIGTERM reaches mpiexec, which passes it to the ranks: the job ends, checkpoint-last stays."""
    import signal

    root, weights = workspace
    out = root / "terminated"
    args = _args(root, weights, out, "gru-attention", "--epochs", "3", "--checkpoint-every", "1")
    env = dict(os.environ, **MPI_ENV)
    proc = subprocess.Popen([_mpiexec(), "-n", "2", sys.executable, "-m", "mpi4py", "-m", "scratchcap.train", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    deadline = time.monotonic() + 120
    while not (out / "checkpoint-last.h5").exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0 and time.monotonic() - started < 60, err[-2000:]
    assert load_checkpoint(out / "checkpoint-last.h5")["progress"]["step"] >= 1  # whole, and loadable
    resumed = _run(1, "--resume", str(out), "--no-progress")  # on to the 3 epochs it was started for
    assert resumed.returncode == 0, resumed.stderr[-2000:]

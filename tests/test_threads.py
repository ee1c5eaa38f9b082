"""The thread pool behind the seam (scratchcap.threads): where its size comes from, that it keeps OpenBLAS at
one thread, and that splitting work over it changes no elementwise result and no other beyond float rounding."""
import os
import subprocess
import sys

import numpy as np
import pytest

from scratchcap import ops, threads
from scratchcap.counter_random import counter_uniform
from scratchcap.ops.softmax import log_softmax
from tolerances import assert_close

COUNTS = (1, 2, 3)


def test_the_count_comes_from_the_argument_then_the_environment_then_the_affinity(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.resolve_threads() == threads.available_cores()
    if hasattr(os, "sched_getaffinity"):
        assert threads.available_cores() == len(os.sched_getaffinity(0))
    monkeypatch.setenv(threads.ENV, "3")
    assert threads.resolve_threads() == 3
    assert threads.resolve_threads(5) == 5


@pytest.mark.parametrize("bad", ["0", "-1", "two", "2.5", ""])
def test_a_bad_count_is_refused_naming_where_it_came_from(monkeypatch, bad):
    if bad:
        monkeypatch.setenv(threads.ENV, bad)
        with pytest.raises(ValueError, match=threads.ENV):
            threads.resolve_threads()
    with pytest.raises(ValueError, match="--threads"):
        threads.resolve_threads(bad or "0")


def test_the_pool_keeps_openblas_at_one_thread():
    from threadpoolctl import threadpool_info

    threads.set_threads(2)
    blas = [i for i in threadpool_info() if i["user_api"] == "blas"]
    assert blas and all(i["num_threads"] == 1 for i in blas)


def test_a_command_line_sizes_the_pool_and_rejects_a_bad_count(tmp_path, capsys):
    from scratchcap import caption

    with pytest.raises(SystemExit) as exit_:
        caption.main(["--threads", "0", str(tmp_path / "x.png")])
    assert exit_.value.code == 2
    assert "--threads must be a whole number of threads >= 1" in capsys.readouterr().err
    # a missing file: the command fails after parsing, and --threads has taken effect by then
    assert caption.main(["--threads", "3", "--device", "cpu", str(tmp_path / "missing.png")]) != 0
    assert threads.count() == 3


def test_ranks_on_one_machine_share_its_cores_unless_a_count_was_given(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    assert threads.share_cores(2) == max(1, threads.available_cores() // 2)
    assert threads.share_cores(10 ** 6) == 1
    threads.set_threads(3, explicit=True)
    assert threads.share_cores(2) == 3


def test_parallel_for_gives_every_item_once_raises_a_pieces_error_and_never_nests(split_threads):
    split_threads(3)
    seen, workers = [], set()

    def piece(item, worker):
        workers.add(worker)
        seen.append(item)
        threads.parallel_for(lambda i, w: seen.append((item, i, w)), [0, 1])  # nested: runs in this thread

    threads.parallel_for(piece, range(7))
    assert sorted(i for i in seen if isinstance(i, int)) == list(range(7))
    assert workers == {0, 1, 2}
    assert all(w == 0 for x in seen if isinstance(x, tuple) for w in x[2:])

    def failing(item, worker):
        if item == 4:
            raise KeyError("piece 4")
    with pytest.raises(KeyError, match="piece 4"):
        threads.parallel_for(failing, range(6))


def test_map_pieces_gives_the_results_in_the_items_order_from_every_worker(split_threads):
    split_threads(3)
    seen = set()

    def square(x):
        seen.add(threads.in_pool())
        return x * x
    assert threads.map_pieces(square, range(7)) == [x * x for x in range(7)]
    assert seen == {True}  # every piece ran as a piece of the pool, where nothing splits again


@pytest.mark.parametrize("shapes", [((37, 19), (19, 23)),        # rows
                                    ((2, 5), (5, 300)),           # too few rows: columns
                                    ((6, 2, 7), (6, 7, 9)),       # too few rows: the batch axis
                                    ((3, 1, 40, 6), (6, 11)),     # broadcast batch, rows
                                    ((3, 1024), (1024, 1100))])   # 3 rows: a GEMV a row, or columns of them
def test_matmul_split_any_way_equals_one_gemm(split_threads, shapes):
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(s).astype(np.float32) for s in shapes)
    want = a @ b
    for n in COUNTS:
        split_threads(n)
        assert_close(threads.matmul(a, b), want, np.float32, depth=a.shape[-1])
        out = np.empty_like(want)
        assert threads.matmul(a, b, out=out) is out
        assert_close(out, want, np.float32, depth=a.shape[-1])
        assert_close(threads.matmul(np.asfortranarray(a), b), want, np.float32, depth=a.shape[-1])


@pytest.mark.parametrize("rows, weights, gemvs", [(3, (1024, 600), 3), (2, (1024, 600), 2), (4, (1024, 600), 0),
                                                  (3, (512, 512), 0), (1, (1024, 600), 0)])
def test_two_or_three_rows_times_a_large_matrix_run_as_one_gemv_a_row(monkeypatch, rows, weights, gemvs):
    """OpenBLAS's GEMM copies all of b for every call, which beam search over one image (3 rows a step) pays for
    nothing; threads.GEMV_MAX_ROWS rows of a times at least GEMV_MIN_WEIGHTS elements of b go row by row."""
    assert weights[0] * weights[1] >= threads.GEMV_MIN_WEIGHTS or gemvs == 0
    rng = np.random.default_rng(2)
    calls, gemm = [], np.matmul

    def recording(a, b, *args, **kwargs):
        calls.append(a.ndim)
        return gemm(a, b, *args, **kwargs)
    threads.set_threads(1)
    for dtype in (np.float32, np.float64):
        a = rng.standard_normal((rows, weights[0])).astype(dtype)
        b = rng.standard_normal(weights).astype(dtype)
        want = gemm(a, b)
        monkeypatch.setattr(np, "matmul", recording)
        calls.clear()
        got = threads.matmul(np.asfortranarray(a), b)
        out = np.full_like(want, np.nan)
        assert threads.matmul(a, b, out=out) is out
        monkeypatch.setattr(np, "matmul", gemm)
        assert calls == ([1] * gemvs if gemvs else [2]) * 2
        assert got.dtype == out.dtype == dtype
        for result in (got, out):
            assert_close(result, want, dtype, depth=weights[0])


def _by_count(split_threads, fn):
    results = []
    for n in COUNTS:
        split_threads(n)
        results.append(fn())
    return results


def test_elementwise_work_is_bit_for_bit_the_same_on_1_2_and_3_threads(split_threads):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 9, 7, 5)).astype(np.float32)
    pooled = _by_count(split_threads, lambda: ops.max_pool2d_forward(x)[0])
    uniform = _by_count(split_threads, lambda: counter_uniform(np, 12345, (5, 1000), np.float32))
    dropped = _by_count(split_threads, lambda: ops.dropout_forward(x, 0.3, np.random.default_rng(7))[0])
    logits = rng.standard_normal((7, 300)).astype(np.float32)
    logp = _by_count(split_threads, lambda: log_softmax(logits))
    dout = rng.standard_normal(x.shape).astype(np.float32)
    relu = _by_count(split_threads, lambda: np.concatenate([
        ops.relu_forward(x)[0], ops.relu_backward(dout, ops.relu_forward(x)[1])[0]]))
    undropped = _by_count(split_threads, lambda: ops.dropout_backward(
        dout, ops.dropout_forward(x, 0.3, np.random.default_rng(7))[1])[0])
    scores = rng.standard_normal((3, 4, 50)).astype(np.float32)
    targets, mask = rng.integers(0, 50, (3, 4)), rng.random((3, 4)) < 0.7

    def xent(smoothing):
        loss, cache = ops.temporal_cross_entropy_forward(scores, targets, mask, weights=np.arange(3.0, dtype=np.float32),
                                                         smoothing=smoothing)
        return np.append(ops.temporal_cross_entropy_backward(np.float32(1.5), cache)[0], loss)
    xents = [_by_count(split_threads, lambda: xent(eps)) for eps in (0.0, 0.1)]
    for same in (pooled, uniform, dropped, logp, relu, undropped, *xents):
        assert all(np.array_equal(same[0], other) for other in same[1:])
        assert same[0].dtype == np.float32
    assert pooled[0].shape == (2, 4, 3, 5)
    assert np.array_equal(pooled[0], x[:, :8, :6].reshape(2, 4, 2, 3, 2, 5).max(axis=(2, 4)))


def test_attention_vgg16_and_a_whole_decoder_step_agree_on_1_2_and_3_threads(split_threads):
    from scratchcap.models import gru_attention
    from scratchcap.vgg16 import VGG16
    from vgg_fixtures import random_layers

    rng = np.random.default_rng(2)
    N, L, D, A, H = 3, 5, 4, 6, 7
    f = rng.standard_normal((N, L, D)).astype(np.float32)
    args = [f, rng.standard_normal((N, L, A)).astype(np.float32), rng.standard_normal((N, H)).astype(np.float32),
            rng.standard_normal((H, A)).astype(np.float32), rng.standard_normal(A).astype(np.float32),
            rng.standard_normal(A).astype(np.float32)]
    dctx = rng.standard_normal((N, D)).astype(np.float32)

    def attend(args, dctx):
        (ctx, alpha), cache = ops.attend_forward(*args)
        return [ctx, alpha] + [g for g in ops.attend_backward((dctx, None), cache) if g is not None]
    beams = [f, args[1], rng.standard_normal((3 * N, H)).astype(np.float32)] + args[3:]  # 3 queries per image
    for a_args, a_dctx in ((args, dctx), (beams, rng.standard_normal((3 * N, D)).astype(np.float32))):
        runs = _by_count(split_threads, lambda: attend(a_args, a_dctx))
        for other in runs[1:]:
            for a, b in zip(runs[0], other):
                assert_close(b, a, np.float32, depth=64)

    layers = random_layers(3)
    attrs = dict(preprocessing="caffe", channel_order="BGR", input_scale=255.0, mean=(0, 0, 0), std=(1, 1, 1))
    image = rng.standard_normal((2, 32, 32, 3)).astype(np.float32) * 50
    for winograd in (True, False):
        outs = _by_count(split_threads, lambda: VGG16(layers, attrs, winograd=winograd).forward(
            image, layers=("block3_conv3", "block5_conv3")))
        for other in outs[1:]:
            for name in other:
                assert_close(other[name], outs[0][name], np.float32, depth=2000)

    cfg = dict(D=D, E=5, H=H, A=A, V=11, dropout=0.3)
    params = gru_attention.init_params(cfg, np.random.default_rng(0))
    caps = np.array([[1, 4, 5, 2, 0], [1, 6, 2, 0, 0], [1, 7, 8, 9, 2]])
    batch = dict(features=f, captions=caps, mask=caps[:, 1:] != 0)
    steps = _by_count(split_threads, lambda: gru_attention.loss_and_grads(params, batch, cfg,
                                                                         np.random.default_rng(3)))
    for loss, grads, _ in steps[1:]:
        assert loss == pytest.approx(steps[0][0], rel=1e-5)
        for k in grads:
            assert_close(grads[k], steps[0][1][k], np.float32, depth=200, err_msg=k)


def test_the_cupy_stand_in_is_never_split(hostcupy, split_threads):
    split_threads(3)
    a, b = hostcupy.asarray(np.ones((8, 4), np.float32)), hostcupy.asarray(np.ones((4, 6), np.float32))
    out = threads.matmul(a, b)
    assert isinstance(out, hostcupy.ndarray)
    np.testing.assert_array_equal(hostcupy.asnumpy(out), np.full((8, 6), 4.0))
    from scratchcap import decode, thread_shards  # nor are its images or captions dealt out to the threads
    many = np.zeros((100, 2, 2), np.float32)
    assert decode.image_groups(many) is not None and thread_shards.shards(100) is not None
    assert decode.image_groups(hostcupy.asarray(many)) is None and thread_shards.shards(100, hostcupy) is None


def test_the_benchmark_worker_reports_the_thread_count_it_ran_with(tmp_path):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    proc = subprocess.run([sys.executable, os.path.join(root, "benchmarks", "worker.py"), "--lib", "numpy",
                           "--small", "--repeats", "1", "--threads", "2", "--case", "attention"],
                          capture_output=True, text=True, cwd=root, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert '"num_threads": 1' in proc.stdout  # OpenBLAS at one thread: the pool has the two


def test_bias_sums_and_adds_split_by_rows(split_threads):
    rng = np.random.default_rng(4)
    x = rng.standard_normal((37, 11)).astype(np.float32)
    b = rng.standard_normal(11).astype(np.float32)
    split_threads(1)
    assert np.array_equal(threads.sum_rows(x), x.sum(axis=0))  # one thread: numpy's own sum
    for n in COUNTS:
        split_threads(n)
        total = threads.sum_rows(x)
        assert total.dtype == np.float32 and np.array_equal(total, threads.sum_rows(x))  # the same every call
        assert_close(total, x.sum(axis=0, dtype=np.float64), np.float32, depth=37)
        y = x.copy()
        assert threads.add_rows(y, b) is y and np.array_equal(y, x + b)  # elementwise: bit for bit


@pytest.mark.parametrize("by_winograd", [True, False])
def test_a_deep_layer_at_batch_1_runs_on_every_thread(monkeypatch, by_winograd):
    """At the pool's real sizes: a block5-like layer has a small output (14 x 14 x F, here under MIN_ELEMENTS) but
    GEMMs of 16 * 49 * C * F (Winograd) or 196 * 9 * C * F multiply-adds (im2col); its GEMMs must run on both
    threads (they once stayed on one). By Winograd, where U (16, C, F) outweighs V (16, P, C), each thread
    multiplies by its own share of U's 16 matrices, so that U is read once, not once per thread."""
    import threading

    rng = np.random.default_rng(5)
    C = F = 128
    x = rng.standard_normal((1, 14, 14, C)).astype(np.float32)
    w = (rng.standard_normal((3, 3, C, F)) * 0.05).astype(np.float32)
    b = rng.standard_normal(F).astype(np.float32)
    u = ops.winograd_kernel(w)
    assert 14 * 14 * F < threads.MIN_ELEMENTS
    seen, kernels, gemm = set(), [], np.matmul

    def recording(a, b, *args, **kwargs):  # every GEMM of the layer, whichever thread runs it
        seen.add(threading.get_ident())
        kernels.append(b.shape[0] if b.ndim == 3 else 1)
        return gemm(a, b, *args, **kwargs)
    monkeypatch.setattr(np, "matmul", recording)
    outs = []
    for n in (1, 2):
        threads.set_threads(n)
        seen.clear()
        kernels.clear()
        outs.append(ops.conv2d_forward(x, w, b, workspace=ops.Workspace(), relu=True,
                                       winograd=u if by_winograd else None)[0])
        assert len(seen) == n
        if by_winograd:
            assert sum(kernels) == 16
    reference = ops.conv2d_forward(x, w, b, relu=True)[0]  # im2col, one GEMM
    for out in outs:
        assert_close(out, reference, np.float32, depth=9 * C)


@pytest.mark.parametrize("n_images, parts", [(16, 2), (16, 3), (20, 2), (5, 2), (7, 3), (3, 2), (1, 2), (5, 1)])
def test_conv_blocks_cover_the_batch_once_and_give_each_thread_as_much(n_images, parts):
    """ops/conv's blocks (images, first row, end row): every row of every image once, within the budget where one
    row fits, and parallel_for's workers (items w, w + parts, ...) within one image's rows of each other."""
    from scratchcap.ops.conv import _row_blocks

    rows, row_bytes = 14, 1000
    for budget in (3 * row_bytes, rows * row_bytes, 3 * rows * row_bytes, 5 * rows * row_bytes, 100 * rows * row_bytes):
        blocks = _row_blocks(n_images, rows, row_bytes, budget, parts)
        covered = np.zeros((n_images, rows), int)
        for images, r0, r1 in blocks:
            covered[images, r0:r1] += 1
            assert (images.stop - images.start) * (r1 - r0) * row_bytes <= budget
        assert (covered == 1).all()
        assert len(blocks) >= min(parts, n_images * rows)
        work = [sum((s.stop - s.start) * (r1 - r0) for s, r0, r1 in blocks[w::parts]) for w in range(parts)]
        assert max(work) - min(work) <= rows, (budget, work)


@pytest.mark.parametrize("rows, rows_in_budget, parts", [(224, 85, 2), (224, 85, 3), (7, 100, 2), (14, 3, 4)])
def test_one_image_in_few_blocks_gives_each_thread_as_many_rows(rows, rows_in_budget, parts):
    """block1_conv1 at batch 1 (224 rows, 85 to the 2 MB budget) was cut into blocks of 85, 85 and 54 rows, and one
    of 2 threads took 139 of them: now a whole number of blocks for each thread, each of one size to a row."""
    from scratchcap.ops.conv import _row_blocks

    row_bytes = 1000
    blocks = _row_blocks(1, rows, row_bytes, rows_in_budget * row_bytes, parts)
    assert [r for _, r0, r1 in blocks for r in range(r0, r1)] == list(range(rows))
    assert all((r1 - r0) <= rows_in_budget for _, r0, r1 in blocks)
    work = [sum(r1 - r0 for _, r0, r1 in blocks[w::parts]) for w in range(parts)]
    assert max(work) - min(work) <= -(-len(blocks) // parts), work

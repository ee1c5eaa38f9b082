"""scratchcap.row_blocks: blocks cover every row once, and the layers that use them give the
unsplit result bit for bit (and a correct gradient) however small the blocks are."""
import types

import numpy as np
import pytest

from scratchcap import backend, ops, row_blocks
from scratchcap.counter_random import counter_uniform
from scratchcap.gradcheck import check_layer
from scratchcap.gradcheck_cases import layer_cases


@pytest.mark.parametrize("n,row,block", [(1, 5, 8), (7, 1, 3), (10, 4, 8), (10, 100, 8), (64, 100352, 1 << 18)])
def test_slices_cover_every_row_once_in_blocks_of_about_block_elements(monkeypatch, n, row, block):
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", block)
    parts = row_blocks.slices(n, row)
    assert [i for s in parts for i in range(s.start, s.stop)] == list(range(n))
    per_block = max(1, block // row)
    assert all(s.stop - s.start == per_block for s in parts[:-1])
    assert 1 <= parts[-1].stop - parts[-1].start <= per_block


def test_numpy_runs_every_block_and_cupy_runs_one_call(monkeypatch):
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 6)
    seen = []
    row_blocks.run(seen.append, 5, np, 3)
    assert seen == [slice(0, 2), slice(2, 4), slice(4, 5)]
    seen.clear()
    row_blocks.run(seen.append, 5, types.SimpleNamespace(__name__="cupy"), 3)
    assert seen == [slice(None)]


@pytest.mark.parametrize("n, count", [(112, 2), (56, 2), (112, 3), (5, 2), (1, 2)])
def test_on_the_pool_each_thread_gets_as_many_rows(monkeypatch, split_threads, n, count):
    """The pool's worker w takes blocks w, w + count, ... (threads.parallel_for): blocks of 36, 36, 36 and 4 rows
    (block1_pool at batch 1) gave one of 2 threads 72 rows and the other 40."""
    from scratchcap import threads

    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 36 * 7168)
    split_threads(count)
    handed, parallel_for = [], threads.parallel_for

    def recording(fn, items, *args, **kwargs):
        handed.append(list(items))
        return parallel_for(fn, handed[-1], *args, **kwargs)
    monkeypatch.setattr(threads, "parallel_for", recording)
    seen = []
    row_blocks.run(seen.append, n, np, 7168)
    assert sorted(i for s in seen for i in range(s.start, s.stop)) == list(range(n))
    (blocks,) = handed
    per_thread = [sum(s.stop - s.start for s in blocks[w::count]) for w in range(min(count, n))]
    assert len(blocks) % count == 0 or len(blocks) == n
    assert max(per_thread) - min(per_thread) <= len(blocks) // count, per_thread  # a row a block at most


def _attend_backward(monkeypatch, block, accumulate, xp=np):
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", block)
    rng = np.random.default_rng(4)
    N, L, D, H, A = 5, 7, 6, 4, 3
    features, projected = rng.standard_normal((N, L, D)), rng.standard_normal((N, L, A))
    query, w2, b2, v = rng.standard_normal((N, H)), rng.standard_normal((H, A)), rng.standard_normal(A), \
        rng.standard_normal(A)
    _, cache = ops.attend_forward(*(xp.asarray(a) for a in (features, projected, query, w2, b2, v)))
    douts = (rng.standard_normal((N, D)), rng.standard_normal((N, L)))
    start = rng.standard_normal((N, L, A))
    dprojected = xp.asarray(start) if accumulate else None
    grads = ops.attend_backward(tuple(xp.asarray(d) for d in douts), cache, dprojected=dprojected)
    return [backend.to_numpy(g) for g in grads], start, [backend.to_numpy(c) for c in cache], douts


@pytest.mark.parametrize("case_name", ["attend", "additive_attention"])
def test_attention_gradients_hold_with_one_row_per_block(monkeypatch, case_name):
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 1)
    case = next(c for c in layer_cases(np, dict(N=3, L=4)) if c.name == case_name)
    errors = check_layer(case.forward, case.backward, case.inputs, kwargs=case.kwargs)
    assert errors and max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("accumulate", [False, True])
def test_the_plain_attention_backward_on_the_cupy_stand_in_equals_numpy(hostcupy, monkeypatch, accumulate):
    """SCRATCHCAP_FUSED=0: on CuPy the plain code runs as one block over slice(None)."""
    monkeypatch.setenv("SCRATCHCAP_FUSED", "0")
    want, _, _, _ = _attend_backward(monkeypatch, 1, accumulate)
    got, _, _, _ = _attend_backward(monkeypatch, 1, accumulate, xp=hostcupy)
    for a, b in zip(want, got):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 2, 7, 1001])
def test_counter_uniform_in_blocks_gives_the_same_bits(monkeypatch, xp, dtype, n):
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 1 << 30)
    whole = counter_uniform(np, 2**64 - 3, (n,), dtype)
    monkeypatch.setattr(row_blocks, "BLOCK_ELEMENTS", 3)  # odd: float32's pairs of halves straddle no block
    got = counter_uniform(xp, 2**64 - 3, (n,), dtype)
    assert got.dtype == dtype
    np.testing.assert_array_equal(backend.to_numpy(got), whole)

"""A training step's rows split over the pool's threads (scratchcap.thread_shards) is the one-thread step: the
same loss, gradients and attention to float64 rounding, the same dropout masks, and the generator moved on as one
step moves it; too few rows, and it is the plain call."""
import numpy as np
import pytest

from scratchcap import thread_shards
from scratchcap.distributed import ShardRng
from scratchcap.models import MODELS


class _Recording:
    def __init__(self, model):
        self.model, self.rows = model, []

    def loss_and_grads(self, params, batch, cfg, rng=None, train=True):
        self.rows.append(batch["captions"].shape[0])
        return self.model.loss_and_grads(params, batch, cfg, rng, train=train)


def _batch(N=11, T=6, V=12, L=4, D=6, seed=0):
    rng = np.random.default_rng(seed)
    caps = rng.integers(3, V, size=(N, T + 1))
    caps[:, 0] = 1
    for n, k in enumerate(rng.integers(2, T + 1, size=N)):
        caps[n, k], caps[n, k + 1:] = 2, 0
    return dict(features=rng.standard_normal((N, L, D)), captions=caps, mask=caps[:, 1:] != 0,
                image_ids=[f"im{n}" for n in range(N)])


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("rank_rows", [None, 5])
def test_the_threads_shards_add_up_to_the_one_thread_step(name, rank_rows, split_threads, monkeypatch):
    monkeypatch.setattr(thread_shards, "ROWS_PER_THREAD", 2)
    cfg = dict(D=6, E=4, H=5, A=3, V=12, dropout=0.4, **{"lambda": 0.5})
    params = MODELS[name].init_params(cfg, np.random.default_rng(1), "float64")
    batch = _batch()

    def step(n):
        split_threads(n)
        model, generator = _Recording(MODELS[name]), np.random.default_rng(7)
        rng = generator if rank_rows is None else ShardRng(generator, rank_rows)  # a rank's rows of a larger batch
        out = thread_shards.loss_and_grads(model, params, batch, cfg, rng, train=True)
        return out, model.rows, generator.integers(0, 2**63)

    (loss1, g1, info1), rows1, next1 = step(1)
    assert rows1 == [11]
    for n, rows in ((2, [5, 6]), (3, [3, 4, 4])):
        (loss, g, info), got_rows, nxt = step(n)
        assert sorted(got_rows) == sorted(rows)
        assert nxt == next1  # the step's generator moved on as one step moves it
        np.testing.assert_allclose(loss, loss1, rtol=1e-12)
        assert list(g) == list(g1)
        for k in g1:
            np.testing.assert_allclose(g[k], g1[k], rtol=1e-10, atol=1e-14, err_msg=k)
        np.testing.assert_allclose(info["alphas"], info1["alphas"], rtol=1e-12)
        np.testing.assert_allclose(info["cross_entropy"], info1["cross_entropy"], rtol=1e-12)


def test_few_rows_or_no_generator_copy_is_the_plain_call(split_threads, monkeypatch):
    split_threads(2)
    name = "gru-attention"
    cfg = dict(D=6, E=4, H=5, A=3, V=12, dropout=0.0)
    params = MODELS[name].init_params(cfg, np.random.default_rng(1), "float64")
    model = _Recording(MODELS[name])
    thread_shards.loss_and_grads(model, params, _batch(N=2 * thread_shards.ROWS_PER_THREAD - 1), cfg, None)
    assert model.rows == [2 * thread_shards.ROWS_PER_THREAD - 1]
    model.rows.clear()
    thread_shards.loss_and_grads(model, params, _batch(N=2 * thread_shards.ROWS_PER_THREAD), cfg, None, train=False)
    assert sorted(model.rows) == [thread_shards.ROWS_PER_THREAD] * 2

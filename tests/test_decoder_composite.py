"""A decoder assembled from the layers: composite gradient checks and captioning sanity tests."""
import numpy as np
import pytest

from scratchcap.gradcheck import check_loss
from scratchcap.optim import Adam, clip_grad_norm
from tiny_decoder import init_params, loss_and_grads, toy_batch


@pytest.mark.parametrize("cell", ["gru", "lstm"])
@pytest.mark.parametrize("N,L,T", [(3, 4, 4), (1, 1, 1), (2, 3, 5)])
def test_composite_decoder_gradients(cell, N, L, T):
    rng = np.random.default_rng(N * 10 + T)
    V, D = 9, 5
    params = init_params(rng, V, D, cell=cell)
    features, captions = toy_batch(rng, N=N, L=L, D=D, T=T, V=V)
    captions[-1, 1:] = 0 if N > 1 else captions[-1, 1:]  # one caption fully masked when N > 1
    names = sorted(params)
    if L == 1:
        # One region: alpha is exactly 1, so the scoring weights get exactly zero gradient,
        # which central differences can only resolve down to rounding noise.
        _, grads = loss_and_grads(params, features, captions, cell)
        scoring = ["att_b1", "att_b2", "att_v", "att_w1", "att_w2"]
        assert all(not grads[k].any() for k in scoring)
        names = [k for k in names if k not in scoring]
    errors = check_loss(lambda p: loss_and_grads(p, features, captions, cell), params, names=names)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("cell", ["gru", "lstm"])
def test_initial_loss_is_close_to_log_v(cell):
    rng = np.random.default_rng(1)
    V = 50
    params = init_params(rng, V, D=8, cell=cell, scale=0.01)
    features, captions = toy_batch(rng, N=16, V=V)
    loss, _ = loss_and_grads(params, features, captions, cell)
    assert abs(float(loss) - np.log(V)) < 0.01 * np.log(V)


def test_attention_gru_overfits_eight_captions():
    rng = np.random.default_rng(2)
    V = 12
    params = init_params(rng, V, D=8, F=16, E=16, H=32, A=16, cell="gru", scale=0.1)
    features, captions = toy_batch(rng, N=8, V=V)
    opt = Adam(lr=1e-2)
    first = None
    for step in range(300):
        loss, grads = loss_and_grads(params, features, captions, "gru")
        first = float(loss) if first is None else first
        grads, _ = clip_grad_norm(grads, 5.0)
        opt.step(params, grads)
    assert first > 2.0
    assert float(loss) < 0.02, f"loss after 300 Adam steps is {float(loss):.4f}"

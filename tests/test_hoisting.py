"""The keywords that let a decoder hoist work out of its time loop give the same gradients as the plain calls."""
import numpy as np
import pytest

from scratchcap import ops
from scratchcap.backend import to_numpy


def _attend_case(xp, rng, N=3, L=5, D=4, H=6, A=7, dtype="float64", k=1):
    """attend_forward's arguments; k queries per image."""
    def r(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    features, w1, b1 = r(N, L, D), r(D, A), r(A)
    projected, _ = ops.linear_forward(features, w1, b1)
    return features, projected, r(N * k, H), r(H, A), r(A), r(A)


def _attend_plain(xp, seed, k=1):
    """One attention step: (its forward arguments, cache, upstream gradients, the plain backward's outputs)."""
    rng = np.random.default_rng(seed)
    args = _attend_case(xp, rng, k=k)
    (ctx, alpha), cache = ops.attend_forward(*args)
    douts = (xp.asarray(rng.standard_normal(ctx.shape)), xp.asarray(rng.standard_normal(alpha.shape)))
    return args, cache, douts, ops.attend_backward(douts, cache)


@pytest.mark.parametrize("k", [1, 3])
def test_attend_backward_into_buffer_equals_plain(xp, k):
    (_, projected, *_), cache, douts, plain = _attend_plain(xp, 0, k)
    start = xp.asarray(np.random.default_rng(10).standard_normal(projected.shape))
    buffer = start.copy()
    hoisted = ops.attend_backward(douts, cache, features_grad=False, dprojected=buffer)
    assert hoisted[0] is None
    assert hoisted[1] is buffer
    np.testing.assert_allclose(to_numpy(buffer), to_numpy(start + plain[1]), rtol=1e-12, atol=1e-12)
    for a, b in zip(plain[2:], hoisted[2:]):
        np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-12)


def test_attend_features_grad_sums_the_steps(xp):
    rng = np.random.default_rng(1)
    N, T, L, D = 3, 4, 5, 2
    features, projected, q, w2, b2, v = _attend_case(xp, rng, N=N, L=L, D=D)
    alphas = xp.empty((N, T, L))
    dcontexts = xp.asarray(rng.standard_normal((N, T, D)))
    total = xp.zeros((N, L, D))
    for t in range(T):
        q = xp.asarray(rng.standard_normal(q.shape))
        (_, alpha), cache = ops.attend_forward(features, projected, q, w2, b2, v)
        alphas[:, t] = alpha
        total += ops.attend_backward((dcontexts[:, t], None), cache)[0]
    np.testing.assert_allclose(to_numpy(ops.attend_features_grad(alphas, dcontexts)), to_numpy(total),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("mask", [False, True])
def test_k_queries_per_image_equal_the_features_repeated_k_times(xp, mask):
    """What beam search relies on: asking k queries of one copy of each image is asking each of k copies once,
    forward and backward (the copies' gradients summed)."""
    k, N, L = 3, 2, 5
    rng = np.random.default_rng(7)
    features, projected, q, w2, b2, v = _attend_case(xp, rng, N=N, L=L, k=k)
    m = xp.asarray(np.array([[True] * L, [True, False, True, False, False]])) if mask else None
    (ctx, alpha), cache = ops.attend_forward(features, projected, q, w2, b2, v, mask=m)
    rep = [xp.repeat(a, k, axis=0) for a in (features, projected)]
    (ctx_r, alpha_r), cache_r = ops.attend_forward(*rep, q, w2, b2, v, mask=None if m is None else xp.repeat(m, k, 0))
    _close(ctx, ctx_r)
    _close(alpha, alpha_r)
    douts = (xp.asarray(rng.standard_normal(ctx.shape)), xp.asarray(rng.standard_normal(alpha.shape)))
    got, want = ops.attend_backward(douts, cache), ops.attend_backward(douts, cache_r)
    for g, w in zip(got[:2], want[:2]):  # dfeatures, dprojected: per copy, summed over an image's k copies
        _close(g, w.reshape((N, k) + w.shape[1:]).sum(axis=1))
    for g, w in zip(got[2:], want[2:]):
        _close(g, w)


@pytest.mark.parametrize("k", [1, 3])
def test_attend_without_keeping_activations_gives_the_same_outputs_and_no_cache(xp, k):
    args = _attend_case(xp, np.random.default_rng(9), N=5, L=7, k=k)
    (ctx, alpha), _ = ops.attend_forward(*args)
    (ctx2, alpha2), cache = ops.attend_forward(*args, keep=False)
    assert cache is None
    _close(ctx2, ctx)
    _close(alpha2, alpha)


def test_attend_refuses_a_query_count_that_is_not_a_multiple_of_the_images(xp):
    features, projected, q, w2, b2, v = _attend_case(xp, np.random.default_rng(8), N=2)
    with pytest.raises(ValueError, match="3 rows for 2 images"):
        ops.attend_forward(features, projected, q[:1].repeat(3, axis=0), w2, b2, v)


def test_linear_backward_without_input_grad(xp):
    rng = np.random.default_rng(2)
    x, w, b = (xp.asarray(rng.standard_normal(s)) for s in ((2, 3, 4), (4, 5), (5,)))
    out, cache = ops.linear_forward(x, w, b)
    dout = xp.asarray(rng.standard_normal(out.shape))
    dx, dw, db = ops.linear_backward(dout, cache)
    none, dw2, db2 = ops.linear_backward(dout, cache, input_grad=False)
    assert none is None and dx.shape == x.shape
    np.testing.assert_array_equal(to_numpy(dw), to_numpy(dw2))
    np.testing.assert_array_equal(to_numpy(db), to_numpy(db2))


def _close(a, b):
    np.testing.assert_allclose(to_numpy(a), to_numpy(b), rtol=1e-12, atol=1e-12)


def test_linear_weight_grads_sum_over_any_rows(xp):
    """Stacked (T, N, .) rows give the sum of the T steps' weight gradients."""
    rng = np.random.default_rng(3)
    T, N, D, M = 4, 3, 5, 2
    xs, douts = (xp.asarray(rng.standard_normal(s)) for s in ((T, N, D), (T, N, M)))
    dw, db = ops.linear_weight_grads(xs, douts)
    w, b = xp.asarray(rng.standard_normal((D, M))), xp.asarray(rng.standard_normal(M))
    steps = [ops.linear_backward(douts[t], ops.linear_forward(xs[t], w, b)[1]) for t in range(T)]
    _close(dw, sum(s[1] for s in steps))
    _close(db, sum(s[2] for s in steps))


def test_gru_step_backward_into_gate_buffers_equals_plain(xp):
    rng = np.random.default_rng(4)
    N, D, H = 3, 4, 5
    x, h, wx, wh, bx, bh = (xp.asarray(rng.standard_normal(s)) for s in
                            ((N, D), (N, H), (D, 3 * H), (H, 3 * H), (3 * H,), (3 * H,)))
    _, cache = ops.gru_step_forward(x, h, wx, wh, bx, bh)
    dh_next = xp.asarray(rng.standard_normal((N, H)))
    plain = ops.gru_step_backward(dh_next, cache)
    dgx, dgh = xp.full((N, 3 * H), np.nan), xp.full((N, 3 * H), np.nan)
    hoisted = ops.gru_step_backward(dh_next, cache, dgates=(dgx, dgh))
    assert hoisted[2:] == (None,) * 4
    _close(hoisted[0], plain[0])
    _close(hoisted[1], plain[1])
    dwx, dbx = ops.linear_weight_grads(x, dgx)
    dwh, dbh = ops.linear_weight_grads(h, dgh)
    for a, b in zip((dwx, dwh, dbx, dbh), plain[2:]):
        _close(a, b)


def test_lstm_step_backward_into_a_gate_buffer_equals_plain(xp):
    rng = np.random.default_rng(5)
    N, D, H = 3, 4, 5
    x, h, c, wx, wh, b = (xp.asarray(rng.standard_normal(s)) for s in
                          ((N, D), (N, H), (N, H), (D, 4 * H), (H, 4 * H), (4 * H,)))
    _, cache = ops.lstm_step_forward(x, h, c, wx, wh, b)
    douts = (xp.asarray(rng.standard_normal((N, H))), xp.asarray(rng.standard_normal((N, H))))
    plain = ops.lstm_step_backward(douts, cache)
    da = xp.full((N, 4 * H), np.nan)
    hoisted = ops.lstm_step_backward(douts, cache, dgates=da)
    assert hoisted[3:] == (None,) * 3
    for a, b in zip(hoisted[:3], plain[:3]):
        _close(a, b)
    dwx, db = ops.linear_weight_grads(x, da)
    dwh, _ = ops.linear_weight_grads(h, da)
    for a, b in zip((dwx, dwh, db), plain[3:]):
        _close(a, b)


@pytest.mark.parametrize("k", [1, 2])
def test_attend_backward_into_a_query_buffer_equals_plain(xp, k):
    (_, _, q, w2, _, _), cache, douts, plain = _attend_plain(xp, 6, k)
    dqp = xp.full((q.shape[0], w2.shape[1]), np.nan)
    hoisted = ops.attend_backward(douts, cache, dprojected_query=dqp)
    assert hoisted[3] is None and hoisted[4] is None
    for k in (0, 1, 2, 5):
        _close(hoisted[k], plain[k])
    dw2, db2 = ops.linear_weight_grads(q, dqp)
    _close(dw2, plain[3])
    _close(db2, plain[4])

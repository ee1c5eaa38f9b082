"""The keywords that let a decoder hoist work out of its time loop give the same gradients as the plain calls."""
import numpy as np

from scratchcap import ops
from scratchcap.backend import to_numpy


def _attend_case(xp, rng, N=3, L=5, D=4, H=6, A=7, dtype="float64"):
    def r(*shape):
        return xp.asarray(rng.standard_normal(shape).astype(dtype))

    features, w1, b1 = r(N, L, D), r(D, A), r(A)
    projected, _ = ops.linear_forward(features, w1, b1)
    return features, projected, r(N, H), r(H, A), r(A), r(A)


def test_attend_backward_into_buffer_equals_plain(xp):
    rng = np.random.default_rng(0)
    features, projected, q, w2, b2, v = _attend_case(xp, rng)
    (ctx, alpha), cache = ops.attend_forward(features, projected, q, w2, b2, v)
    douts = (xp.asarray(rng.standard_normal(ctx.shape)), xp.asarray(rng.standard_normal(alpha.shape)))
    plain = ops.attend_backward(douts, cache)
    start = xp.asarray(rng.standard_normal(projected.shape))
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

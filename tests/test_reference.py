"""Forward passes against trusted independent implementations (SciPy, plain loops, PyTorch when present)."""
import numpy as np
import pytest

from scratchcap import ops
from tolerances import assert_close

scipy_signal = pytest.importorskip("scipy.signal")
scipy_special = pytest.importorskip("scipy.special")


def _rng():
    return np.random.default_rng(42)


@pytest.mark.parametrize("stride,padding", [(1, "same"), (1, "valid"), (2, "valid"), (2, 1), (1, 2)])
def test_conv2d_matches_scipy_correlation(stride, padding):
    rng = _rng()
    x = rng.standard_normal((2, 7, 6, 3))
    w = rng.standard_normal((3, 3, 3, 4))
    b = rng.standard_normal(4)
    out, _ = ops.conv2d_forward(x, w, b, stride=stride, padding=padding)
    pad = 1 if padding == "same" else 0 if padding == "valid" else padding
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for n in range(2):
        for f in range(4):
            ref = sum(scipy_signal.correlate2d(xpad[n, :, :, c], w[:, :, c, f], mode="valid")
                      for c in range(3)) + b[f]
            np.testing.assert_allclose(out[n, :, :, f], ref[::stride, ::stride], rtol=1e-10, atol=1e-10)


def test_conv2d_same_with_stride_2_pads_like_keras():
    # Keras 'same' with stride 2 on an even input puts the one padding pixel after, not before.
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    w = np.zeros((3, 3, 1, 1))
    w[0, 0, 0, 0] = 1.0  # picks the top-left pixel of each window
    out, _ = ops.conv2d_forward(x, w, np.zeros(1), stride=2, padding="same")
    np.testing.assert_array_equal(out[0, :, :, 0], [[0.0, 2.0], [8.0, 10.0]])


def test_max_pool2d_matches_block_maximum():
    x = _rng().standard_normal((2, 6, 4, 3))
    out, _ = ops.max_pool2d_forward(x)
    ref = x.reshape(2, 3, 2, 2, 2, 3).max(axis=(2, 4))
    np.testing.assert_array_equal(out, ref)


def test_softmax_and_log_softmax_match_scipy_and_survive_large_inputs():
    x = _rng().standard_normal((3, 5)) * 50 + 1000
    np.testing.assert_allclose(ops.softmax_forward(x)[0], scipy_special.softmax(x, axis=-1), rtol=1e-12)
    np.testing.assert_allclose(ops.log_softmax_forward(x)[0], scipy_special.log_softmax(x, axis=-1),
                               rtol=1e-12)
    assert np.isfinite(ops.log_softmax_forward(x.astype(np.float32))[0]).all()


def test_temporal_cross_entropy_matches_a_direct_sum():
    rng = _rng()
    logits = rng.standard_normal((2, 3, 5))
    targets = rng.integers(0, 5, (2, 3))
    mask = np.array([[True, True, False], [True, False, False]])
    loss, _ = ops.temporal_cross_entropy_forward(logits, targets, mask)
    logp = scipy_special.log_softmax(logits, axis=-1)
    ref = -np.mean([logp[n, t, targets[n, t]] for n in range(2) for t in range(3) if mask[n, t]])
    assert float(loss) == pytest.approx(ref, rel=1e-12)
    none, cache = ops.temporal_cross_entropy_forward(logits, targets, np.zeros_like(mask))
    assert float(none) == 0.0
    assert not ops.temporal_cross_entropy_backward(1.0, cache)[0].any()


def _sig(a):
    return 1 / (1 + np.exp(-a))


def test_lstm_step_follows_the_ifgo_equations():
    rng = _rng()
    N, D, H = 2, 3, 4
    x, h, c = rng.standard_normal((N, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    wx, wh, b = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    (h1, c1), _ = ops.lstm_step_forward(x, h, c, wx, wh, b)
    a = x @ wx + h @ wh + b
    i, f, g, o = _sig(a[:, :H]), _sig(a[:, H:2 * H]), np.tanh(a[:, 2 * H:3 * H]), _sig(a[:, 3 * H:])
    np.testing.assert_allclose(c1, f * c + i * g, rtol=1e-12)
    np.testing.assert_allclose(h1, o * np.tanh(f * c + i * g), rtol=1e-12)


def test_sequence_versions_equal_repeated_steps():
    rng = _rng()
    N, T, D, H = 2, 4, 3, 5
    x = rng.standard_normal((N, T, D))
    h0, c0 = rng.standard_normal((N, H)), rng.standard_normal((N, H))
    lw = rng.standard_normal((D, 4 * H)), rng.standard_normal((H, 4 * H)), rng.standard_normal(4 * H)
    gw = (rng.standard_normal((D, 3 * H)), rng.standard_normal((H, 3 * H)),
          rng.standard_normal(3 * H), rng.standard_normal(3 * H))
    hs, _ = ops.lstm_forward(x, h0, c0, *lw)
    gs, _ = ops.gru_forward(x, h0, *gw)
    h, c, g = h0, c0, h0
    for t in range(T):
        (h, c), _ = ops.lstm_step_forward(x[:, t], h, c, *lw)
        g, _ = ops.gru_step_forward(x[:, t], g, *gw)
        np.testing.assert_allclose(hs[:, t], h, rtol=1e-12)
        np.testing.assert_allclose(gs[:, t], g, rtol=1e-12)


def test_attention_matches_its_definition_and_respects_the_mask():
    rng = _rng()
    N, L, D, H, A = 2, 5, 3, 4, 6
    feats, q = rng.standard_normal((N, L, D)), rng.standard_normal((N, H))
    w1, b1, w2, b2, v = (rng.standard_normal(s) for s in [(D, A), (A,), (H, A), (A,), (A,)])
    mask = np.array([[True] * 5, [True, True, False, False, True]])
    (ctx, alpha), _ = ops.additive_attention_forward(feats, q, w1, b1, w2, b2, v, mask=mask)
    for n in range(N):
        e = np.array([v @ np.tanh(feats[n, l] @ w1 + b1 + q[n] @ w2 + b2) for l in range(L)])
        e[~mask[n]] = -np.inf
        ref = scipy_special.softmax(e)
        np.testing.assert_allclose(alpha[n], ref, rtol=1e-12)
        np.testing.assert_allclose(ctx[n], ref @ feats[n], rtol=1e-12)
    assert (alpha[~mask] == 0).all()


def test_embedding_backward_accumulates_repeated_ids():
    w = np.zeros((4, 2))
    idx = np.array([[1, 1, 3]])
    (dw,) = ops.embedding_backward(np.ones((1, 3, 2)), ops.embedding_forward(idx, w)[1])
    np.testing.assert_array_equal(dw, [[0, 0], [2, 2], [0, 0], [1, 1]])


def test_dropout_is_reproducible_and_keeps_the_expectation():
    x = np.ones((200, 100))
    a, _ = ops.dropout_forward(x, 0.25, np.random.default_rng(3))
    b, _ = ops.dropout_forward(x, 0.25, np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert set(np.unique(a)) == {0.0, 1 / 0.75}
    assert abs(a.mean() - 1.0) < 0.02
    assert abs((a == 0).mean() - 0.25) < 0.02
    same, _ = ops.dropout_forward(x, 0.25, np.random.default_rng(3), train=False)
    assert same is x


def test_max_pool2d_backward_gives_a_tied_window_to_its_first_max():
    x = np.zeros((1, 4, 4, 2))
    x[0, 2, 3, 1] = x[0, 3, 2, 1] = 5.0  # window (1, 1) of channel 1: a tie between offsets 1 and 2
    out, cache = ops.max_pool2d_forward(x)
    dout = np.arange(1.0, 9.0).reshape(1, 2, 2, 2)
    (dx,) = ops.max_pool2d_backward(dout, cache)
    assert dx.sum() == dout.sum()  # every window passes its gradient on exactly once
    np.testing.assert_array_equal(dx[0, ::2, ::2, 0], dout[0, :, :, 0])  # all-zero windows: offset 0
    assert dx[0, 2, 3, 1] == dout[0, 1, 1, 1] and dx[0, 3, 2, 1] == 0.0


@pytest.mark.parametrize("block_bytes", [1 << 30, 2000])  # one GEMM for the batch; image by image in row blocks
@pytest.mark.parametrize("stride,padding", [(1, "same"), (2, "valid")])
def test_conv2d_workspace_and_fused_relu_equal_the_plain_layer(monkeypatch, block_bytes, stride, padding):
    from scratchcap.ops import conv as conv_module

    monkeypatch.setattr(conv_module, "BLOCK_BYTES", block_bytes)
    rng = _rng()
    x, w, b = rng.standard_normal((2, 9, 7, 3)), rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    plain, cache = ops.conv2d_forward(x, w, b, stride=stride, padding=padding)
    assert cache is not None
    ws = ops.Workspace()
    for _ in range(2):  # the second call reuses the buffers
        blocked, _ = ops.conv2d_forward(x, w, b, stride=stride, padding=padding, workspace=ws)
        np.testing.assert_allclose(blocked, plain, rtol=1e-12, atol=1e-12)
        fused, none = ops.conv2d_forward(x, w, b, stride=stride, padding=padding, workspace=ws, relu=True)
        np.testing.assert_allclose(fused, np.maximum(plain, 0), rtol=1e-12, atol=1e-12)
        assert none is None
    fused, none = ops.conv2d_forward(x, w, b, stride=stride, padding=padding, relu=True)
    np.testing.assert_allclose(fused, np.maximum(plain, 0), rtol=1e-12, atol=1e-12)
    assert none is None


@pytest.mark.parametrize("shape,padding", [
    ((2, 8, 6, 3), "same"),   # whole tiles
    ((1, 7, 5, 2), "same"),   # odd output: the last tiles are cut
    ((2, 9, 8, 3), "valid"),
    ((1, 6, 6, 1), 2),
    ((1, 1, 1, 4), "same"),   # one pixel
])
def test_winograd_conv2d_matches_scipy_correlation(shape, padding):
    rng = _rng()
    x = rng.standard_normal(shape)
    w = rng.standard_normal((3, 3, shape[3], 5))
    b = rng.standard_normal(5)
    u = ops.winograd_kernel(w)
    assert u.shape == (16, shape[3], 5) and u.dtype == w.dtype
    out, cache = ops.conv2d_forward(x, w, b, padding=padding, winograd=u)
    pad = 1 if padding == "same" else 0 if padding == "valid" else padding
    xpad = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    for n in range(shape[0]):
        for f in range(5):
            ref = sum(scipy_signal.correlate2d(xpad[n, :, :, c], w[:, :, c, f], mode="valid")
                      for c in range(shape[3])) + b[f]
            np.testing.assert_allclose(out[n, :, :, f], ref, rtol=1e-10, atol=1e-10)
    assert out.flags.c_contiguous
    # The backward does not care which algorithm ran the forward.
    _, plain_cache = ops.conv2d_forward(x, w, b, padding=padding)
    dout = rng.standard_normal(out.shape)
    for got, want in zip(ops.conv2d_backward(dout, cache), ops.conv2d_backward(dout, plain_cache)):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("budgets", [(1 << 30, 1 << 30), (6000, 1), (40000, 3000)])  # whole batch; rows; images
def test_winograd_blocks_and_workspace_equal_one_pass(monkeypatch, budgets):
    from scratchcap.ops import conv as conv_module

    monkeypatch.setattr(conv_module, "WINOGRAD_BLOCK_BYTES", budgets[0])
    monkeypatch.setattr(conv_module, "WINOGRAD_CHUNK_BYTES", budgets[1])
    rng = _rng()
    x = rng.standard_normal((3, 10, 12, 4)).astype(np.float32)
    w = rng.standard_normal((3, 3, 4, 6)).astype(np.float32)
    b = rng.standard_normal(6).astype(np.float32)
    ref, _ = ops.conv2d_forward(x, w, b)
    ws = ops.Workspace()
    for _ in range(2):  # the second call reuses the buffers
        got, cache = ops.conv2d_forward(x, w, b, workspace=ws, relu=True, winograd=ops.winograd_kernel(w))
        assert got.dtype == np.float32 and cache is None
        # Winograd's transforms add and subtract the input tile before the GEMM: a few roundings more than im2col's
        # sum of 3*3*4 products, each relative to the terms, not to a near-zero output.
        assert_close(got, np.maximum(ref, 0), "float32", depth=64)


def test_winograd_refuses_what_it_cannot_compute():
    rng = _rng()
    x, b = rng.standard_normal((1, 6, 6, 2)), np.zeros(3)
    w = rng.standard_normal((3, 3, 2, 3))
    with pytest.raises(ValueError, match="3x3 kernel and stride 1"):
        ops.conv2d_forward(x, w, b, stride=2, winograd=ops.winograd_kernel(w))
    with pytest.raises(ValueError, match="3x3 kernel and stride 1"):
        ops.conv2d_forward(x, np.zeros((5, 5, 2, 3)), b, winograd=ops.winograd_kernel(w))
    with pytest.raises(ValueError, match=r"expected \(16, 2, 3\)"):
        ops.conv2d_forward(x, w, b, winograd=ops.winograd_kernel(w[:, :, :, :2]))
    with pytest.raises(ValueError, match="needs a 3x3 kernel"):
        ops.winograd_kernel(np.zeros((5, 5, 2, 3)))


def test_workspace_shares_scratch_by_tag_and_keeps_zeroed_buffers_by_shape():
    ws = ops.Workspace()
    a = ws.get(np, "t", (2, 3), np.float32)
    b = ws.get(np, "t", (4, 5), np.float32)  # grows
    c = ws.get(np, "t", (3,), np.float32)    # fits in what is there
    assert a.shape == (2, 3) and b.shape == (4, 5) and c.shape == (3,) and np.shares_memory(b, c)
    assert not np.shares_memory(b, ws.get(np, "u", (4, 5), np.float32))
    assert ws.get(np, "t", (2,), np.float64).dtype == np.float64
    z = ws.get(np, "pad", (2, 2), np.float32, zeros=True)
    assert not z.any() and ws.get(np, "pad", (2, 2), np.float32, zeros=True) is z
    assert ws.get(np, "pad", (2, 3), np.float32, zeros=True) is not z

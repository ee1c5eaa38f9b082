import numpy as np
import pytest

from scratchcap.backend import to_numpy
from scratchcap.optim import SGD, Adam, clip_grad_norm, global_norm


def _params(xp, dtype="float64"):
    rng = np.random.default_rng(0)
    return {"w": xp.asarray(rng.standard_normal((3, 2)), dtype=dtype),
            "b": xp.asarray(rng.standard_normal(2), dtype=dtype)}


def _grads(xp, t, dtype="float64"):
    rng = np.random.default_rng(100 + t)
    return {"w": xp.asarray(rng.standard_normal((3, 2)), dtype=dtype),
            "b": xp.asarray(rng.standard_normal(2), dtype=dtype)}


def test_adam_follows_kingma_and_ba_with_bias_correction(xp):
    params = _params(xp)
    ref = {k: to_numpy(v).copy() for k, v in params.items()}
    m = {k: np.zeros_like(v) for k, v in ref.items()}
    v2 = {k: np.zeros_like(v) for k, v in ref.items()}
    lr, b1, b2, eps = 1e-2, 0.9, 0.999, 1e-8
    opt = Adam(lr=lr, beta1=b1, beta2=b2, eps=eps)
    for t in range(1, 6):
        g = _grads(xp, t)
        opt.step(params, g)
        for k in ref:
            gk = to_numpy(g[k])
            m[k] = b1 * m[k] + (1 - b1) * gk
            v2[k] = b2 * v2[k] + (1 - b2) * gk ** 2
            mhat, vhat = m[k] / (1 - b1 ** t), v2[k] / (1 - b2 ** t)
            ref[k] = ref[k] - lr * mhat / (np.sqrt(vhat) + eps)
    for k in ref:
        np.testing.assert_allclose(to_numpy(params[k]), ref[k], rtol=1e-12)


def test_sgd_momentum_and_weight_decay():
    p = {"w": np.array([1.0, -2.0])}
    opt = SGD(lr=0.1, momentum=0.9, weight_decay=0.5)
    opt.step(p, {"w": np.array([1.0, 1.0])})   # g = 1 + 0.5 * p = [1.5, 0]; v = g
    np.testing.assert_allclose(p["w"], [0.85, -2.0])
    opt.step(p, {"w": np.array([0.0, 0.0])})   # g = [0.425, -1]; v = 0.9 * [1.5, 0] + g
    np.testing.assert_allclose(p["w"], [0.85 - 0.1 * (1.35 + 0.425), -2.0 + 0.1])


def test_optimizers_keep_float32():
    for opt in (SGD(lr=0.1, momentum=0.9, weight_decay=1e-3), Adam(weight_decay=1e-3)):
        params = _params(np, "float32")
        opt.step(params, _grads(np, 1, "float32"))
        assert all(p.dtype == np.float32 for p in params.values())
        assert all(s.dtype == np.float32 for k, s in opt.state_dict().items() if "/" in k)


def test_adam_state_round_trips_by_name_and_resumes_identically():
    a, b = _params(np), _params(np)
    opt_a = Adam(lr=1e-2)
    for t in range(3):
        opt_a.step(a, _grads(np, t))
    state = {k: (v.copy() if hasattr(v, "copy") else v) for k, v in opt_a.state_dict().items()}
    assert sorted(k for k in state if "/" in k) == ["m/b", "m/w", "v/b", "v/w"]
    b = {k: v.copy() for k, v in a.items()}
    opt_b = Adam(lr=1e-2)
    opt_b.load_state_dict(state, b)
    opt_a.step(a, _grads(np, 9))
    opt_b.step(b, _grads(np, 9))
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])


def test_load_state_dict_rejects_foreign_state():
    params = _params(np)
    with pytest.raises(ValueError, match="names parameter 'emb'"):
        Adam().load_state_dict({"step": 1, "m/emb": np.zeros(2)}, params)
    with pytest.raises(ValueError, match=r"has shape \(5,\), parameter \(2,\)"):
        Adam().load_state_dict({"step": 1, "m/b": np.zeros(5)}, params)


def test_step_rejects_mismatched_names():
    with pytest.raises(ValueError, match=r"missing \['b'\]"):
        Adam().step(_params(np), {"w": np.zeros((3, 2))})


def test_clip_grad_norm_scales_together_and_leaves_input_alone():
    grads = {"a": np.array([3.0, 0.0]), "b": np.array([4.0])}
    clipped, norm = clip_grad_norm(grads, 1.0)
    assert norm == pytest.approx(5.0)
    assert global_norm(clipped) == pytest.approx(1.0)
    np.testing.assert_allclose(clipped["a"], [0.6, 0.0])
    np.testing.assert_array_equal(grads["a"], [3.0, 0.0])
    same, _ = clip_grad_norm(grads, 10.0)
    assert same["b"] is grads["b"]


def test_bad_learning_rate():
    with pytest.raises(ValueError, match="learning rate"):
        Adam(lr=0)


def test_a_learning_rate_factor_per_name_prefix():
    """lr_scale: the fine-tuned VGG-16 layers step at their own rate; every other parameter at lr."""
    from scratchcap.optim import SGD

    params = {"vgg16/block5_conv3/kernel": np.ones(3), "decoder/w": np.ones(3)}
    grads = {k: np.ones(3) for k in params}
    SGD(lr=0.1, lr_scale={"vgg16/": 0.01}).step(params, grads)
    np.testing.assert_allclose(params["decoder/w"], 0.9)
    np.testing.assert_allclose(params["vgg16/block5_conv3/kernel"], 0.999)
    opt = Adam(lr=0.1, lr_scale={"vgg16/": 0.5})
    assert opt.lr_of("vgg16/x") == 0.05 and opt.lr_of("lstm/wx") == 0.1
    with pytest.raises(ValueError, match="positive"):
        Adam(lr=0.1, lr_scale={"vgg16/": 0.0})

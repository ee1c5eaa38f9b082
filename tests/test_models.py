"""The decoders: whole-model gradient checks (float64), dtype, and the loss at initialisation."""
import numpy as np
import pytest

from scratchcap.gradcheck import check_loss
from scratchcap.gradcheck_cases import caption_batch
from scratchcap.models import MODELS, get_model


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("N,T,L,lam", [(3, 4, 5, 0.0), (2, 3, 4, 0.8), (1, 1, 1, 0.0), (1, 3, 1, 0.5)])
def test_model_gradients(name, N, T, L, lam):
    rng = np.random.default_rng(N * 100 + T * 10 + L)
    cfg = dict(D=6, E=4, H=5, A=3, V=9, dropout=0.3, **{"lambda": lam})
    params = MODELS[name].init_params(cfg, np.random.default_rng(1), "float64")
    # Away from the initialisation: its zero biases and small attention scores would hide terms, and leave
    # gradients so small (the sentinel's ~1e-5) that the loss's rounding dominates the differences.
    shift = np.random.default_rng(7)
    params = {k: v + 0.5 * shift.standard_normal(v.shape) for k, v in params.items()}
    batch = caption_batch(rng, N, T, L, 6, 9)
    names = sorted(params)
    if L == 1 and not getattr(MODELS[name], "SENTINEL", False):
        # one region: the attention scores cannot change alpha, so their gradient is exactly zero (with the
        # sentinel there are two candidates, and they can)
        _, g, _ = MODELS[name].loss_and_grads(params, batch, cfg, np.random.default_rng(5))
        scoring = [k for k in names if k in ("attention/b1", "attention/b2", "attention/v", "attention/w1",
                                             "attention/w2")]
        assert all(not g[k].any() for k in scoring)
        names = [k for k in names if k not in scoring]
    errors = check_loss(lambda p: MODELS[name].loss_and_grads(p, batch, cfg, np.random.default_rng(5))[:2],
                        params, names=names)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("N,T,L,lam", [(2, 3, 4, 0.8), (1, 1, 1, 0.0)])
def test_the_features_gradient_that_fine_tuning_needs(name, N, T, L, lam):
    """features_grad=True adds the gradient of the (unscaled) features, against central differences."""
    from scratchcap.gradcheck import numerical_gradient, relative_error

    model = MODELS[name]
    cfg = dict(D=6, E=4, H=5, A=3, V=9, dropout=0.3, feature_scale=0.7, **{"lambda": lam})
    shift = np.random.default_rng(7)
    params = {k: v + 0.5 * shift.standard_normal(v.shape)
              for k, v in model.init_params(cfg, np.random.default_rng(1), "float64").items()}
    batch = caption_batch(np.random.default_rng(N + T + L), N, T, L, 6, 9)
    plain = model.loss_and_grads(params, batch, cfg, np.random.default_rng(5))
    loss, grads, info = model.loss_and_grads(params, batch, cfg, np.random.default_rng(5), features_grad=True)
    assert loss == plain[0] and "dfeatures" not in plain[2]
    assert all((grads[k] == plain[1][k]).all() for k in grads)  # the parameters' gradients do not change
    numeric = numerical_gradient(lambda: model.loss_and_grads(params, batch, cfg, np.random.default_rng(5))[0],
                                 batch["features"], 1e-5)
    assert info["dfeatures"].shape == batch["features"].shape
    assert relative_error(info["dfeatures"], numeric) < 1e-7


@pytest.mark.parametrize("name", sorted(MODELS))
def test_float32_training_step_stays_float32(name):
    cfg = dict(D=6, E=4, H=5, A=3, V=9, dropout=0.3)
    params = MODELS[name].init_params(cfg, np.random.default_rng(1))
    batch = caption_batch(np.random.default_rng(0), 2, 3, 4, 6, 9, "float32")
    loss, grads, info = MODELS[name].loss_and_grads(params, batch, cfg, np.random.default_rng(0))
    assert all(p.dtype == np.float32 for p in params.values())
    assert all(grads[k].dtype == np.float32 and grads[k].shape == params[k].shape for k in params)
    assert np.isfinite(loss)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_initial_loss_is_close_to_log_v(name):
    V = 60
    cfg = dict(D=16, E=16, H=16, A=8, V=V, dropout=0.0)
    params = MODELS[name].init_params(cfg, np.random.default_rng(1))
    for k in params:  # small weights: near-uniform predictions
        params[k] *= 0.01
    batch = caption_batch(np.random.default_rng(0), 16, 8, 5, 16, V, "float32")
    loss, _, info = MODELS[name].loss_and_grads(params, batch, cfg, None, train=False)
    assert abs(info["cross_entropy"] - np.log(V)) < 0.02 * np.log(V)


def test_unknown_model_is_named():
    with pytest.raises(ValueError, match="unknown model 'transformer'"):
        get_model("transformer")


@pytest.mark.parametrize("name", sorted(MODELS))
def test_feature_scale_is_applied_in_training_and_decoding(name):
    """cfg["feature_scale"] s on features f is the same model as no scale on s * f, and it changes the loss."""
    cfg = dict(D=6, E=4, H=5, A=3, V=9, dropout=0.0)
    scaled = dict(cfg, feature_scale=0.25)
    model = MODELS[name]
    params = model.init_params(cfg, np.random.default_rng(1), "float64")
    batch = caption_batch(np.random.default_rng(0), 3, 4, 5, 6, 9)
    by_hand = dict(batch, features=batch["features"] * 0.25)
    a = model.loss_and_grads(params, batch, scaled, None, train=False)[0]
    b = model.loss_and_grads(params, by_hand, cfg, None, train=False)[0]
    c = model.loss_and_grads(params, batch, cfg, None, train=False)[0]
    assert abs(a - b) < 1e-12 and abs(a - c) > 1e-6
    words = np.array([1, 1, 1])
    enc_a, state_a = model.decode_start(params, batch["features"], scaled)
    enc_b, state_b = model.decode_start(params, by_hand["features"], cfg)
    np.testing.assert_allclose(model.decode_step(params, enc_a, state_a, words)[0],
                               model.decode_step(params, enc_b, state_b, words)[0], rtol=1e-12)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_label_smoothing_applies_in_training_only_and_its_gradient_checks(name):
    cfg = dict(D=6, E=4, H=5, A=3, V=9, dropout=0.0, label_smoothing=0.1)
    params = MODELS[name].init_params(cfg, np.random.default_rng(1), "float64")
    batch = caption_batch(np.random.default_rng(2), 2, 3, 4, 6, 9)
    smoothed = MODELS[name].loss_and_grads(params, batch, cfg, None, train=True)[0]
    plain = MODELS[name].loss_and_grads(params, batch, dict(cfg, label_smoothing=0.0), None, train=True)[0]
    assert smoothed != plain
    assert MODELS[name].loss_and_grads(params, batch, cfg, None, train=False)[0] == plain  # validation: plain
    errors = check_loss(lambda p: MODELS[name].loss_and_grads(p, batch, cfg, None)[:2], params)
    assert max(errors.values()) < 1e-6, errors


@pytest.mark.parametrize("name", ["gru-attention", "lstm-adaptive", "lstm-attention"])
@pytest.mark.parametrize("block, N, S", [("block5_conv3", 2, 2), ("block5", 1, 1)])
def test_fine_tuned_model_gradients_through_the_convolutions(name, block, N, S):
    """The whole model, decoder and VGG-16 layers, against central differences (tiny channels; one region)."""
    from scratchcap.models import model_for
    from scratchcap.models.fine_tune import BLOCKS, vgg_params

    C = 3
    cfg = dict(D=C, E=4, H=5, A=3, V=9, dropout=0.3, grid=[S, S], fine_tune=block, feature_scale=0.8,
               **{"lambda": 0.3})
    model = model_for(name, cfg)
    rng = np.random.default_rng(3)
    layers = {layer: (rng.standard_normal((3, 3, C, C)) * 0.5, rng.standard_normal(C) * 0.1 + 0.2)
              for layer in BLOCKS[block][1]}
    params = dict(model.init_params(cfg, np.random.default_rng(1), "float64"), **vgg_params(layers, block, "float64"))
    shift = np.random.default_rng(7)
    params = {k: v + 0.3 * shift.standard_normal(v.shape) for k, v in params.items()}
    batch = caption_batch(rng, N, 3, S * S, C, 9)
    batch["features"] = np.abs(batch["features"])  # a ReLU's output, as the cache holds
    errors = check_loss(lambda p: model.loss_and_grads(p, batch, cfg, np.random.default_rng(5))[:2], params,
                        names=[k for k in params if k.startswith("vgg16/") or k == "embedding/w"])
    assert len(errors) == 2 * len(BLOCKS[block][1]) + 1
    assert max(errors.values()) < 1e-6, errors
    enc, state = model.decode_start(params, batch["features"], cfg)  # decoding runs the same layers
    logp, _, _ = model.decode_step(params, enc, state, batch["captions"][:, 0])
    assert logp.shape == (N, 9)

"""Layers against PyTorch, the trusted reference, where it is installed (skipped otherwise)."""
import numpy as np
import pytest

from scratchcap import ops

torch = pytest.importorskip("torch", reason="PyTorch is an optional reference")


def test_gru_matches_pytorch():
    rng = np.random.default_rng(42)
    N, T, D, H = 3, 4, 5, 6
    x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
    gru = torch.nn.GRU(D, H, batch_first=True).double()
    wx = gru.weight_ih_l0.detach().numpy().T.copy()
    wh = gru.weight_hh_l0.detach().numpy().T.copy()
    bx, bh = gru.bias_ih_l0.detach().numpy(), gru.bias_hh_l0.detach().numpy()
    hs, _ = ops.gru_forward(x, h0, wx, wh, bx, bh)
    ref, _ = gru(torch.from_numpy(x), torch.from_numpy(h0)[None])
    np.testing.assert_allclose(hs, ref.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_lstm_matches_pytorch():
    rng = np.random.default_rng(42)
    N, T, D, H = 3, 4, 5, 6
    x, h0, c0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H)), rng.standard_normal((N, H))
    lstm = torch.nn.LSTM(D, H, batch_first=True).double()
    wx = lstm.weight_ih_l0.detach().numpy().T.copy()
    wh = lstm.weight_hh_l0.detach().numpy().T.copy()
    b = (lstm.bias_ih_l0 + lstm.bias_hh_l0).detach().numpy()
    hs, _ = ops.lstm_forward(x, h0, c0, wx, wh, b)
    ref, _ = lstm(torch.from_numpy(x), (torch.from_numpy(h0)[None], torch.from_numpy(c0)[None]))
    np.testing.assert_allclose(hs, ref.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_conv2d_backward_matches_pytorch():
    rng = np.random.default_rng(42)
    x, w, b = rng.standard_normal((2, 6, 6, 3)), rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    dout = rng.standard_normal((2, 3, 3, 4))
    _, cache = ops.conv2d_forward(x, w, b, stride=2, padding=1)
    dx, dw, db = ops.conv2d_backward(dout, cache)
    tx = torch.from_numpy(x.transpose(0, 3, 1, 2).copy()).requires_grad_()
    tw = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()).requires_grad_()
    tb = torch.from_numpy(b.copy()).requires_grad_()
    out = torch.nn.functional.conv2d(tx, tw, tb, stride=2, padding=1)
    out.backward(torch.from_numpy(dout.transpose(0, 3, 1, 2).copy()))
    np.testing.assert_allclose(dx, tx.grad.numpy().transpose(0, 2, 3, 1), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(dw, tw.grad.numpy().transpose(2, 3, 1, 0), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(db, tb.grad.numpy(), rtol=1e-10)


def test_adam_matches_pytorch():
    from scratchcap.optim import Adam

    rng = np.random.default_rng(7)
    w = rng.standard_normal((4, 3))
    tw = torch.tensor(w.copy(), requires_grad=True)
    topt = torch.optim.Adam([tw], lr=1e-2, betas=(0.9, 0.999), eps=1e-8)
    params, opt = {"w": w.copy()}, Adam(lr=1e-2)
    for _ in range(5):
        g = rng.standard_normal((4, 3))
        tw.grad = torch.from_numpy(g.copy())
        topt.step()
        opt.step(params, {"w": g})
    np.testing.assert_allclose(params["w"], tw.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_label_smoothing_matches_pytorch_cross_entropy():
    rng = np.random.default_rng(3)
    logits = rng.standard_normal((3, 4, 6))
    targets = rng.integers(0, 6, (3, 4))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    loss, cache = ops.temporal_cross_entropy_forward(logits, targets, mask, smoothing=0.1)
    (dlogits,) = ops.temporal_cross_entropy_backward(1.0, cache)
    t = torch.tensor(logits[mask], requires_grad=True)
    ref = torch.nn.functional.cross_entropy(t, torch.tensor(targets[mask]), label_smoothing=0.1)
    ref.backward()
    assert float(loss) == pytest.approx(float(ref.detach()), rel=1e-12)
    np.testing.assert_allclose(dlogits[mask], t.grad.numpy(), rtol=1e-10, atol=1e-15)
    assert not dlogits[~mask].any()


def _adaptive_attention_in_torch(p, features, words, targets, mask):
    """lstm-adaptive written as the paper's equations (Lu et al. 2017, eqs. 6-7) with PyTorch's autograd:
    a softmax over the regions alone for alpha, a second over regions and sentinel for beta, and
    c^ = beta s + (1 - beta) c; scratchcap instead attends over L + 1 candidates."""
    F = torch.from_numpy(features)
    N, T = words.shape
    L = F.shape[1]
    H = p["lstm/wh"].shape[0]
    feats = torch.relu(F @ p["encoder/w"] + p["encoder/b"])
    glob = torch.relu(F.mean(dim=1) @ p["global/w"] + p["global/b"])
    projected = feats @ p["attention/w1"] + p["attention/b1"]
    h = c = torch.zeros(N, H, dtype=torch.float64)
    emb = p["embedding/w"][torch.from_numpy(words)]
    logits, betas = [], []
    for t in range(T):
        x = torch.cat([emb[:, t], glob], dim=1)
        a = x @ p["lstm/wx"] + p["lstm/b"] + h @ p["lstm/wh"]
        i, f, g, o = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H]), torch.tanh(a[:, 2 * H:3 * H]), \
            torch.sigmoid(a[:, 3 * H:])
        gate = torch.sigmoid(torch.cat([x, h], dim=1) @ p["sentinel/w"] + p["sentinel/b"])
        c = f * c + i * g
        h = o * torch.tanh(c)
        s = gate * torch.tanh(c)
        query = h @ p["attention/w2"] + p["attention/b2"]
        z = torch.tanh(projected + query[:, None, :]) @ p["attention/v"]
        z_s = torch.tanh(s @ p["attention/w3"] + p["attention/b3"] + query) @ p["attention/v"]
        alpha = torch.softmax(z, dim=1)
        beta = torch.softmax(torch.cat([z, z_s[:, None]], dim=1), dim=1)[:, L]
        context = (alpha[:, :, None] * feats).sum(dim=1)
        chat = beta[:, None] * s + (1 - beta[:, None]) * context
        logits.append(torch.tanh((chat + h) @ p["output/wh"] + p["output/bh"]) @ p["output/wo"] + p["output/bo"])
        betas.append(beta)
    logits = torch.stack(logits, dim=1)
    m = torch.from_numpy(mask)
    loss = torch.nn.functional.cross_entropy(logits[m], torch.from_numpy(targets)[m])
    return loss, torch.stack(betas, dim=1)


def test_adaptive_attention_matches_the_papers_equations_in_pytorch():
    from scratchcap.gradcheck_cases import caption_batch
    from scratchcap.models import get_model

    model = get_model("lstm-adaptive")
    cfg = dict(D=6, E=4, H=5, A=3, V=9, dropout=0.0, **{"lambda": 0.0})
    shift = np.random.default_rng(2)
    params = {k: v + 0.5 * shift.standard_normal(v.shape)
              for k, v in model.init_params(cfg, np.random.default_rng(1), "float64").items()}
    batch = caption_batch(np.random.default_rng(3), 3, 5, 4, 6, 9)
    loss, grads, info = model.loss_and_grads(params, batch, cfg, None)
    tp = {k: torch.tensor(v, requires_grad=True) for k, v in params.items()}
    ref, betas = _adaptive_attention_in_torch(tp, batch["features"], batch["captions"][:, :-1],
                                              batch["captions"][:, 1:], batch["mask"])
    ref.backward()
    assert loss == pytest.approx(float(ref), rel=1e-12)
    np.testing.assert_allclose(info["alphas"][:, :, -1], betas.detach().numpy(), rtol=1e-10)
    for k in params:
        np.testing.assert_allclose(grads[k], tp[k].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=k)

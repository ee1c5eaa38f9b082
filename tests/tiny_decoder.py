"""A small attention captioner built only from scratchcap.ops, for composite tests.

loss_and_grads(params, features, captions, cell) -> (loss, grads): the shape of a
training step that the real models follow. captions (N, T+1) start with <start>
(id 1) and are padded with 0; the decoder reads captions[:, :-1] and predicts
captions[:, 1:].

    feats     = relu(features @ enc_w + enc_b)            (N, L, F)   FC encoder
    projected = feats @ att_w1 + att_b1                   (N, L, A)   once per batch
    h0 (, c0) = tanh(mean_L(feats) @ init_w + init_b)     (N, H)
    per step: context, alpha = attend(feats, projected, h)
              h = cell([context; embed(word)], h)
    logits    = (hs @ out_w1 + out_b1) @ out_w2 + out_b2  (N, T, V)   all steps at once
"""
import numpy as np

from scratchcap import ops


def init_params(rng, V, D, F=6, E=5, H=7, A=4, cell="gru", scale=0.3, dtype="float64"):
    gates = {"gru": 3, "lstm": 4}[cell]
    shapes = {
        "enc_w": (D, F), "enc_b": (F,),
        "att_w1": (F, A), "att_b1": (A,), "att_w2": (H, A), "att_b2": (A,), "att_v": (A,),
        "embed": (V, E),
        "init_w": (F, H), "init_b": (H,),
        "rnn_wx": (F + E, gates * H), "rnn_wh": (H, gates * H),
        "out_w1": (H, E), "out_b1": (E,), "out_w2": (E, V), "out_b2": (V,),
    }
    if cell == "gru":
        shapes.update({"rnn_bx": (gates * H,), "rnn_bh": (gates * H,)})
    else:
        shapes.update({"rnn_b": (gates * H,), "init_cw": (F, H), "init_cb": (H,)})
    return {k: (rng.standard_normal(s) * scale).astype(dtype) for k, s in sorted(shapes.items())}


def loss_and_grads(params, features, captions, cell="gru"):
    p = params
    words, targets = captions[:, :-1], captions[:, 1:]
    mask = targets != 0
    N, T = words.shape
    H = p["rnn_wh"].shape[0]
    F = p["enc_w"].shape[1]

    pre, c_enc = ops.linear_forward(features, p["enc_w"], p["enc_b"])
    feats, c_relu = ops.relu_forward(pre)
    projected, c_proj = ops.linear_forward(feats, p["att_w1"], p["att_b1"])
    emb, c_emb = ops.embedding_forward(words, p["embed"])
    mean = feats.mean(axis=1)
    hpre, c_h0lin = ops.linear_forward(mean, p["init_w"], p["init_b"])
    h, c_h0 = ops.tanh_forward(hpre)
    if cell == "lstm":
        cpre, c_c0lin = ops.linear_forward(mean, p["init_cw"], p["init_cb"])
        c, c_c0 = ops.tanh_forward(cpre)

    hs = np.empty((N, T, H), dtype=features.dtype)
    steps = []
    for t in range(T):
        (context, _), c_att = ops.attend_forward(feats, projected, h, p["att_w2"], p["att_b2"], p["att_v"])
        x = np.concatenate([context, emb[:, t]], axis=1)
        if cell == "gru":
            h, c_cell = ops.gru_step_forward(x, h, p["rnn_wx"], p["rnn_wh"], p["rnn_bx"], p["rnn_bh"])
        else:
            (h, c), c_cell = ops.lstm_step_forward(x, h, c, p["rnn_wx"], p["rnn_wh"], p["rnn_b"])
        hs[:, t] = h
        steps.append((c_att, c_cell))
    out1, c_out1 = ops.linear_forward(hs, p["out_w1"], p["out_b1"])
    logits, c_out2 = ops.linear_forward(out1, p["out_w2"], p["out_b2"])
    loss, c_loss = ops.temporal_cross_entropy_forward(logits, targets, mask)

    g = {}
    (dlogits,) = ops.temporal_cross_entropy_backward(1.0, c_loss)
    dout1, g["out_w2"], g["out_b2"] = ops.linear_backward(dlogits, c_out2)
    dhs, g["out_w1"], g["out_b1"] = ops.linear_backward(dout1, c_out1)
    dfeats = np.zeros_like(feats)
    dprojected = np.zeros_like(projected)
    demb = np.zeros_like(emb)
    for name in ("att_w2", "att_b2", "att_v", "rnn_wx", "rnn_wh") + (
            ("rnn_bx", "rnn_bh") if cell == "gru" else ("rnn_b",)):
        g[name] = np.zeros_like(p[name])
    dh = np.zeros((N, H), dtype=features.dtype)
    dc = None
    for t in reversed(range(T)):
        c_att, c_cell = steps[t]
        if cell == "gru":
            dx, dh, dwx, dwh, dbx, dbh = ops.gru_step_backward(dhs[:, t] + dh, c_cell)
            g["rnn_bx"] += dbx
            g["rnn_bh"] += dbh
        else:
            dx, dh, dc, dwx, dwh, db = ops.lstm_step_backward((dhs[:, t] + dh, dc), c_cell)
            g["rnn_b"] += db
        g["rnn_wx"] += dwx
        g["rnn_wh"] += dwh
        demb[:, t] = dx[:, F:]
        dfe, dpr, dq, dw2, db2, dv = ops.attend_backward((dx[:, :F], None), c_att)
        dfeats += dfe
        dprojected += dpr
        dh += dq
        g["att_w2"] += dw2
        g["att_b2"] += db2
        g["att_v"] += dv
    (dhpre,) = ops.tanh_backward(dh, c_h0)
    dmean, g["init_w"], g["init_b"] = ops.linear_backward(dhpre, c_h0lin)
    if cell == "lstm":
        (dcpre,) = ops.tanh_backward(dc, c_c0)
        dmean_c, g["init_cw"], g["init_cb"] = ops.linear_backward(dcpre, c_c0lin)
        dmean = dmean + dmean_c
    dfeats += dmean[:, None, :] / feats.shape[1]
    (g["embed"],) = ops.embedding_backward(demb, c_emb)
    dfe, g["att_w1"], g["att_b1"] = ops.linear_backward(dprojected, c_proj)
    dfeats += dfe
    (dpre,) = ops.relu_backward(dfeats, c_relu)
    _, g["enc_w"], g["enc_b"] = ops.linear_backward(dpre, c_enc)
    return loss, g


def toy_batch(rng, N=8, L=4, D=8, T=6, V=12, dtype="float64"):
    """N random feature grids and captions of random lengths: <start>=1, words in [3, V), <end>=2, pad 0."""
    features = rng.standard_normal((N, L, D)).astype(dtype)
    captions = np.zeros((N, T + 1), dtype=np.int64)
    captions[:, 0] = 1
    for n in range(N):
        length = rng.integers(1, T) if T > 1 else 0
        captions[n, 1:length + 1] = rng.integers(3, V, size=length)
        captions[n, length + 1] = 2
    return features, captions

"""Self-critical training: the weighted loss, the sampler, the reward, the baselines, a rising toy reward, and the
--objective scst runs of scratchcap.train."""
import json

import numpy as np
import pytest

from scratchcap import ops
from scratchcap import train as train_module
from scratchcap.checkpoint import load_checkpoint
from scratchcap.data import Vocabulary
from scratchcap.data.records import ImageRecord
from scratchcap.gradcheck import check_loss
from scratchcap.gradcheck_cases import caption_batch
from scratchcap.metrics import CiderD
from scratchcap.models import MODELS
from scratchcap.optim import Adam
from scratchcap.scst import CiderReward, advantages, sample_captions, sample_words, scst_loss_and_grads
from tolerances import rtol

VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(8)])


def _model(name="gru-attention", seed=1, scale=1.0, dtype="float64"):
    cfg = dict(D=6, E=4, H=5, A=3, V=len(VOCAB), dropout=0.3, max_length=6, **{"lambda": 0.0})
    p = MODELS[name].init_params(cfg, np.random.default_rng(seed), dtype)
    return {k: v * scale for k, v in p.items()}, cfg


# ---- the loss layer's per-caption weights ----------------------------------------------------------------------

def test_caption_weights_scale_each_captions_log_likelihood():
    rng = np.random.default_rng(0)
    N, T, V = 3, 4, 5
    logits, targets = rng.standard_normal((N, T, V)), rng.integers(0, V, (N, T))
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0]], dtype=bool)
    w = np.array([0.5, -2.0, 3.0])
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    per_caption = np.array([sum(logp[n, t, targets[n, t]] for t in range(T) if mask[n, t]) for n in range(N)])
    loss, _ = ops.temporal_cross_entropy_forward(logits, targets, mask, normalizer=N, weights=w)
    assert float(loss) == pytest.approx(-(w * per_caption).sum() / N, rel=rtol(np.float64, 16))
    plain, _ = ops.temporal_cross_entropy_forward(logits, targets, mask)
    ones, _ = ops.temporal_cross_entropy_forward(logits, targets, mask, weights=np.ones(N))
    assert float(ones) == float(plain)


def test_caption_weights_must_be_one_per_caption_and_of_the_logits_dtype():
    logits, targets, mask = np.zeros((2, 3, 4)), np.zeros((2, 3), dtype=np.int64), np.ones((2, 3), dtype=bool)
    with pytest.raises(ValueError, match="weights"):
        ops.temporal_cross_entropy_forward(logits, targets, mask, weights=np.ones(3))
    with pytest.raises(ValueError, match="dtype"):
        ops.temporal_cross_entropy_forward(logits, targets, mask, weights=np.ones(2, dtype=np.float32))


@pytest.mark.parametrize("name", sorted(MODELS))
@pytest.mark.parametrize("N,T,L", [(3, 4, 2), (1, 1, 1), (2, 3, 1)])
def test_whole_model_gradient_with_advantage_weights(name, N, T, L):
    """The SCST loss through every decoder, float64, signed weights, the edge shapes (one image, step, region)."""
    rng = np.random.default_rng(10 * N + T)
    params, cfg = _model(name)
    cfg = dict(cfg, V=9)
    params = MODELS[name].init_params(cfg, np.random.default_rng(2), "float64")
    batch = caption_batch(rng, N, T, L, 6, 9)
    batch.update(caption_weights=rng.standard_normal(N), tokens_total=N)
    names = sorted(params)
    if L == 1:
        names = [k for k in names if not k.startswith("attention/")]  # one region: attention cannot move
    errors = check_loss(lambda p: MODELS[name].loss_and_grads(p, batch, cfg, None, train=False)[:2], params,
                        names=names)
    assert max(errors.values()) < 1e-6, errors


# ---- sampling -----------------------------------------------------------------------------------------------

def test_samples_follow_the_models_distribution():
    """The first word's frequencies over 6000 draws match the model's softmax, over every token (<pad> and
    <start> too: a token never drawn is never pushed down)."""
    params, cfg = _model(scale=1.5)
    features = np.random.default_rng(3).standard_normal((2, 4, 6))
    enc, state = MODELS["gru-attention"].decode_start(params, features, cfg)
    params["output/b2"][:2] += 1.0  # <pad> and <start> likely enough to be drawn
    p = np.exp(MODELS["gru-attention"].decode_step(params, enc, state, np.full(2, VOCAB.start))[0])
    ids, lengths, ended = sample_captions(MODELS["gru-attention"], params, features, cfg, VOCAB, 3000, key=7,
                                          max_length=1)
    for n in range(2):
        freq = np.bincount(ids[n * 3000:(n + 1) * 3000, 0], minlength=len(VOCAB)) / 3000
        assert freq[0] > 0 and freq[1] > 0
        assert np.abs(freq - p[n]).max() < 4 * np.sqrt(p[n].max() / 3000) + 1e-9, (freq, p[n])
    assert (lengths == 1).all() and (ended == (ids[:, 0] == VOCAB.end)).all()


def test_samples_stop_at_end_are_seeded_and_a_shard_draws_its_rows_of_the_whole_draw(xp):
    params, cfg = _model(scale=2.0)
    params["output/b2"][VOCAB.end] += 4.0  # some captions end inside 6 words, some run to the end
    features = np.random.default_rng(4).standard_normal((4, 3, 6))
    model = MODELS["gru-attention"]
    dev = lambda tree: {k: xp.asarray(v) for k, v in tree.items()}  # noqa: E731
    whole = sample_captions(model, dev(params), xp.asarray(features), cfg, VOCAB, 5, key=11, max_length=6)
    ids, lengths, ended = whole
    for row, n, e in zip(ids, lengths, ended):
        assert (row[n:] == VOCAB.pad).all() and 1 <= n <= 6
        assert e == (row[n - 1] == VOCAB.end) and (VOCAB.end not in row[:n - 1])
    assert ended.any() and not ended.all() and len(set(map(tuple, ids))) > 5
    again = sample_captions(model, dev(params), xp.asarray(features), cfg, VOCAB, 5, key=11, max_length=6)
    assert all((a == b).all() for a, b in zip(whole, again))
    other = sample_captions(model, dev(params), xp.asarray(features), cfg, VOCAB, 5, key=12, max_length=6)
    assert not (other[0] == ids).all()
    shard = sample_captions(model, dev(params), xp.asarray(features[2:]), cfg, VOCAB, 5, key=11, max_length=6,
                            row_offset=10, rows_total=20)
    assert (shard[0] == ids[10:]).all() and (shard[1] == lengths[10:]).all()
    if xp is not np:  # the same draws on the device as on NumPy
        host = sample_captions(model, params, features, cfg, VOCAB, 5, key=11, max_length=6)
        assert (host[0] == ids).all()


def test_on_threads_each_draws_its_images_rows_of_the_whole_draw(split_threads, monkeypatch):
    import scratchcap.decode as decoding

    monkeypatch.setattr(decoding, "ROWS_PER_THREAD", 10)  # 2 images of 5 samples each
    params, cfg = _model(scale=2.0)
    params["output/b2"][VOCAB.end] += 4.0
    features = np.random.default_rng(4).standard_normal((7, 3, 6))
    model, batches = MODELS["gru-attention"], []

    class Recording:
        def __getattr__(self, name):
            return getattr(model, name)

        def decode_start(self, p, f, c):
            batches.append(f.shape[0])
            return model.decode_start(p, f, c)

    split_threads(1)
    want = sample_captions(Recording(), params, features, cfg, VOCAB, 5, key=11, max_length=6, row_offset=5,
                           rows_total=60)
    for n, groups in ((2, [3, 4]), (3, [2, 2, 3])):
        split_threads(n)
        batches.clear()
        got = sample_captions(Recording(), params, features, cfg, VOCAB, 5, key=11, max_length=6, row_offset=5,
                              rows_total=60)
        assert sorted(batches) == groups
        assert all((a == b).all() for a, b in zip(got, want))
    assert want[2].any() and not want[2].all()


def test_the_gradients_likelihood_is_the_samplers():
    """log p of each sample from the teacher-forced pass (weights one-hot) equals the sampler's own chain."""
    model = MODELS["lstm-attention"]
    params, cfg = _model("lstm-attention", scale=2.0)
    features = np.random.default_rng(5).standard_normal((2, 3, 6))
    ids, lengths, ended = sample_captions(model, params, features, cfg, VOCAB, 2, key=3, max_length=5)
    from scratchcap.scst.objective import sampled_batch
    enc, state = model.decode_start(params, np.repeat(features, 2, axis=0), cfg)
    words, chain = np.full(4, VOCAB.start), np.zeros(4)
    for t in range(5):
        logp, state, _ = model.decode_step(params, enc, state, words)
        chain += np.where(t < lengths, logp[np.arange(4), ids[:, t]], 0.0)
        words = ids[:, t]
    for row in range(4):
        w = np.zeros(4)
        w[row] = 1.0
        batch = sampled_batch(features, ids, lengths, VOCAB, 2, w, 1)
        loss, _, _ = model.loss_and_grads(params, batch, dict(cfg, dropout=0.0), None, train=False)
        assert -loss == pytest.approx(chain[row], rel=rtol(np.float64, 64))


# ---- reward and baselines -------------------------------------------------------------------------------------

def test_reward_is_cider_d_with_end_as_a_word_and_train_document_frequencies():
    records = [ImageRecord("a", "a.jpg", ["a dog runs on the grass", "a brown dog runs"], "train"),
               ImageRecord("b", "b.jpg", ["two people sit on a bench", "people on a bench"], "train"),
               ImageRecord("c", "c.jpg", ["a cat sleeps", "a cat on a bed"], "train")]
    reward = CiderReward(records)
    refs = {r.image_id: [c.split() + ["<end>"] for c in r.captions] for r in records}
    scorer = CiderD(refs)
    whole, fragment = "a brown dog runs <end>".split(), "a brown dog".split()
    got = reward(["a", "a"], [whole, fragment])
    assert got[0] == pytest.approx(scorer.score("a", whole)) and got[0] > got[1] > 0
    # without <end> on either side the fragment's score is closer to the whole caption's
    plain = CiderD({i: [c[:-1] for c in rs] for i, rs in refs.items()})
    assert plain.score("a", fragment) / plain.score("a", whole[:-1]) > got[1] / got[0]
    assert sample_words(VOCAB, np.array([[4, 5, 2, 0], [4, 5, 6, 7], [4, 0, 2, 0]]), np.array([3, 4, 3])) == \
        [["w0", "w1", "<end>"], ["w0", "w1", "w2", "w3"], ["w0", "<pad>", "<end>"]]


def test_cider_d_scorer_is_the_evaluation_metric():
    """The reward's scorer, built from the evaluated references, gives metrics.cider_d's mean."""
    from scratchcap.metrics import cider_d
    refs = {1: [["a", "dog"], ["the", "dog", "runs"]], 2: [["a", "cat"], ["cats", "sleep"]]}
    hyps = {1: ["a", "dog", "runs"], 2: ["a", "cat", "sleeps"]}
    scorer = CiderD(refs)
    assert cider_d(refs, hyps) == pytest.approx(np.mean([scorer.score(i, h) for i, h in hyps.items()]))


def test_baselines():
    r = np.array([1.0, 2.0, 6.0, 0.0, 0.0, 3.0])
    adv, base = advantages(r, 3)
    assert base.tolist() == [4.0, 3.5, 1.5, 1.5, 1.5, 0.0]
    assert np.allclose(adv.reshape(2, 3).sum(axis=1), 0.0)
    adv, base = advantages(r, 3, "greedy", greedy_rewards=[2.0, 1.0])
    assert adv.tolist() == [-1.0, 0.0, 4.0, -1.0, -1.0, 2.0]
    with pytest.raises(ValueError, match="at least 2 samples"):
        advantages(r, 1)
    with pytest.raises(ValueError, match="unknown SCST baseline"):
        advantages(r, 3, "best")


@pytest.mark.parametrize("baseline", ["mean", "greedy"])
def test_the_expected_reward_rises_on_a_known_reward(baseline):
    """Reward = how often word w5 appears: after 40 steps the sampled captions hold it far more often."""
    model = MODELS["gru-attention"]
    params, cfg = _model(seed=0, scale=1.0)
    features = np.random.default_rng(6).standard_normal((8, 3, 6))
    target = VOCAB.index["w5"]

    def reward(image_ids, word_lists):
        return np.array([ws.count("w5") for ws in word_lists], dtype=np.float64)

    def expected(p):
        ids, lengths, _ = sample_captions(model, p, features, cfg, VOCAB, 50, key=999, max_length=6)
        return float((ids == target).sum() / ids.shape[0])

    before = expected(params)
    opt = Adam(lr=0.05)
    for step in range(40):
        _, grads, stats = scst_loss_and_grads(model, params, features, list(range(8)), cfg, VOCAB, reward, key=step,
                                              k=4, baseline=baseline, max_length=6)
        opt.step(params, grads)
    after = expected(params)
    assert before < 1.0 and after > before + 1.5, (before, after)


# ---- the training command -------------------------------------------------------------------------------------

def _args(root, weights, out, *extra):
    return ["--data-dir", str(root / "data"), "--shapes-images", "24,6,2", "--image-size", "32",
            "--weights", str(weights), "--features", str(root / "cache.h5"), "--embed", "8", "--hidden", "12",
            "--attention", "6", "--batch-size", "16", "--epochs", "2", "--lr", "0.01", "--no-progress",
            "--device", "cpu", "--out", str(out), "--checkpoint-every", "1", *extra]


@pytest.fixture(scope="module")
def xe_run(workspace):
    root, weights = workspace
    out = root / "xe"
    assert train_module.main(_args(root, weights, out, "--model", "lstm-attention")) == 0
    return root, weights, out


def _scst_args(out, init, *extra):
    return ["--init-from", str(init), "--objective", "scst", "--out", str(out), "--epochs", "2", "--batch-size",
            "4", "--scst-samples", "3", "--lr", "0.001", "--no-progress", "--device", "cpu", "--checkpoint-every",
            "1", *extra]


def test_scst_run_starts_from_the_checkpoint_and_logs_rewards(xe_run, capsys):
    root, _, xe = xe_run
    out = root / "scst"
    assert train_module.main(_scst_args(out, xe / "checkpoint-best.h5")) == 0
    rows = [json.loads(x) for x in open(out / "metrics.jsonl")]
    assert [r["epoch"] for r in rows] == [1, 2]
    for r in rows:
        assert r["reward"] > 0 and abs(r["advantage"]) < 1e-9 and r["samples_per_s"] > 0
        assert 0 < r["reward_share"] < 1 and "CIDEr" in r
    base, ckpt = load_checkpoint(xe / "checkpoint-best.h5"), load_checkpoint(out / "checkpoint-last.h5")
    assert ckpt["config"]["objective"] == "scst" and ckpt["model"] == "lstm-attention"
    for key in ("embed", "hidden", "feature_scale", "features", "min_count"):
        assert ckpt["config"][key] == base["config"][key]
    assert ckpt["vocabulary"] == base["vocabulary"]
    moved = [k for k in base["params"] if not np.array_equal(base["params"][k], ckpt["params"][k])]
    assert len(moved) > len(base["params"]) // 2  # it trained from there, with the reward
    assert "self-critical training from" in capsys.readouterr().out


def test_an_interrupted_scst_run_resumes_to_the_same_parameters(xe_run, monkeypatch):
    root, _, xe = xe_run
    whole = root / "scst-whole"
    assert train_module.main(_scst_args(whole, xe / "checkpoint-best.h5", "--scst-baseline", "greedy")) == 0
    cut = root / "scst-cut"
    real, calls = train_module.scst_step, {"n": 0}

    def stop_at_fourth(*a, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real(*a, **kw)

    monkeypatch.setattr(train_module, "scst_step", stop_at_fourth)
    with pytest.raises(KeyboardInterrupt):
        train_module.train(train_module.build_parser().parse_args(
            _scst_args(cut, xe / "checkpoint-best.h5", "--scst-baseline", "greedy")), log=lambda *a: None)
    monkeypatch.setattr(train_module, "scst_step", real)
    assert train_module.main(["--resume", str(cut), "--no-progress", "--device", "cpu"]) == 0
    a, b = load_checkpoint(whole / "checkpoint-last.h5"), load_checkpoint(cut / "checkpoint-last.h5")
    for k in a["params"]:
        assert np.array_equal(a["params"][k], b["params"][k]), k


def test_scst_refuses_what_it_cannot_start_from(xe_run, tmp_path, capsys):
    root, weights, xe = xe_run
    assert train_module.main(_args(root, weights, tmp_path / "x", "--objective", "scst")) == 2
    assert "--init-from" in capsys.readouterr().err
    assert train_module.main(_scst_args(tmp_path / "y", xe / "checkpoint-best.h5", "--hidden", "64")) == 2
    assert "--hidden 64 differs from the --init-from checkpoint's 12" in capsys.readouterr().err
    assert train_module.main(_scst_args(tmp_path / "z", xe / "checkpoint-best.h5", "--scst-samples", "1")) == 2
    assert "at least 2" in capsys.readouterr().err
    import shutil
    import h5py
    other = tmp_path / "other-vocab.h5"  # the same size, two words swapped: another data set's vocabulary
    shutil.copy(xe / "checkpoint-best.h5", other)
    with h5py.File(other, "a") as f:
        vocab = json.loads(f.attrs["vocabulary"])
        vocab["words"][4], vocab["words"][5] = vocab["words"][5], vocab["words"][4]
        f.attrs["vocabulary"] = json.dumps(vocab)
    assert train_module.main(_scst_args(tmp_path / "v", other)) == 2
    assert "the checkpoint's vocabulary" in capsys.readouterr().err
    assert not (tmp_path / "v").exists()


def test_a_self_critical_step_on_the_device_equals_numpys(xp):
    """Sampling, reward and the weighted backward through the array-module seam: the same gradients on CuPy."""
    from scratchcap.backend import to_numpy

    model = MODELS["lstm-attention"]
    params, cfg = _model("lstm-attention", scale=2.0)
    features = np.random.default_rng(8).standard_normal((3, 4, 6))

    def reward(image_ids, word_lists):
        return np.array([len(ws) + ws.count("w2") for ws in word_lists], dtype=np.float64)

    host = scst_loss_and_grads(model, params, features, [0, 1, 2], cfg, VOCAB, reward, key=5, k=3, max_length=5)
    dev = scst_loss_and_grads(model, {k: xp.asarray(v) for k, v in params.items()}, xp.asarray(features), [0, 1, 2],
                              cfg, VOCAB, reward, key=5, k=3, max_length=5)
    assert (host[2]["ids"] == dev[2]["ids"]).all() and host[2]["reward_sum"] == dev[2]["reward_sum"]
    for name, g in host[1].items():
        np.testing.assert_allclose(to_numpy(dev[1][name]), g, rtol=rtol(np.float64, 256), atol=1e-14)

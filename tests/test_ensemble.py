"""Ensembles: the averaged step, decoding through greedy and beam search, the commands, and the refusals."""
import json

import numpy as np
import pytest
from PIL import Image

from scratchcap import caption as caption_cli
from scratchcap import evaluate as evaluate_cli
from scratchcap.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from scratchcap.data import Vocabulary
from scratchcap.data.shapes import generate_shapes
from scratchcap.decode import beam_search, greedy
from scratchcap.ensemble import Ensemble, check_members
from scratchcap.models import MODELS
from scratchcap.weights import save_weights
from tolerances import rtol
from vgg_fixtures import TINY_WIDTHS, random_layers, tiny_captioner_config

VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(9)])


def _member(name, seed, D=6, scale=3.0):
    cfg = dict(D=D, E=4, H=5, A=3, V=len(VOCAB), dropout=0.0, max_length=8, feature_scale=0.5 + seed / 10)
    p = MODELS[name].init_params(cfg, np.random.default_rng(seed), "float64")
    return MODELS[name], {k: v * scale for k, v in p.items()}, cfg


@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_a_step_averages_the_members_probabilities_or_log_probabilities(combine):
    members = [_member("gru-attention", 1), _member("lstm-attention", 2), _member("lstm-noattention", 3)]
    ens = Ensemble(members, combine)
    feats = np.random.default_rng(0).standard_normal((2, 4, 6))
    enc, state = ens.decode_start(None, feats, None)
    words = np.array([VOCAB.start, 5])
    logp, _, alpha = ens.decode_step(None, enc, state, words)
    steps = [m.decode_step(p, *m.decode_start(p, feats, c), words) for m, p, c in members]
    probs = np.stack([np.exp(s[0]) for s in steps])
    if combine == "prob":
        want = np.log(probs.mean(axis=0))
    else:
        g = np.log(probs).mean(axis=0)
        want = g - np.log(np.exp(g).sum(axis=1, keepdims=True))
    np.testing.assert_allclose(logp, want, rtol=rtol(np.float64, 16))
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, rtol=rtol(np.float64, 16))
    np.testing.assert_array_equal(alpha, steps[0][2])  # the first member's attention


@pytest.mark.parametrize("combine", ["prob", "logprob"])
def test_an_ensemble_of_one_model_twice_decodes_as_that_model(combine):
    model, params, cfg = _member("lstm-attention", 4)
    ens = Ensemble([(model, params, cfg), (model, params, cfg)], combine)
    feats = np.random.default_rng(1).standard_normal((3, 4, 6))
    for beam in (1, 3):
        one = beam_search(model, params, feats, cfg, VOCAB, beam=beam, max_length=8) if beam > 1 \
            else greedy(model, params, feats, cfg, VOCAB, 8)
        two = beam_search(ens, None, feats, cfg, VOCAB, beam=beam, max_length=8) if beam > 1 \
            else greedy(ens, None, feats, cfg, VOCAB, 8)
        assert [r["words"] for r in one] == [r["words"] for r in two]
        for a, b in zip(one, two):
            assert b["logprob"] == pytest.approx(a["logprob"], rel=rtol(np.float64, 64))
            np.testing.assert_allclose(b["alphas"], a["alphas"], rtol=rtol(np.float64, 64))


def test_beam_search_over_members_with_different_states_finds_captions():
    ens = Ensemble([_member("gru-attention", 5), _member("lstm-attention", 6), _member("lstm-noattention", 7)])
    feats = np.random.default_rng(2).standard_normal((2, 4, 6))
    results = beam_search(ens, None, feats, None, VOCAB, beam=3, max_length=8, block_trigrams=True,
                          length_penalty_alpha=0.6)
    assert len(results) == 2 and all("<unk>" not in r["words"] and np.isfinite(r["logprob"]) for r in results)
    assert all(r["alphas"].shape == (min(len(r["words"]) + 1, 8), 4) for r in results)  # no <end> row at 8 words
    assert all(len(r["beams"]) == 3 for r in results)


def test_unknown_average_and_empty_ensemble_are_named():
    with pytest.raises(ValueError, match="unknown ensemble average 'median'"):
        Ensemble([_member("gru-attention", 1)], "median")
    with pytest.raises(ValueError, match="at least one member"):
        Ensemble([])


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ensemble")
    weights = root / "tiny.h5"
    save_weights(weights, random_layers(2), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    def save(name, model, seed, vocab=VOCAB, **changes):
        _, p, cfg = _member(model, seed, D=8, scale=1.0)
        return str(save_checkpoint(root / f"{name}.h5", model=model, params=p, vocab=vocab,
                                   config=tiny_captioner_config(cfg, weights, **changes)))

    paths = {name: save(name, name, 10 + k) for k, name in
             enumerate(("gru-attention", "lstm-attention", "lstm-noattention"))}
    other = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"v{i}" for i in range(9)])
    paths["other-vocab"] = save("other-vocab", "gru-attention", 20, vocab=other)
    paths["other-layer"] = save("other-layer", "gru-attention", 20, layer="block4_conv3", grid=[4, 4])
    data = generate_shapes(str(root / "shapes"), n_train=2, n_dev=3, n_test=0, size=32, progress=False)
    Image.new("RGB", (40, 30), (200, 20, 20)).save(root / "red.jpg")
    return root, paths, data


def test_members_of_another_vocabulary_or_layer_are_refused_by_name(checkpoints, capsys):
    root, paths, data = checkpoints
    ckpts = {k: load_checkpoint(v) for k, v in paths.items()}
    with pytest.raises(CheckpointError, match="one vocabulary: B has 13 words"):
        check_members([ckpts["gru-attention"], ckpts["other-vocab"]], ["A", "B"])
    with pytest.raises(CheckpointError, match="B has layer block4_conv3, A has block5_conv3"):
        check_members([ckpts["gru-attention"], ckpts["other-layer"]], ["A", "B"])
    image = str(root / "red.jpg")
    assert caption_cli.main([image, "--checkpoint", paths["gru-attention"], paths["other-vocab"]]) == 2
    err = capsys.readouterr().err
    assert paths["other-vocab"] in err and paths["gru-attention"] in err and "vocabulary" in err
    assert evaluate_cli.main(["--checkpoint", paths["gru-attention"], paths["other-layer"], "--dataset", "shapes",
                              "--data-dir", data, "--no-progress"]) == 2
    assert "layer block4_conv3" in capsys.readouterr().err


def test_caption_and_evaluate_take_several_checkpoints(checkpoints, tmp_path, capsys):
    root, paths, data = checkpoints
    members = [paths["gru-attention"], paths["lstm-attention"], paths["lstm-noattention"]]
    image = str(root / "red.jpg")
    assert caption_cli.main([image, "--checkpoint", *members, "--json", "--attention-map",
                             str(tmp_path / "map.png")]) == 0
    out = json.loads(capsys.readouterr().out)
    assert isinstance(out[0]["caption"], str) and (tmp_path / "map.png").exists()  # the first member attends
    for combine in ("prob", "logprob"):
        assert evaluate_cli.main(["--checkpoint", *members, "--dataset", "shapes", "--data-dir", data, "--beam", "2",
                                  "--ensemble-average", combine, "--no-progress",
                                  "--json", str(tmp_path / f"{combine}.json")]) == 0
        assert " + ".join(members) in capsys.readouterr().out
        assert "CIDEr" in json.load(open(tmp_path / f"{combine}.json"))


def test_the_released_default_is_the_manifests_file_else_the_first_shipped_one(tmp_path, monkeypatch):
    from scratchcap import captioner

    monkeypatch.setattr(captioner, "released_dir", lambda: str(tmp_path))
    with pytest.raises(CheckpointError, match="no released model"):
        captioner.released_checkpoint()
    for name in ("flickr8k-a.h5", "flickr8k-b.h5"):
        (tmp_path / name).write_bytes(b"")
    assert captioner.released_checkpoint() == str(tmp_path / "flickr8k-a.h5")
    (tmp_path / "released.json").write_text(json.dumps({"default": "flickr8k-b.h5"}))
    assert captioner.released_checkpoint() == str(tmp_path / "flickr8k-b.h5")
    (tmp_path / "released.json").write_text(json.dumps({"default": "../elsewhere/flickr8k-b.h5"}))
    assert captioner.released_checkpoint() == str(tmp_path / "flickr8k-b.h5")  # only a name inside the folder
    (tmp_path / "released.json").write_text("{not json")
    assert captioner.released_checkpoint() == str(tmp_path / "flickr8k-a.h5")

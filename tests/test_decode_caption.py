"""Greedy and beam decoding, attention maps, and the caption and evaluate commands, on tiny models."""
import json

import numpy as np
import pytest
from PIL import Image

from scratchcap import caption as caption_cli
from scratchcap import evaluate as evaluate_cli
from scratchcap.checkpoint import save_checkpoint
from scratchcap.plots import attention_figure
from scratchcap.data import Vocabulary
from scratchcap.data.shapes import generate_shapes
from scratchcap.decode import beam_search, decode, greedy, top_k
from scratchcap.models import MODELS
from scratchcap.weights import save_weights
from tolerances import rtol
from vgg_fixtures import TINY_WIDTHS, random_layers, tiny_captioner_config

VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>"] + [f"w{i}" for i in range(9)])


def _params(name, seed=1, D=6, scale=3.0):
    cfg = dict(D=D, E=4, H=5, A=3, V=len(VOCAB), dropout=0.0, max_length=8)
    p = MODELS[name].init_params(cfg, np.random.default_rng(seed), "float64")
    return {k: v * scale for k, v in p.items()}, cfg


@pytest.mark.parametrize("name", sorted(MODELS))
def test_beam_of_one_is_exactly_greedy(name):
    p, cfg = _params(name)
    feats = np.random.default_rng(0).standard_normal((5, 4, 6))
    g = greedy(MODELS[name], p, feats, cfg, VOCAB, 8)
    b = beam_search(MODELS[name], p, feats, cfg, VOCAB, beam=1, max_length=8)
    assert [x["words"] for x in g] == [x["words"] for x in b]
    np.testing.assert_allclose([x["logprob"] for x in g], [x["logprob"] for x in b], rtol=1e-12)


@pytest.mark.parametrize("name", ["gru-attention", "lstm-adaptive", "lstm-attention"])
@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_returns_attention_per_word_and_stops(name, beam):
    """The maps cover the L regions; with a sentinel its beta comes apart and the two sum to one."""
    p, cfg = _params(name)
    feats = np.random.default_rng(2).standard_normal((3, 4, 6))
    for res in decode(MODELS[name], p, feats, cfg, VOCAB, beam=beam, max_length=5, length_norm=True):
        assert len(res["words"]) <= 5
        assert res["alphas"].shape[1] == 4 and len(res["alphas"]) in (len(res["words"]), len(res["words"]) + 1)
        beta = res.get("sentinel")
        assert (beta is not None) == (name == "lstm-adaptive")
        if beta is not None:
            assert beta.shape == (len(res["alphas"]),) and ((beta > 0) & (beta < 1)).all()
        np.testing.assert_allclose(res["alphas"].sum(axis=1) + (0 if beta is None else beta), 1.0, rtol=1e-6)


_END_BIAS = {"gru-attention": "output/b2", "lstm-adaptive": "output/bo", "lstm-attention": "output/bo"}


@pytest.mark.parametrize("name", ["gru-attention", "lstm-adaptive", "lstm-attention"])
def test_every_beams_attention_is_its_own_when_beams_reorder(name):
    """Replaying each returned caption word by word through the model gives the attention beam search reported:
    a beam's map must follow it to its parent at every step (a regression: each kept the row it landed in)."""
    p, cfg = _params(name, scale=1.0)
    p[_END_BIAS[name]][VOCAB.end] = -4.0  # long captions
    feats = np.random.default_rng(2).standard_normal((6, 4, 6))
    model = MODELS[name]
    checked = 0
    for n, res in enumerate(beam_search(model, p, feats, cfg, VOCAB, beam=3, max_length=6)):
        for beam in res["beams"][:1]:
            ids = VOCAB.encode(beam["words"])[:-1][:len(res["alphas"])]
            enc, state = model.decode_start(p, feats[n:n + 1], cfg)
            for t, word in enumerate(ids):
                _, state, alpha = model.decode_step(p, enc, state, np.array([word]))
                if "sentinel" in res:
                    assert res["sentinel"][t] == pytest.approx(alpha[0, -1], rel=1e-12)
                    alpha = alpha[:, :-1]
                np.testing.assert_allclose(res["alphas"][t], alpha[0], rtol=1e-12, atol=1e-14, err_msg=(n, t))
                checked += 1
    assert checked >= 30


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_attention_maps_keep_the_model_dtype(dtype):
    cfg = dict(D=6, E=4, H=5, A=3, V=len(VOCAB), dropout=0.0, max_length=8)
    p = MODELS["gru-attention"].init_params(cfg, np.random.default_rng(1), dtype)
    feats = np.random.default_rng(2).standard_normal((2, 4, 6)).astype(dtype)
    for res in greedy(MODELS["gru-attention"], p, feats, cfg, VOCAB, 5) \
            + beam_search(MODELS["gru-attention"], p, feats, cfg, VOCAB, beam=3, max_length=5):
        assert res["alphas"].dtype == dtype


def test_top_k_equals_a_stable_sort_of_the_whole_row():
    rng = np.random.default_rng(0)
    for m, k in ((15, 3), (40, 1), (5, 5), (6, 9), (30000, 3)):
        total = rng.integers(-3, 3, size=(7, m)).astype(float)  # many ties, at the k-th value too
        total[0] = -np.inf
        total[1, 2:] = -np.inf  # fewer finite scores than k
        total[2] += rng.standard_normal(m)
        total[3, 1:] = np.nan  # a diverged model: fewer comparable scores than k
        total[4, ::3] = np.inf  # ties at +inf
        total[5, m // 2] = np.nan  # one NaN among finite scores: argmax would take it first
        total[6, -1] = -np.inf  # one -inf after the scores to take
        want = np.argsort(-total, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k(total, k), want, err_msg=f"m={m} k={k}")


def test_beam_search_finds_the_best_sequence_of_a_known_model():
    """A fixed next-word table where greedy is led astray and beam 2 is not."""

    class Table:
        @staticmethod
        def decode_start(p, features, cfg):
            return None, np.zeros(len(features), dtype=np.int64)

        @staticmethod
        def decode_step(p, enc, state, words):
            V = len(VOCAB)
            logp = np.full((len(words), V), -20.0)
            for n, (s, w) in enumerate(zip(state, words)):
                if s == 0:  # first word: w0 (0.6) or w1 (0.4)
                    logp[n, 4], logp[n, 5] = np.log(0.6), np.log(0.4)
                elif w == 4:  # after w0 nothing is likely
                    logp[n, 6:9] = np.log(1 / 3)
                else:  # after w1, <end> is sure
                    logp[n, VOCAB.end] = 0.0
            return logp, state + 1, None

    feats = np.zeros((1, 1, 1))
    assert greedy(Table, None, feats, {}, VOCAB, 3)[0]["words"][0] == "w0"
    res = beam_search(Table, None, feats, {}, VOCAB, beam=2, max_length=3)[0]
    assert res["words"] == ["w1"]
    # both hypotheses, best first: "w1 <end>" (0.4), then "w0 w2 <end>" (0.6 / 3, w2 first of the three ties)
    assert [h["words"] for h in res["beams"]] == [["w1"], ["w0", "w2"]]
    assert [h["logprob"] for h in res["beams"]] == pytest.approx([np.log(0.4), np.log(0.6 / 3)])


def _reference_beam(model, p, feats, cfg, beam, max_length):
    """Beam search the plain way, one image and one hypothesis at a time, each step a decode_step of one row:
    [(words, logprob)] of the best hypothesis per image."""
    best = []
    for n in range(len(feats)):
        enc, state = model.decode_start(p, feats[n:n + 1], cfg)
        hyps = [([], 0.0, state, False)]  # words, logprob, state, finished
        for _ in range(max_length):
            grown = []
            for words, score, st, done in hyps:
                if done:
                    grown.append((words, score, st, done))
                    continue
                logp, st2, _ = model.decode_step(p, enc, st, np.array([words[-1] if words else VOCAB.start]))
                for w in range(len(VOCAB)):
                    if w not in (VOCAB.pad, VOCAB.start, VOCAB.unk):
                        grown.append((words + [w], score + float(logp[0, w]), st2, w == VOCAB.end))
            hyps = sorted(grown, key=lambda h: -h[1])[:beam]
            if all(h[3] for h in hyps):
                break
        best.append((VOCAB.decode(hyps[0][0]), hyps[0][1]))
    return best


# (parameter scale, shift of the <end> logit) under which each tiny model's captions end at several lengths
_LENGTHS_VARY = {"gru-attention": (2.0, 1.0), "lstm-adaptive": (1.0, 0.0), "lstm-attention": (3.0, 0.0),
                 "lstm-noattention": (3.0, 0.0)}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_beam_search_equals_the_plain_search_one_hypothesis_at_a_time(name):
    """The batched search (one first step per image, an image's beams sharing its encoding where the model's
    attention takes k queries per image, the finished beams carried at their score, an image leaving the search
    once all its beams have finished) finds what the plain one does."""
    scale, end_shift = _LENGTHS_VARY[name]
    p, cfg = _params(name, scale=scale)
    p[_END_BIAS.get(name, "output/b")][VOCAB.end] += end_shift
    feats = np.random.default_rng(4).standard_normal((20, 3, 6))
    got = beam_search(MODELS[name], p, feats, cfg, VOCAB, beam=3, max_length=6)
    want = _reference_beam(MODELS[name], p, feats, cfg, 3, 6)
    assert [r["words"] for r in got] == [w for w, _ in want]
    np.testing.assert_allclose([r["logprob"] for r in got], [s for _, s in want], rtol=1e-12)
    lengths = {len(w) for w, _ in want}
    assert len(lengths) > 2 and max(lengths) == 6  # images leave the search at different steps, some never


class _Recording:
    """A model module whose decode_start records how many images each call got (from any thread)."""

    def __init__(self, model):
        self.model, self.batches = model, []

    def __getattr__(self, name):
        return getattr(self.model, name)

    def decode_start(self, params, features, cfg):
        self.batches.append(features.shape[0])
        return self.model.decode_start(params, features, cfg)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_on_threads_each_searches_its_own_images_and_finds_the_same_captions(name, split_threads, monkeypatch):
    """With n threads and ROWS_PER_THREAD rows of state for each, greedy and beam search give every thread its own
    consecutive images to decode start to end; the captions, log-probabilities, beams and attention are those of
    one thread. Fewer rows: one search, its operators split. A beam of 3 decodes 3 rows an image, so n images are
    enough for it and not for greedy."""
    import scratchcap.decode as decoding

    monkeypatch.setattr(decoding, "ROWS_PER_THREAD", 3)
    scale, end_shift = _LENGTHS_VARY[name]
    p, cfg = _params(name, scale=scale)
    p[_END_BIAS.get(name, "output/b")][VOCAB.end] += end_shift
    feats = np.random.default_rng(5).standard_normal((10, 3, 6))
    runs = {}
    for n in (1, 2, 3):
        split_threads(n)
        model = _Recording(MODELS[name])
        runs[n] = (greedy(model, p, feats, cfg, VOCAB, 6), beam_search(model, p, feats, cfg, VOCAB, beam=3,
                                                                          max_length=6), model.batches)
        few = _Recording(MODELS[name])
        greedy(few, p, feats[:3 * n - 1], cfg, VOCAB, 6)
        assert few.batches == [3 * n - 1]
        if n > 1:
            few.batches.clear()
            greedy(few, p, feats[:n], cfg, VOCAB, 6)
            beam_search(few, p, feats[:n], cfg, VOCAB, beam=3, max_length=6)
            assert few.batches == [n] + [1] * n
    assert runs[1][2] == [10, 10] and sorted(runs[2][2]) == [5, 5] * 2 and sorted(runs[3][2]) == [3, 3, 3, 3, 4, 4]
    for n in (2, 3):
        for got, want in zip(runs[n][:2], runs[1][:2]):
            assert [r["words"] for r in got] == [r["words"] for r in want]
            np.testing.assert_allclose([r["logprob"] for r in got], [r["logprob"] for r in want], rtol=1e-12)
            for a, b in zip(got, want):
                # The beams' words exactly; their scores to float64 rounding: OpenBLAS's dgemm on a Zen 2 EPYC
                # gave a 5-image group a last-bit difference from the 10-image batch.
                assert [x["words"] for x in a.get("beams", [])] == [x["words"] for x in b.get("beams", [])]
                for key in ("logprob", "score"):
                    np.testing.assert_allclose([x[key] for x in a.get("beams", [])],
                                               [x[key] for x in b.get("beams", [])], rtol=1e-12)
                if "alphas" in b:
                    np.testing.assert_allclose(a["alphas"], b["alphas"], rtol=1e-12)


def first_word_model(probs, vocab=VOCAB):
    """A next-word table: at the first step {token id: probability} (every other token e^-30); then <end>."""
    from scratchcap.backend import get_array_module

    class Table:
        @staticmethod
        def decode_start(p, features, cfg):
            return None, features[:, 0, 0] * 0  # the step count, on the features' device

        @staticmethod
        def decode_step(p, enc, state, words):
            logp = get_array_module(state).full((len(words), len(vocab)), -30.0)
            if float(state[0]) == 0:
                for token, prob in probs.items():
                    logp[:, token] = float(np.log(prob))
            else:
                logp[:, vocab.end] = 0.0
            return logp, state + 1, None
    return Table


UnkFirst = first_word_model({VOCAB.unk: 0.5, 6: 0.3})  # the best first word is <unk>, then w2


@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_never_emits_unk_unless_allowed(beam, xp):
    feats = xp.zeros((2, 1, 1))
    masked = decode(UnkFirst, None, feats, {}, VOCAB, beam=beam, max_length=4)
    assert [r["words"] for r in masked] == [["w2"], ["w2"]]
    assert masked[0]["logprob"] == pytest.approx(np.log(0.3))
    allowed = decode(UnkFirst, None, feats, {}, VOCAB, beam=beam, max_length=4, allow_unk=True)
    assert [r["words"] for r in allowed] == [["<unk>"], ["<unk>"]]
    assert allowed[0]["logprob"] == pytest.approx(np.log(0.5))


def test_attention_figure_has_a_panel_per_word_and_shows_where_each_looked():
    image = Image.new("RGB", (50, 40), (200, 120, 60))
    alphas = np.array([[0.97, 0.01, 0.01, 0.01],   # "a": the top-left cell
                       [0.01, 0.97, 0.01, 0.01],   # "red": the top-right cell
                       [0.25, 0.25, 0.25, 0.25],   # "thing": flat
                       [0.4, 0.2, 0.2, 0.2]])      # <end>
    res = {"words": ["a", "red", "thing"], "alphas": alphas}
    fig = attention_figure(image, res, (2, 2), panel=120, columns=3)
    assert fig.width == 360 and fig.height > 2 * 120  # the caption above two rows of panels
    top = fig.height - 2 * 120
    px = np.asarray(fig, dtype=float).mean(axis=2)

    def panel(k):
        r, c = divmod(k, 3)
        return px[top + r * 120: top + (r + 1) * 120, c * 120:(c + 1) * 120]

    first, second, flat = panel(1), panel(2), panel(3)
    # the top row of cells, above the label band: bright where the word looked, dim elsewhere
    assert first[:40, :40].mean() > 2 * first[:40, 80:].mean()
    assert second[:40, 80:].mean() > 2 * second[:40, :40].mean()
    assert np.ptp(flat[:60]) < 1  # a flat map highlights nothing
    with pytest.raises(ValueError, match="no attention"):
        attention_figure(image, {"words": ["a"]}, (2, 2))


def test_attention_heat_is_smooth_peaks_at_the_attended_cell_and_is_zero_when_flat():
    from scratchcap.plots import attention_heat

    alpha = np.zeros(9)
    alpha[5] = 1.0  # row 1, column 2 of a 3 x 3 grid
    heat = attention_heat(alpha, (3, 3), 90)
    assert heat.shape == (90, 90) and heat.min() == 0.0 and heat.max() == pytest.approx(1.0)
    r, c = np.unravel_index(heat.argmax(), heat.shape)
    assert 30 <= r < 60 and 60 <= c < 90
    assert np.abs(np.diff(heat, axis=1)).max() < 0.2  # no hard cell edges
    assert not attention_heat(np.full(9, 1 / 9), (3, 3), 90).any()


def test_a_long_caption_wraps_above_the_panels():
    from scratchcap.plots import attention_figure as figure

    image = Image.new("RGB", (30, 30))
    alphas = np.full((3, 4), 0.25)
    short = figure(image, {"words": ["a", "b"], "alphas": alphas}, (2, 2), panel=60, columns=3)
    words = ["word"] * 40
    long = figure(image, {"words": words, "alphas": np.full((41, 4), 0.25)}, (2, 2), panel=60, columns=3)
    assert long.width == short.width == 180
    rows_long, rows_short = -(-(1 + 41) // 3), 1
    assert long.height - rows_long * 60 > short.height - rows_short * 60  # more lines of caption


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    root = tmp_path_factory.mktemp("cap")
    weights = root / "tiny.h5"
    save_weights(weights, random_layers(2), preprocessing="caffe", source="test", widths=TINY_WIDTHS)
    paths = {}
    for name in ("gru-attention", "lstm-noattention", "lstm-adaptive"):
        p, cfg = _params(name, D=8, scale=1.0)
        paths[name] = save_checkpoint(root / f"{name}.h5", model=name, params=p, vocab=VOCAB,
                                      config=tiny_captioner_config(cfg, weights))
    data = generate_shapes(str(root / "shapes"), n_train=2, n_dev=3, n_test=0, size=32, progress=False)
    return root, paths, data


def test_one_hostile_file_does_not_stop_the_others(tiny_checkpoint, capsys):
    import struct
    import zlib

    root, paths, _ = tiny_checkpoint

    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 40000, 40000, 8, 2, 0, 0, 0)) \
        + chunk(b"IEND", b"")
    (root / "bomb.png").write_bytes(bomb)
    short = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 64, 640, 8, 2, 0, 0, 0)) \
        + chunk(b"IDAT", zlib.compress(b"\x00" + b"\x80" * 192)) + chunk(b"IEND", b"")
    (root / "short.png").write_bytes(short)
    Image.new("RGB", (50, 50), (10, 200, 10)).save(root / "green.jpg")
    code = caption_cli.main([str(root / "bomb.png"), str(root / "short.png"), str(root / "green.jpg"),
                             "--checkpoint", str(paths["gru-attention"]), "--device", "cpu", "--json"])
    assert code == 1  # some images failed
    out = {r["image"].rsplit("/", 1)[-1]: r for r in json.loads(capsys.readouterr().out)}
    assert "caption" in out["green.jpg"]
    assert "decompression bomb" in out["bomb.png"]["error"] and "truncated" in out["short.png"]["error"]


def test_caption_command(tiny_checkpoint, capsys):
    root, paths, _ = tiny_checkpoint
    Image.new("RGBA", (300, 120), (0, 0, 255, 128)).save(root / "rgba.png")
    Image.new("L", (64, 90), 100).save(root / "gray.jpg")
    (root / "broken.jpg").write_bytes(b"not an image")
    images = [str(root / "rgba.png"), str(root / "broken.jpg"), str(root / "gray.jpg")]
    code = caption_cli.main(images + ["--checkpoint", str(paths["gru-attention"]), "--device", "cpu", "--json",
                                      "--attention-map", str(root / "map.png")])
    assert code == 1  # one image could not be read
    out = json.loads(capsys.readouterr().out)
    assert [o["image"] for o in out] == [images[0], images[2], images[1]]
    assert "error" in out[2] and isinstance(out[0]["caption"], str)
    assert Image.open(root / "map-1.png").size[0] > 0 and (root / "map-2.png").exists()
    assert caption_cli.main([images[2], "--checkpoint", str(paths["lstm-noattention"]), "--beam", "1"]) == 0
    assert capsys.readouterr().out.startswith(images[2])
    assert caption_cli.main([images[1]]) == 2


def test_caption_shows_the_sentinels_beta_for_every_word(tiny_checkpoint, capsys):
    root, paths, _ = tiny_checkpoint
    Image.new("RGB", (80, 60), (30, 160, 90)).save(root / "green.png")
    assert caption_cli.main([str(root / "green.png"), "--checkpoint", str(paths["lstm-adaptive"]), "--json",
                             "--attention-map", str(root / "adaptive.png")]) == 0
    (out,) = json.loads(capsys.readouterr().out)
    beta = out["sentinel"]
    assert len(beta) - len(out["caption"].split()) in (0, 1) and all(0 < b < 1 for b in beta)  # (and <end>)
    assert Image.open(root / "adaptive.png").size[0] > 0


def test_the_figure_labels_each_word_with_its_beta():
    image = Image.new("RGB", (40, 40), (90, 90, 90))
    res = {"words": ["a"], "alphas": np.full((2, 4), 0.2)}
    plain = np.asarray(attention_figure(image, res, (2, 2), panel=120, columns=3), dtype=float)
    with_beta = np.asarray(attention_figure(image, dict(res, sentinel=np.array([0.2, 0.2])), (2, 2), panel=120,
                                            columns=3), dtype=float)
    top = plain.shape[0] - 120
    band = slice(top + 90, top + 120)  # the label band at the bottom of the panels
    assert np.abs(plain[band, 120:240] - with_beta[band, 120:240]).max() > 50  # the word's label text differs
    np.testing.assert_array_equal(plain[:top + 90], with_beta[:top + 90])  # the maps are the same


def test_evaluate_command(tiny_checkpoint, tmp_path, capsys):
    root, paths, data = tiny_checkpoint
    a, b = str(paths["gru-attention"]), str(paths["lstm-noattention"])
    code = evaluate_cli.main(["--checkpoint", a, "--dataset", "shapes", "--data-dir", data, "--beam", "2",
                              "--json", str(tmp_path / "s.json"), "--results", str(tmp_path / "r.json")])
    assert code == 0
    scores = json.load(open(tmp_path / "s.json"))
    assert {"Bleu_4", "ROUGE_L", "CIDEr", "exact"} <= set(scores)
    results = json.load(open(tmp_path / "r.json"))
    assert len(results) == 3 and set(results[0]) == {"image_id", "caption"}
    assert evaluate_cli.main(["--compare", a, b, "--dataset", "shapes", "--data-dir", data, "--beam", "1"]) == 0
    table = capsys.readouterr().out
    assert a in table and b in table and "CIDEr" in table
    assert evaluate_cli.main(["--checkpoint", str(tmp_path / "none.h5"), "--dataset", "shapes",
                              "--data-dir", data]) == 2


def test_release_keeps_what_captioning_needs_in_float16(tiny_checkpoint, tmp_path):
    from scratchcap.checkpoint import load_checkpoint
    from scratchcap.release import main as release_main

    root, paths, _ = tiny_checkpoint
    out = tmp_path / "flickr8k-gru-attention.h5"
    assert release_main([str(paths["gru-attention"]), "--out", str(out)]) == 0
    rel, orig = load_checkpoint(out), load_checkpoint(paths["gru-attention"])
    assert rel["optimizer"] is None and rel["vocabulary"] == orig["vocabulary"]
    assert all(v.dtype == np.float16 for v in rel["params"].values())
    for k in orig["params"]:
        np.testing.assert_allclose(rel["params"][k], orig["params"][k], rtol=1e-3, atol=1e-3)
    assert "caffe" in rel["attrs"]["preprocessing"]


def test_release_averages_checkpoints_of_one_model_and_refuses_others(tiny_checkpoint, tmp_path, capsys):
    from scratchcap.checkpoint import load_checkpoint, save_checkpoint
    from scratchcap.release import main as release_main

    root, paths, _ = tiny_checkpoint
    a = load_checkpoint(paths["gru-attention"])
    shifted = {k: v + 0.5 for k, v in a["params"].items()}
    b_path = save_checkpoint(tmp_path / "b.h5", model=a["model"], params=shifted, config=a["config"], vocab=VOCAB)
    out = tmp_path / "avg.h5"
    assert release_main([str(paths["gru-attention"]), str(b_path), "--out", str(out), "--dtype", "float32"]) == 0
    avg = load_checkpoint(out)
    for k, v in a["params"].items():
        np.testing.assert_allclose(avg["params"][k], v + 0.25, rtol=1e-6, atol=1e-6)
    assert "b.h5" in avg["attrs"]["released_from"]
    assert release_main([str(paths["gru-attention"]), str(paths["lstm-noattention"]), "--out",
                         str(tmp_path / "bad.h5")]) == 2
    assert "not the same model" in capsys.readouterr().err and not (tmp_path / "bad.h5").exists()


def test_evaluate_shows_progress_unless_told_not_to(tiny_checkpoint, capsys):
    root, paths, data = tiny_checkpoint
    args = ["--checkpoint", str(paths["gru-attention"]), "--dataset", "shapes", "--data-dir", data, "--beam", "1"]
    assert evaluate_cli.main(args) == 0
    err = capsys.readouterr().err
    assert "decoding, beam 1" in err and "100%" in err  # tqdm: count, rate and ETA on stderr
    assert evaluate_cli.main(args + ["--no-progress"]) == 0
    assert "decoding, beam 1" not in capsys.readouterr().err


def test_caption_and_evaluate_agree_on_the_gpu_path(tiny_checkpoint, tmp_path, hostcupy, capsys):
    """--device gpu on the strict CuPy stand-in (tests/hostcupy): the same captions, maps and scores."""
    root, paths, data = tiny_checkpoint
    Image.new("RGB", (90, 60), (200, 30, 30)).save(root / "red.png")
    results = {}
    for device in ("cpu", "gpu"):
        assert caption_cli.main([str(root / "red.png"), "--checkpoint", str(paths["gru-attention"]), "--beam", "3",
                                 "--json", "--device", device, "--attention-map", str(tmp_path / f"{device}.png")]) == 0
        captions = [(c["caption"], c["logprob"]) for c in json.loads(capsys.readouterr().out)]
        assert evaluate_cli.main(["--checkpoint", str(paths["gru-attention"]), "--dataset", "shapes",
                                  "--data-dir", data, "--beam", "2", "--no-progress", "--device", device,
                                  "--json", str(tmp_path / f"{device}.json")]) == 0
        capsys.readouterr()
        results[device] = captions, json.load(open(tmp_path / f"{device}.json"))
        assert (tmp_path / f"{device}.png").exists()
    assert [c for c, _ in results["gpu"][0]] == [c for c, _ in results["cpu"][0]]
    # float32 log-probabilities through a tiny VGG-16 (13 convolutions) and a few decoder steps, summed in
    # another order on the stand-in (its fused kernels): about 100 roundings deep.
    assert [p for _, p in results["gpu"][0]] == pytest.approx([p for _, p in results["cpu"][0]],
                                                              rel=rtol("float32", 100))
    scores = {d: {k: v for k, v in results[d][1].items() if v is not None} for d in results}  # METEOR needs nltk data
    # the same captions give the same scores: computed from strings, in float64
    assert set(results["gpu"][1]) == set(results["cpu"][1]) and scores["gpu"] == pytest.approx(scores["cpu"], rel=1e-12)


def test_evaluate_reads_the_training_feature_cache_instead_of_running_vgg16(tiny_checkpoint, tmp_path, monkeypatch):
    from scratchcap import captioner, evaluate
    from scratchcap.checkpoint import load_checkpoint
    from scratchcap.data import load_dataset
    from scratchcap.features import extract
    from scratchcap.vgg16 import VGG16

    root, paths, data = tiny_checkpoint
    on_the_fly, _ = evaluate.evaluate(paths["gru-attention"], "shapes", data, beam=2, log=lambda *_: None)
    ckpt = load_checkpoint(paths["gru-attention"])
    cache = tmp_path / "train-cache.h5"
    dev = [r.path for r in load_dataset("shapes", data, log=lambda *_: None) if r.split == "dev"]
    extract(dev, str(cache), VGG16.load(ckpt["config"]["weights"], widths=None), layer="block5_conv3",
            image_size=32, dtype="float32", progress=False, log=lambda *_: None)
    cfg = dict(ckpt["config"], features=str(cache))
    path = save_checkpoint(tmp_path / "with-cache.h5", model=ckpt["model"], params=ckpt["params"], config=cfg,
                           vocab=VOCAB)

    def no_vgg(*a, **k):
        raise AssertionError("VGG-16 ran although the training cache holds every image")

    monkeypatch.setattr(captioner, "Captioner", no_vgg)
    from_cache, _ = evaluate.evaluate(path, "shapes", data, beam=2, log=lambda *_: None)
    numbers = {k: v for k, v in on_the_fly.items() if v is not None}  # METEOR is None without its scorer
    assert {k: v for k, v in from_cache.items() if v is not None} == pytest.approx(numbers, rel=1e-9)
    cfg["layer"] = "block4_conv3"  # a cache of another layer must not be used
    other = save_checkpoint(tmp_path / "other-layer.h5", model=ckpt["model"], params=ckpt["params"], config=cfg,
                            vocab=VOCAB)
    with pytest.raises(AssertionError, match="VGG-16 ran"):
        evaluate.evaluate(other, "shapes", data, beam=2, log=lambda *_: None)


class Repeater:
    """A table that loves "w0 w1" over and over: after w0 comes w1 (0.9); after w1, w0 (``loop``) or <end>."""

    def __init__(self, loop, end):
        self.loop, self.end = loop, end

    @staticmethod
    def decode_start(p, features, cfg):
        return None, np.zeros(len(features), dtype=np.int64)

    def decode_step(self, p, enc, state, words):
        logp = np.full((len(words), len(VOCAB)), -9.0)
        for n, w in enumerate(words):
            if w == 4:
                logp[n, 5], logp[n, 6] = np.log(0.9), np.log(0.05)
            elif w == 5:
                logp[n, 4], logp[n, VOCAB.end], logp[n, 7] = np.log(self.loop), np.log(self.end), np.log(0.04)
            else:
                logp[n, 4] = np.log(0.9)
        return logp, state + 1, None


def test_trigram_blocking_stops_a_beam_repeating_itself():
    feats = np.zeros((2, 1, 1))
    looper = Repeater(loop=0.85, end=0.1)
    free = beam_search(looper, None, feats, {}, VOCAB, beam=2, max_length=9)[0]["words"]
    assert free[:5] == ["w0", "w1", "w0", "w1", "w0"]  # the model's loop, unblocked
    for res in beam_search(looper, None, feats, {}, VOCAB, beam=2, max_length=9, block_trigrams=True):
        trigrams = list(zip(res["words"], res["words"][1:], res["words"][2:]))
        assert len(trigrams) == len(set(trigrams)), res["words"]
        assert res["words"][:3] == ["w0", "w1", "w0"] or res["words"][:2] == ["w0", "w1"]


def test_the_length_penalty_favours_longer_captions_as_alpha_grows():
    from scratchcap.decode import length_penalty

    assert length_penalty(np.array([1]), 0.0)[0] == 1.0 and length_penalty(np.array([7]), 1.0)[0] == 2.0
    feats = np.zeros((1, 1, 1))
    lengths = [len(beam_search(Repeater(loop=0.6, end=0.3), None, feats, {}, VOCAB, beam=3, max_length=8,
                               length_penalty_alpha=a)[0]["words"]) for a in (0.0, 1.0, 3.0)]
    assert lengths == sorted(lengths) and lengths[-1] > lengths[0]


def test_evaluate_reports_how_often_captions_repeat_a_word_pair():
    from scratchcap.evaluate import repeated_bigram_share

    hyps = {"a": "a black dog and a black dog", "b": "a dog runs", "c": "a man and a woman", "d": "two men"}
    assert repeated_bigram_share(hyps) == 0.25


ENDINGS_VOCAB = Vocabulary(["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs"])


class EndsOnA:
    """After <start>: "a" (0.8) or "dog" (0.2); after "a": <end> (0.6) or "dog" (0.4); then <end>."""

    @staticmethod
    def decode_start(p, features, cfg):
        return None, features[:, 0, 0] * 0

    @staticmethod
    def decode_step(p, enc, state, words):
        from scratchcap.backend import get_array_module
        xp = get_array_module(state)
        V = ENDINGS_VOCAB
        logp = xp.full((len(words), len(V)), -30.0)
        w = np.asarray(words.get() if hasattr(words, "get") else words)
        for n, word in enumerate(w):
            if word == V.start:
                logp[n, V.index["a"]], logp[n, V.index["dog"]] = float(np.log(0.8)), float(np.log(0.2))
            elif word == V.index["a"]:
                logp[n, V.end], logp[n, V.index["dog"]] = float(np.log(0.6)), float(np.log(0.4))
            else:
                logp[n, V.end] = 0.0
        return logp, state + 1, None


@pytest.mark.parametrize("beam", [1, 2])
def test_bad_endings_can_be_blocked(beam, xp):
    feats = xp.zeros((2, 1, 1))

    def run(**kw):
        if beam == 1:
            return greedy(EndsOnA, None, feats, {}, ENDINGS_VOCAB, 4, **kw)
        return beam_search(EndsOnA, None, feats, {}, ENDINGS_VOCAB, beam=beam, max_length=4, **kw)

    assert [r["words"] for r in run()] == [["a"], ["a"]]
    blocked = run(block_bad_endings=True)
    assert [r["words"] for r in blocked] == [["a", "dog"], ["a", "dog"]]
    assert blocked[0]["logprob"] == pytest.approx(np.log(0.8 * 0.4))


PrefersNonWords = first_word_model({VOCAB.start: 0.5, VOCAB.pad: 0.3, 5: 0.2})  # before the real word w1


@pytest.mark.parametrize("beam", [1, 3])
def test_decoding_never_emits_pad_or_start(beam, xp):
    """Dropped from the text, they would print as a fragment; the next real word takes their place."""
    feats = xp.zeros((2, 1, 1))
    out = decode(PrefersNonWords, None, feats, {}, VOCAB, beam=beam, max_length=4)
    assert [r["words"] for r in out] == [["w1"], ["w1"]]
    assert out[0]["logprob"] == pytest.approx(np.log(0.2))

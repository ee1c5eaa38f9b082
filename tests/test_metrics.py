"""Metrics: hand-checked values, edge cases, and equality with pycocoevalcap where it is installed."""
import math

import pytest

from scratchcap import metrics
from scratchcap.metrics import bleu, cider_d, rouge_l, score


def test_identical_captions_score_one_and_bleu_counts_by_hand():
    r = {"a": [["a", "dog", "runs", "on", "grass"]]}
    assert bleu(r, {"a": ["a", "dog", "runs", "on", "grass"]})[3] == pytest.approx(1.0, abs=1e-8)
    # hyp "a dog sits": 2 of 3 unigrams, 1 of 2 bigrams; brevity penalty exp(1 - 5/3)
    b = bleu(r, {"a": ["a", "dog", "sits"]})
    bp = math.exp(1 - 5 / 3)
    assert b[0] == pytest.approx(bp * 2 / 3, rel=1e-6)
    assert b[1] == pytest.approx(bp * math.sqrt(2 / 3 * 1 / 2), rel=1e-6)


def test_bleu_takes_the_closest_reference_length_and_the_shorter_on_ties():
    r = {"a": [["x"] * 2, ["x"] * 6]}
    assert bleu(r, {"a": ["x"] * 4})[0] == pytest.approx(1.0, abs=1e-8)  # 4 is as close to 2 as to 6: 2 wins, no penalty
    r = {"a": [["x"] * 5, ["x"] * 9]}
    assert bleu(r, {"a": ["x"] * 4})[0] == pytest.approx(math.exp(1 - 5 / 4), rel=1e-6)


def test_rouge_l_by_hand():
    r = {"a": [["the", "cat", "sat", "on", "the", "mat"], ["a", "cat"]]}
    h = {"a": ["the", "cat", "on", "a", "mat"]}
    # LCS: 4 with the first reference (the cat on mat), 2 with the second (a? no: cat, then nothing): 1
    prec, rec = max(4 / 5, 1 / 5), max(4 / 6, 1 / 2)
    expected = (1 + 1.2 ** 2) * prec * rec / (rec + 1.2 ** 2 * prec)
    assert rouge_l(r, h) == pytest.approx(expected, rel=1e-12)


def test_cider_rewards_consensus_and_penalizes_length():
    refs = {i: [["a", "red", "circle"], ["a", "red", "circle", "here"]] for i in "ab"}
    refs["c"] = [["two", "blue", "squares"]]
    good = cider_d(refs, {"a": ["a", "red", "circle"], "b": ["a", "red", "circle"], "c": ["two", "blue", "squares"]})
    long = cider_d(refs, {"a": ["a", "red", "circle"] * 3, "b": ["a", "red", "circle"], "c": ["two", "blue", "squares"]})
    wrong = cider_d(refs, {"a": ["two", "blue", "squares"], "b": ["a", "red", "circle"], "c": ["a", "red", "circle"]})
    assert good > long > 0 and good > wrong


def test_empty_and_punctuation_hypotheses_score_zero():
    refs = {"a": ["a dog runs"], "b": ["a cat sleeps"]}
    out = score(refs, {"a": "", "b": "!!! ..."}, with_meteor=False)
    assert out["Bleu_1"] < 1e-6 and out["ROUGE_L"] == 0 and out["CIDEr"] == 0


def test_single_reference_and_normalization():
    out = score({"a": "A Dog, runs!"}, {"a": "a dog runs"}, with_meteor=False)
    assert out["ROUGE_L"] == pytest.approx(1.0) and out["Bleu_3"] == pytest.approx(1.0, abs=1e-6)


def test_ids_on_one_side_only():
    refs = {"a": ["a dog"], "b": ["a cat"]}
    with pytest.raises(ValueError, match="1 references have no hypothesis"):
        score(refs, {"a": "a dog"}, with_meteor=False)
    with pytest.raises(ValueError, match="1 hypotheses have no references"):
        score(refs, {"a": "a dog", "b": "x", "z": "y"}, with_meteor=False)
    out = score(refs, {"a": "a dog", "z": "y"}, missing="ignore", with_meteor=False)
    assert out["ROUGE_L"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no id has both"):
        score(refs, {"z": "y"}, missing="ignore", with_meteor=False)


def test_meteor_is_left_out_with_a_notice_when_nothing_can_compute_it(monkeypatch):
    monkeypatch.setattr(metrics.shutil, "which", lambda name: None)
    monkeypatch.setattr(metrics, "_meteor_nltk", lambda r, h: (_ for _ in ()).throw(LookupError("no wordnet")))
    notes = []
    out = score({"a": ["a dog"]}, {"a": "a dog"}, notice=notes.append)
    assert "METEOR" not in out and "Bleu_4" in out
    assert len(notes) == 1 and "METEOR left out" in notes[0]


def _corpus(n_images=600, seed=0):
    """Pseudo-captions with shared vocabulary (the fixture script's generator, so there is one)."""
    from fixtures.make_reference_fixtures import caption_corpus

    return caption_corpus(n_images, seed)


def _coco_fixture():
    import json
    import os

    with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures", "coco_caption_scores.json")) as f:
        return json.load(f)


def test_equal_to_the_numbers_coco_caption_wrote():
    """BLEU-1..4, ROUGE-L and CIDEr-D on 40 images against pycocoevalcap's own output (a fixture: runs everywhere)."""
    fix = _coco_fixture()
    ours = score(fix["refs"], fix["hyps"], with_meteor=False)
    for key in ("Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"):
        assert ours[key] == pytest.approx(fix["scores"][key], abs=1e-9), key
    assert 0.1 < fix["scores"]["Bleu_4"] < 0.5 and fix["scores"]["CIDEr"] > 0.5  # a corpus that tests something


def test_meteor_equals_the_number_coco_caption_wrote():
    """METEOR 1.5 through the jar that pycocoevalcap ships (the test extra installs it; CI has Java)."""
    pytest.importorskip("pycocoevalcap", reason="pip install '.[test]' brings pycocoevalcap")
    if metrics.shutil.which("java") is None:
        pytest.skip("no Java runtime for METEOR 1.5")
    fix = _coco_fixture()
    out = score(fix["refs"], fix["hyps"])
    assert out["METEOR"] == pytest.approx(fix["scores"]["METEOR"], abs=1e-6)


def test_equal_to_pycocoevalcap_on_600_images_with_5_references():
    pytest.importorskip("pycocoevalcap", reason="the reference implementation is optional")
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.rouge.rouge import Rouge

    refs, hyps = _corpus()
    ours = score(refs, hyps, with_meteor=False)
    res = {i: [h] for i, h in hyps.items()}
    b, _ = Bleu(4).compute_score(refs, res, verbose=0)
    for k in range(4):
        assert ours[f"Bleu_{k + 1}"] == pytest.approx(b[k], abs=1e-6)
    assert ours["ROUGE_L"] == pytest.approx(Rouge().compute_score(refs, res)[0], abs=1e-6)
    assert ours["CIDEr"] == pytest.approx(Cider().compute_score(refs, res)[0], abs=1e-6)


def test_meteor_equals_coco_caption_where_java_is_present():
    pytest.importorskip("pycocoevalcap", reason="the reference implementation is optional")
    if metrics.shutil.which("java") is None:
        pytest.skip("no Java runtime")
    from pycocoevalcap.meteor.meteor import Meteor

    refs, hyps = _corpus(50, seed=1)
    value, how = metrics.meteor({i: [r.split() for r in rs] for i, rs in refs.items()},
                                {i: h.split() for i, h in hyps.items()})
    assert "1.5" in how
    assert value == pytest.approx(Meteor().compute_score(refs, {i: [h] for i, h in hyps.items()})[0], abs=1e-6)

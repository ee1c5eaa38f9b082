import json

import pytest

from scratchcap.data.text import normalize
from scratchcap.data.vocab import SPECIALS, Vocabulary, VocabularyError


def test_normalize_lowercases_and_keeps_alphabetic_tokens():
    assert normalize("A dog, running!  On the 2nd beach.") == ["a", "dog", "running", "on", "the", "beach"]
    assert normalize("Two-year-old's toy") == ["two", "year", "old's", "toy"]
    assert normalize("!!! ... 42") == []
    assert normalize("a b c d", max_length=2) == ["a", "b"]
    assert normalize("already tokenized words") == ["already", "tokenized", "words"]


def test_build_by_min_count_and_top_k():
    caps = [["a", "dog"], ["a", "cat"], ["a", "dog", "runs"]]
    v = Vocabulary.build(caps, min_count=2)
    assert v.words == list(SPECIALS) + ["a", "dog"]
    v = Vocabulary.build(caps, top_k=3)
    assert v.words == list(SPECIALS) + ["a", "dog", "cat"]  # ties broken alphabetically


def test_encode_decode_round_trip_and_unknowns():
    v = Vocabulary.build([["a", "dog", "runs"]], min_count=1)
    ids = v.encode(["a", "dog", "runs"])
    assert ids[0] == v.start and ids[-1] == v.end
    assert v.decode(ids) == ["a", "dog", "runs"]
    assert v.decode(v.encode(["a", "zebra"])) == ["a", "<unk>"]
    assert v.decode(ids + [v.pad, v.pad]) == ["a", "dog", "runs"]
    assert v.decode([v.start, v.index["dog"], v.end, v.index["a"]]) == ["dog"]
    assert v.encode(["a", "dog", "runs"], max_length=1) == [v.start, v.index["a"], v.end]


def test_json_save_load_and_fingerprint(tmp_path):
    v = Vocabulary.build([["x", "y"]], min_count=1)
    v.save(tmp_path / "v.json")
    w = Vocabulary.load(tmp_path / "v.json")
    assert w == v and w.fingerprint() == v.fingerprint()
    assert Vocabulary.build([["x", "z"]], min_count=1).fingerprint() != v.fingerprint()
    (tmp_path / "bad.json").write_text(json.dumps({"words": ["a"]}))
    with pytest.raises(VocabularyError, match="not a scratchcap vocabulary"):
        Vocabulary.load(tmp_path / "bad.json")
    with pytest.raises(VocabularyError, match="must start with"):
        Vocabulary(["a", "b", "c", "d"])

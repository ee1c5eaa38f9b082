"""Attention sharpness per kind of word (scratchcap.attention_stats) and its columns in evaluate."""
import numpy as np
import pytest

from scratchcap.attention_stats import FUNCTION_WORDS, NOUNS, attention_stats
from scratchcap.evaluate import flat_attention_stats


def test_a_sharp_noun_and_a_flat_function_word_are_told_apart():
    L = 4
    one_cell = np.array([1.0, 0.0, 0.0, 0.0])
    flat = np.full(L, 1 / L)
    res = {"words": ["a", "dog", "runs"], "alphas": np.stack([flat, one_cell, flat, flat])}
    stats = attention_stats([res])
    assert stats["nouns"]["words"] == 1 and stats["function words"]["words"] == 1  # "runs" is neither
    assert stats["nouns"]["entropy"] == pytest.approx(0.0, abs=1e-12) and stats["nouns"]["peak"] == 1.0
    assert stats["function words"]["entropy"] == pytest.approx(np.log(L))
    assert stats["function words"]["peak"] == pytest.approx(1 / L)
    assert stats["nouns"]["uniform_entropy"] == pytest.approx(np.log(L))


def test_a_sentinels_share_is_divided_out_and_its_beta_averaged():
    """With beta 0.5 the regions sum to 0.5; the map's shape is what is measured."""
    regions = np.array([0.3, 0.1, 0.05, 0.05])
    res = {"words": ["the", "man"], "alphas": np.stack([regions, regions * 0.2 / 0.5]),
           "sentinel": np.array([0.5, 0.8])}
    stats = attention_stats([res])
    assert stats["nouns"]["peak"] == pytest.approx(0.6) and stats["function words"]["peak"] == pytest.approx(0.6)
    assert stats["function words"]["beta"] == 0.5 and stats["nouns"]["beta"] == 0.8
    flat = flat_attention_stats(stats)
    assert flat["noun_beta"] == 0.8 and flat["function_peak"] == pytest.approx(0.6)
    assert set(flat) == {f"{g}_{k}" for g in ("noun", "function") for k in ("entropy", "peak", "beta")}


def test_models_without_attention_have_no_stats_and_the_lists_do_not_overlap():
    assert attention_stats([{"words": ["a", "dog"]}]) == {}
    assert not NOUNS & set(FUNCTION_WORDS) and {"dog", "man", "water"} <= NOUNS

"""How sharp the attention is, per kind of word: nouns against function words.

A map that means something should be sharper on "dog" than on "the". For every
emitted word of a group, over its map alpha (L,) renormalised over the regions
(a sentinel model's regions sum to 1 - beta; dividing it out compares the
models on where they look, not on how much):

    entropy = -sum_l alpha_l log alpha_l      in nats; log L for a flat map, 0 for one cell
    peak    = max_l alpha_l                   1 / L for a flat map

and, for a model with a visual sentinel, the mean beta of the group's words.
"""
from __future__ import annotations

import numpy as np

FUNCTION_WORDS = ("a", "on", "of", "the", "in", "is", "with", "and")

# Concrete nouns among the 300 most frequent words of the Flickr8k training captions, picked by hand (no
# tagger: NLTK's needs a download); words that are as often verbs ("run", "jump", "swing") are left out.
NOUNS = frozenset("""
air area arms baby backpack ball baseball basketball beach bench bicycle bike biker bird boat body boy boys brick
building camera cap car child children city cliff coat couple crowd dirt dog dogs dress edge face fence field
football forest fountain frisbee game girl girls glasses grass ground group guitar guy hair hand hands hat head
helmet hill hockey horse ice jacket jeans kid kids lady lake man men motorcycle mountain mountains mouth ocean
pants park path people person picture player players playground pool ramp river road rock rocks rope sand shirt
shorts sidewalk sign skateboard skateboarder skier slide snow snowboarder soccer stick street suit sunglasses
surfer table team tennis toddler toy track tree trees uniform wall water woman women woods yard
""".split())

GROUPS = {"nouns": NOUNS, "function words": frozenset(FUNCTION_WORDS)}


def attention_stats(results, groups=None):
    """{group: {"words": count, "entropy": mean, "peak": mean, "uniform_entropy": log L, "beta"?: mean}}
    over every emitted word of decode() results (their alphas (steps, L), and sentinel (steps,) if any)."""
    groups = GROUPS if groups is None else groups
    acc = {g: dict(entropy=[], peak=[], beta=[]) for g in groups}
    L = None
    for res in results:
        alphas = res.get("alphas")
        if alphas is None:
            continue
        alphas = np.asarray(alphas, dtype=np.float64)
        L = alphas.shape[1]
        beta = res.get("sentinel")
        for k, word in enumerate(res["words"][: len(alphas)]):
            a = alphas[k] / alphas[k].sum()
            for g, members in groups.items():
                if word in members:
                    acc[g]["entropy"].append(float(-(a * np.log(np.maximum(a, 1e-300))).sum()))
                    acc[g]["peak"].append(float(a.max()))
                    if beta is not None:
                        acc[g]["beta"].append(float(beta[k]))
    if L is None:
        return {}
    out = {}
    for g, lists in acc.items():
        row = dict(words=len(lists["peak"]), uniform_entropy=float(np.log(L)), uniform_peak=1.0 / L)
        if lists["peak"]:
            row.update(entropy=float(np.mean(lists["entropy"])), peak=float(np.mean(lists["peak"])))
        if lists["beta"]:
            row["beta"] = float(np.mean(lists["beta"]))
        out[g] = row
    return out


def format_stats(stats):
    lines = []
    for g, row in stats.items():
        if "peak" not in row:
            lines.append(f"attention on {g}: none emitted")
            continue
        beta = f", mean beta {row['beta']:.3f}" if "beta" in row else ""
        lines.append(f"attention on {g} ({row['words']} words): mean entropy {row['entropy']:.3f} nats "
                     f"(flat {row['uniform_entropy']:.3f}), mean peak {row['peak']:.4f} "
                     f"({row['peak'] / row['uniform_peak']:.1f}x flat){beta}")
    return "\n".join(lines)

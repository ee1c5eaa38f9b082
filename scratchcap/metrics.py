"""Caption metrics with coco-caption's definitions: BLEU-1..4, METEOR, ROUGE-L and CIDEr-D.

    score(refs={id: [caption, ...]}, hyps={id: caption}) ->
        {"Bleu_1": ..., "Bleu_4": ..., "METEOR": ..., "ROUGE_L": ..., "CIDEr": ...}

Captions are normalized first (lowercase, alphabetic tokens; see
scratchcap.data.text), which leaves already tokenized lowercase input as it is.
On such input BLEU, ROUGE-L and CIDEr equal the pycocoevalcap package's.

* BLEU: corpus level; clipped n-gram counts summed over all images, and the
  brevity penalty from the reference length closest to each hypothesis (ties
  go to the shorter reference), as coco-caption computes it.
* ROUGE-L: per image, F-measure with beta = 1.2 of the LCS precision and
  recall, each the maximum over the references; the mean over images.
* CIDEr-D: tf-idf n-gram vectors (n = 1..4) with document frequencies from the
  evaluated references, hypothesis counts clipped at the reference's, a
  Gaussian length penalty with sigma = 6, averaged over n and references, x10.
  Like coco-caption, the length it penalizes is the number of bigrams.
* METEOR: coco-caption's METEOR 1.5 (Java) when pycocoevalcap and java are
  present; otherwise NLTK's when its WordNet data is installed; otherwise left
  out, with a one-line notice.

Empty hypotheses (or all punctuation) score 0 on every metric. Ids present on
one side only raise ValueError, unless ``missing="ignore"``, which scores the
ids that both sides have.
"""
from __future__ import annotations

import math
import shutil
import sys
from collections import Counter

from .data.text import normalize

BLEU_N = 4
CIDER_N = 4
CIDER_SIGMA = 6.0
ROUGE_BETA = 1.2


def _ngrams(tokens, n_max):
    counts = Counter()
    for n in range(1, n_max + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def bleu(refs: dict, hyps: dict, n_max: int = BLEU_N) -> list:
    """[Bleu_1, ..., Bleu_n] over tokenized refs {id: [[tok]]} and hyps {id: [tok]}."""
    test_len = ref_len = 0
    guess = [0] * n_max
    correct = [0] * n_max
    for i, hyp in hyps.items():
        max_ref = Counter()
        lengths = []
        for r in refs[i]:
            lengths.append(len(r))
            for g, c in _ngrams(r, n_max).items():
                max_ref[g] = max(max_ref[g], c)
        h = len(hyp)
        test_len += h
        ref_len += min(lengths, key=lambda L: (abs(L - h), L))  # closest, ties to the shorter
        for g, c in _ngrams(hyp, n_max).items():
            correct[len(g) - 1] += min(c, max_ref.get(g, 0))
        for k in range(n_max):
            guess[k] += max(0, h - k)
    tiny, small = 1e-15, 1e-9
    scores, product = [], 1.0
    for k in range(n_max):
        product *= (correct[k] + tiny) / (guess[k] + small)
        scores.append(product ** (1.0 / (k + 1)))
    ratio = (test_len + tiny) / (ref_len + small)
    if ratio < 1:
        scores = [s * math.exp(1 - 1 / ratio) for s in scores]
    return scores


def _lcs(a, b) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(refs: dict, hyps: dict, beta: float = ROUGE_BETA) -> float:
    scores = []
    for i, hyp in hyps.items():
        if not hyp:
            scores.append(0.0)
            continue
        lcs = [_lcs(r, hyp) for r in refs[i]]
        prec = max(l / len(hyp) for l in lcs)
        rec = max(l / len(r) if r else 0.0 for l, r in zip(lcs, refs[i]))
        if prec and rec:
            scores.append((1 + beta ** 2) * prec * rec / (rec + beta ** 2 * prec))
        else:
            scores.append(0.0)
    return sum(scores) / len(scores)


class CiderD:
    """CIDEr-D with document frequencies from a fixed set of reference groups, references precomputed.

    refs {id: [[tok]]}: each id's group of references counts as one document. ``score(id, hyp)`` is
    that id's CIDEr-D of one tokenized hypothesis. Evaluation (cider_d) builds one from the evaluated
    references; self-critical training builds one from the training split and scores every sample
    against it, so the references' tf-idf vectors, norms and lengths are computed once per run.
    """

    def __init__(self, refs: dict, n_max: int = CIDER_N, sigma: float = CIDER_SIGMA):
        self.n_max, self.sigma = n_max, sigma
        counts = {i: [_ngrams(r, n_max) for r in rs] for i, rs in refs.items()}
        self.df = Counter()
        for group in counts.values():
            self.df.update(set(g for c in group for g in c))
        self.log_n = math.log(float(max(len(refs), 1)))
        self.refs = {i: [self._vector(c) for c in group] for i, group in counts.items()}

    def _vector(self, counts):
        """([{ngram: tf-idf}] per n, [norm] per n, length in bigrams, as coco-caption counts it)."""
        v = [{} for _ in range(self.n_max)]
        norm = [0.0] * self.n_max
        length = 0
        for g, tf in counts.items():
            n = len(g) - 1
            w = tf * (self.log_n - math.log(max(1.0, self.df[g])))
            v[n][g] = w
            norm[n] += w * w
            if n == 1:
                length += tf
        return v, [math.sqrt(x) for x in norm], length

    def score(self, i, hyp) -> float:
        vh, nh, lh = self._vector(_ngrams(hyp, self.n_max))
        total = [0.0] * self.n_max
        for vr, nr, lr in self.refs[i]:
            penalty = math.exp(-((lh - lr) ** 2) / (2 * self.sigma ** 2))
            for n in range(self.n_max):
                ref = vr[n]
                val = 0.0
                for g, w in vh[n].items():
                    r = ref.get(g)
                    if r is not None:
                        val += min(w, r) * r
                if nh[n] != 0 and nr[n] != 0:
                    val /= nh[n] * nr[n]
                total[n] += val * penalty
        return sum(total) / self.n_max / len(self.refs[i]) * 10.0


def cider_d(refs: dict, hyps: dict, n_max: int = CIDER_N, sigma: float = CIDER_SIGMA) -> float:
    scorer = CiderD({i: refs[i] for i in hyps}, n_max, sigma)
    return sum(scorer.score(i, hyps[i]) for i in hyps) / len(hyps)


def _meteor_coco(refs, hyps):
    from pycocoevalcap.meteor.meteor import Meteor  # needs java

    ids = list(hyps)
    gts = {i: [" ".join(r) for r in refs[i]] for i in ids}
    res = {i: [" ".join(hyps[i])] for i in ids}
    scorer = Meteor()
    try:
        return float(scorer.compute_score(gts, res)[0])
    finally:
        del scorer


def _meteor_nltk(refs, hyps):
    import nltk
    from nltk.translate.meteor_score import meteor_score

    nltk.data.find("corpora/wordnet")  # LookupError when the data is absent
    scores = [meteor_score(refs[i], hyps[i]) if hyps[i] else 0.0 for i in hyps]
    return sum(scores) / len(scores)


def meteor(refs: dict, hyps: dict, notice=None):
    """(score, implementation) or (None, reason)."""
    if shutil.which("java"):
        try:
            return _meteor_coco(refs, hyps), "METEOR 1.5 (coco-caption, Java)"
        except ImportError:
            pass
        except Exception as exc:  # a Java failure must not take the other metrics with it
            reason = f"coco-caption METEOR failed ({exc})"
            (notice or _notice)(reason)
    try:
        return _meteor_nltk(refs, hyps), "NLTK meteor_score"
    except (ImportError, LookupError):
        pass
    except Exception as exc:
        return None, f"NLTK METEOR failed ({exc})"
    return None, "METEOR left out: needs pycocoevalcap with Java, or NLTK's WordNet data"


def _notice(text):
    print(f"note: {text}", file=sys.stderr)


def score(refs: dict, hyps: dict, *, missing: str = "error", with_meteor: bool = True, notice=None) -> dict:
    """coco-caption metrics of hyps {id: caption} against refs {id: [captions]}."""
    only_hyp = [i for i in hyps if i not in refs]
    only_ref = [i for i in refs if i not in hyps]
    if (only_hyp or only_ref) and missing != "ignore":
        raise ValueError(
            f"ids differ: {len(only_hyp)} hypotheses have no references (e.g. {only_hyp[:3]}), "
            f"{len(only_ref)} references have no hypothesis (e.g. {only_ref[:3]}); "
            "pass missing='ignore' to score the ids both have")
    ids = [i for i in hyps if i in refs]
    if not ids:
        raise ValueError("no id has both a hypothesis and references")
    r = {i: [normalize(c) for c in (refs[i] if isinstance(refs[i], (list, tuple)) else [refs[i]])] for i in ids}
    if any(not rs for rs in r.values()):
        raise ValueError("every id needs at least one reference")
    h = {i: normalize(hyps[i]) for i in ids}
    out = {f"Bleu_{k + 1}": s for k, s in enumerate(bleu(r, h))}
    if with_meteor:
        value, how = meteor(r, h, notice)
        if value is not None:
            out["METEOR"] = value
        else:
            (notice or _notice)(how)
    out["ROUGE_L"] = rouge_l(r, h)
    out["CIDEr"] = cider_d(r, h)
    return out

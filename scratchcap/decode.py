"""Greedy decoding and batched beam search, for any model in scratchcap.models.

Both return, per image, a dict: words (list of str), logprob (float), and for
attention models alphas (len(words) + 1, L): the attention of every emitted
word, and of the <end> that closed the caption; a model with a visual sentinel
adds sentinel (len(words) + 1,), its weight beta at each word (the regions'
alphas then sum to 1 - beta). Beam search adds beams: every
finished or live hypothesis of the last step, best first, as {words, logprob}.

Neither emits <unk> unless ``allow_unk=True``: its log-probability is set to
-inf before the choice, so the next best word takes its place. Users never want
to read the unknown token; the flag is there for analysis.

Neither ever emits <pad> or <start>: they are not words, and a caption that held
them would print as a fragment ("a boy is playing on a"), since they are dropped
from the text. A cross-entropy model gives them ~1e-7, but a model trained on its
own samples can give them much more (scratchcap.scst: they must be sampled to be
pushed down).
"""
from __future__ import annotations

import numpy as np

from . import threads
from .backend import get_array_module, to_numpy

# With n pool threads and at least this many rows of decoder state for each (images times the rows that each image
# decodes: 1 for greedy, the beam width, the samples per image), every thread decodes its own consecutive images
# from start to end, each operator unsplit, instead of every operator being split over the n threads: a step's
# operators are small enough that handing each to a thread costs more than a thread's share of it, and the
# search's bookkeeping runs in parallel too. On the 2-core Xeon, beam 3 over 64 images took 470 ms this way
# against 541 ms split by operator (848 on one thread), over 16 images (24 rows a thread) 150 against 166, with
# the same captions and log-probabilities. Fewer rows per thread leave each GEMM too few rows to run well: on a
# 2-core Zen 4, greedy over 16 images (8 rows a thread) took 106 ms this way against 96 split by operator.
ROWS_PER_THREAD = 24


def image_groups(features, rows_per_image=1):
    """Consecutive slices of the images, one per pool thread; None where the operators should be split instead
    (one thread, CuPy, inside the pool already, or under ROWS_PER_THREAD rows of state for each thread, an image
    decoding ``rows_per_image`` of them)."""
    n = threads.count()
    if n < 2 or threads.in_pool() or not isinstance(features, np.ndarray) \
            or features.shape[0] * rows_per_image < n * ROWS_PER_THREAD:
        return None
    return threads.split(features.shape[0])


def decoded_by_groups(decode_images, features, groups):
    """decode_images(features[g]) for each group g on its own pool thread, the results in the images' order.
    An image's search reads only its own features, so the captions are those of one call on all the images
    (tests/test_decode_caption.py), up to the float rounding that a GEMM's row count may change."""
    parts = threads.map_pieces(lambda g: decode_images(features[g]), groups)
    return [result for part in parts for result in part]


def _take(state, index):
    if state is None:
        return None
    if isinstance(state, tuple):
        return tuple(_take(s, index) for s in state)
    return state[index]


def repeat_rows(tree, k):
    """Every array in a (nested tuple of) array(s), each row repeated k times (row n -> rows n*k .. n*k+k-1)."""
    if tree is None:
        return None
    if isinstance(tree, tuple):
        return tuple(repeat_rows(t, k) for t in tree)
    return get_array_module(tree).repeat(tree, k, axis=0)


def expand_encoding(model, enc, k):
    """decode_start's encoding for k rows of state per image (rows n·k .. n·k + k - 1 are image n's).

    A model whose decode_step asks k queries of one copy of each image (``ops.attend_forward`` takes
    (N·k, H) queries) says so with its own ``expand_encoding`` and keeps the encoding as it is; for the
    others every array is repeated k times."""
    own = getattr(model, "expand_encoding", None)
    return own(enc, k) if own is not None else repeat_rows(enc, k)


def top_k(total, k):
    """Indices of the k largest entries of each row of ``total`` (n, m), best first, ties to the lower index.

    The same as ``np.argsort(-total, axis=1, kind="stable")[:, :k]`` without sorting whole rows
    (a beam's row holds k * V scores): k passes of argmax, each taking the first of the row's
    largest values and striking it out (to -inf). A row where a pass finds -inf (fewer than k
    scores above it: argmax could take a struck-out entry again) or NaN (which argmax takes
    first and the sort puts last) is sorted whole instead.
    """
    n, m = total.shape
    if k >= m:
        return np.argsort(-total, axis=1, kind="stable")
    rows = np.arange(n)
    left = total.copy()
    out = np.empty((n, k), dtype=np.intp)
    sort_whole = np.zeros(n, dtype=bool)
    for j in range(k):
        out[:, j] = left.argmax(axis=1)
        sort_whole |= ~(left[rows, out[:, j]] > -np.inf)  # -inf or NaN
        left[rows, out[:, j]] = -np.inf
    if sort_whole.any():
        out[sort_whole] = np.argsort(-total[sort_whole], axis=1, kind="stable")[:, :k]
    return out


def _result(vocab, ids, logprob, alphas, sentinel=False):
    """``sentinel``: the model's attention has one more column, its visual sentinel's weight beta, reported
    apart as "sentinel" (len(words) + 1,) so that "alphas" holds the regions alone."""
    words = vocab.decode(ids)
    out = dict(words=words, logprob=float(logprob))
    if alphas is not None:
        alphas = np.asarray(alphas[: len(words) + 1])
        if sentinel:
            alphas, out["sentinel"] = alphas[:, :-1], alphas[:, -1]
        out["alphas"] = alphas
    return out


def has_sentinel(model):
    """Whether decode_step's attention ends with a sentinel's weight (models.lstm_adaptive)."""
    return bool(getattr(model, "SENTINEL", False))


def _non_words(vocab, allow_unk):
    """The tokens decoding never emits: <pad>, <start> and, unless allowed, <unk>."""
    return (vocab.pad, vocab.start) if allow_unk else (vocab.pad, vocab.start, vocab.unk)


def _mask_tokens(logp, vocab, allow_unk):
    """logp (N, V) with _non_words at -inf; a copy, so the model's output is left as it was."""
    logp = logp.copy()
    for token in _non_words(vocab, allow_unk):
        logp[:, token] = float("-inf")  # a Python float: CuPy takes no NumPy scalars
    return logp


# Words a caption should not end on (the list of Luo's self-critical.pytorch, --remove_bad_endings), against
# models trained on CIDEr that learn to stop after "a" or "on". On our released models it changed nothing
# (docs/results.md), so it is off by default.
BAD_ENDINGS = ("a", "an", "the", "in", "for", "at", "of", "with", "before", "after", "on", "upon", "near", "to", "is",
               "are", "am")


def bad_ending_ids(vocab):
    return np.array([vocab.index[w] for w in BAD_ENDINGS if w in vocab.index], dtype=np.int64)


def greedy(model, params, features, cfg, vocab, max_length=20, allow_unk=False, block_bad_endings=False):
    """The argmax word at every step (no sampling), until <end> or max_length.

    ``block_bad_endings``: no <end> right after one of BAD_ENDINGS."""
    groups = image_groups(features)
    if groups is not None:
        return decoded_by_groups(lambda f: greedy(model, params, f, cfg, vocab, max_length, allow_unk,
                                                   block_bad_endings), features, groups)
    xp = get_array_module(features)
    enc, state = model.decode_start(params, features, cfg)
    N = features.shape[0]
    words = xp.full((N,), vocab.start, dtype=xp.int64)
    ids = np.zeros((N, max_length), dtype=np.int64)
    logprob = np.zeros(N)
    alphas = []
    done = np.zeros(N, dtype=bool)
    bad = bad_ending_ids(vocab) if block_bad_endings else None
    for t in range(max_length):
        logp, state, alpha = model.decode_step(params, enc, state, words)
        logp = _mask_tokens(logp, vocab, allow_unk)
        if bad is not None and t > 0:
            rows = np.nonzero(np.isin(ids[:, t - 1], bad))[0]
            if rows.size:
                logp[xp.asarray(rows), vocab.end] = float("-inf")  # logp is _mask_tokens's copy
        words = logp.argmax(axis=1)
        w = to_numpy(words)
        logprob += np.where(done, 0.0, to_numpy(logp[xp.arange(N), words]))
        ids[:, t] = w
        if alpha is not None:
            alphas.append(to_numpy(alpha))
        done |= w == vocab.end
        if done.all():
            break
    stacked = np.stack(alphas, axis=1) if alphas else None
    sentinel = has_sentinel(model)
    return [_result(vocab, ids[n], logprob[n], None if stacked is None else stacked[n], sentinel) for n in range(N)]


def _block_repeated_trigrams(total, history):
    """total (N, k, V), each continuation's score or log-probability: -inf for every word that would make a beam repeat one of its own
    trigrams.

    history (N, k, t): beam (n, b) ends in words (x, y); wherever x, y stood earlier, followed by z,
    the word z is blocked now (Paulus et al. 2018's trigram blocking, against "a dog and a dog and").
    """
    t = history.shape[2]
    if t < 3:
        return
    x, y = history[:, :, t - 2:t - 1], history[:, :, t - 1:t]
    n, b, i = np.nonzero((history[:, :, :t - 2] == x) & (history[:, :, 1:t - 1] == y))
    total[n, b, history[n, b, i + 2]] = -np.inf


def length_penalty(lengths, alpha):
    """GNMT's lp(Y) = ((5 + |Y|) / 6) ** alpha (Wu et al. 2016); beams are ranked by logprob / lp."""
    return ((5.0 + lengths) / 6.0) ** alpha


def _best_continuations(lp, scores, finished, k, pad):
    """The k best continuations of each image's beams: (their scores (N, k'), parent beam (N, k'), word (N, k')).

    lp (N, width, V): each live beam's next-word log-probabilities, with what may not follow at -inf (written
    into: a copy of the model's output). scores (N, width) float64; a finished beam continues only with
    <pad>, at its own score. Only a beam's own k best words can be among its image's k best continuations, so
    each live beam's k best are found in its row (k passes of argmax) and only those k·width are added to the
    scores in float64 and ranked; the result is that of ranking all width·V (ties to the lower beam, then word).
    """
    N, width, V = lp.shape
    kk = min(k, V)
    rows = lp.reshape(N * width, V)
    live = ~finished.reshape(-1)
    cand = np.full((N * width, kk), pad, dtype=np.intp)
    cand_lp = np.full((N * width, kk), -np.inf, dtype=np.float64)
    cand_lp[~live, 0] = 0.0  # <pad> keeps a finished beam's score
    if live.any():
        live_rows = rows[live] if not live.all() else rows
        best = top_k(live_rows, kk)
        cand[live] = best
        cand_lp[live] = np.take_along_axis(live_rows, best, axis=1)
    total = np.add(scores[:, :, None], cand_lp.reshape(N, width, kk)).reshape(N, width * kk)
    order = top_k(total, k)
    src = order // kk
    word = cand.reshape(N, width * kk)[np.arange(N)[:, None], order]
    return np.take_along_axis(total, order, axis=1), src, word


def _follow_parents(steps, N, k):
    """Each final beam's own row of every step. steps[t] = (images (n_t,): which of the N images were still
    searched at step t, rows (n_t, width_t, ...) as the step's rows produced them, parents (n_t, k): the row
    each beam chosen at step t came from). An image leaves the search when all its beams have finished, so
    its beams are final from then on. -> (N, k, T, ...), zeros after an image left."""
    out = np.zeros((N, k, len(steps)) + steps[0][1].shape[2:], dtype=steps[0][1].dtype)
    beam = np.broadcast_to(np.arange(k), (N, k)).copy()
    for t in range(len(steps) - 1, -1, -1):
        images, rows, parents = steps[t]
        beam[images] = np.take_along_axis(parents, beam[images], axis=1)
        out[images, :, t] = rows[np.arange(len(images))[:, None], beam[images]]
    return out


def beam_search(model, params, features, cfg, vocab, beam=3, max_length=20, length_norm=False, allow_unk=False,
                length_penalty_alpha=0.0, block_trigrams=False, block_bad_endings=False):
    """Beam search over all images at once; with beam=1 it is exactly greedy().

    ``length_penalty_alpha`` > 0 ranks the finished beams by logprob / lp (GNMT); ``block_trigrams`` forbids
    a word that would repeat a trigram of the beam's own caption; ``block_bad_endings`` forbids <end> after one
    of BAD_ENDINGS.
    """
    if beam < 1 or max_length < 1:
        raise ValueError(f"beam search needs beam >= 1 and max_length >= 1, got beam={beam}, max_length={max_length}")
    groups = image_groups(features, beam)
    if groups is not None:
        return decoded_by_groups(lambda f: beam_search(model, params, f, cfg, vocab, beam, max_length, length_norm,
                                                        allow_unk, length_penalty_alpha, block_trigrams,
                                                        block_bad_endings), features, groups)
    xp = get_array_module(features)
    N, k = features.shape[0], beam
    if N == 0:
        return []
    enc_images, state = model.decode_start(params, features, cfg)
    # The first word has one live beam per image (every beam would start from <start>), so it is computed once
    # per image; from then on there are k rows of state per image, and the encoding is expanded for them. An
    # image whose beams have all finished leaves the search (on Flickr8k about a third of the steps' rows).
    enc = enc_images
    images = np.arange(N)  # the images still searched, as rows of the batch
    words = xp.full((N,), vocab.start, dtype=xp.int64)
    scores = np.zeros((N, 1))
    finished = np.zeros((N, 1), dtype=bool)
    lengths = np.zeros((N, 1), dtype=np.int64)
    history = np.zeros((N, 1, 0), dtype=np.int64)
    done = {}  # image -> (scores, lengths, history) of its beams, once it left the search
    steps = []  # (images, attention by row, each new beam's parent row): each final beam's is followed at the end
    bad = bad_ending_ids(vocab) if block_bad_endings else None
    for t in range(max_length):
        logp, state, alpha = model.decode_step(params, enc, state, words)
        n, width = scores.shape  # images searched, and live rows per image: 1 at the first word, then k
        lp = np.array(to_numpy(logp)).reshape(n, width, -1)  # a copy: what may not follow is struck out of it
        for token in _non_words(vocab, allow_unk):
            lp[:, :, token] = -np.inf
        if block_trigrams:
            _block_repeated_trigrams(lp, history)
        if bad is not None and t > 0:
            lp[np.isin(history[:, :, -1], bad), vocab.end] = -np.inf
        scores, src, word = _best_continuations(lp, scores, finished, k, vocab.pad)
        rows = np.arange(n)[:, None] * width + src
        prev_finished = np.take_along_axis(finished, src, axis=1)
        history = np.concatenate([np.take_along_axis(history, src[:, :, None], axis=1), word[:, :, None]], axis=2)
        lengths = np.take_along_axis(lengths, src, axis=1) + ~prev_finished
        finished = prev_finished | (word == vocab.end)
        if alpha is not None:
            steps.append((images, to_numpy(alpha).reshape(n, width, -1), src))
        over = finished.all(axis=1)
        if over.all() or t == max_length - 1:
            over[:] = True
        elif 8 * over.sum() < n:  # too few to be worth re-expanding the encoding: they wait, carried at their scores
            over[:] = False
        for i in np.nonzero(over)[0]:
            done[images[i]] = scores[i], lengths[i], history[i]
        if over.all():
            break
        stay = ~over
        if not stay.all():
            images, scores, finished, lengths, history = (a[stay] for a in (images, scores, finished, lengths, history))
            rows, word = rows[stay], word[stay]
            enc_images = _take(enc_images, xp.asarray(np.nonzero(stay)[0]))
        state = _take(state, xp.asarray(rows.reshape(-1)))
        words = xp.asarray(word.reshape(-1))
        if t == 0 or not stay.all():
            enc = expand_encoding(model, enc_images, scores.shape[1])  # k, or fewer where the vocabulary is smaller
    scores, lengths = (np.stack([done[i][j] for i in range(N)]) for j in (0, 1))
    att_history = _follow_parents(steps, N, scores.shape[1]) if steps else None  # k, or fewer (a tiny vocabulary)
    final = scores / np.maximum(lengths, 1) if length_norm else scores
    if length_penalty_alpha:
        final = final / length_penalty(lengths, length_penalty_alpha)
    results = []
    for n in range(N):
        ranked = [b for b in np.argsort(-final[n], kind="stable") if np.isfinite(scores[n, b])]
        b = ranked[0] if ranked else 0
        att = None if att_history is None else att_history[n, b]
        history = done[n][2]
        res = _result(vocab, history[b], scores[n, b], att, has_sentinel(model))
        res["beams"] = [dict(words=vocab.decode(history[r]), logprob=float(scores[n, r]),
                             score=float(final[n, r])) for r in ranked]  # score: what ranked them
        results.append(res)
    return results


def decode(model, params, features, cfg, vocab, beam=1, max_length=20, length_norm=False, batch_size=64,
           allow_unk=False, length_penalty_alpha=0.0, block_trigrams=False, block_bad_endings=False):
    """Captions for many images, in batches; beam=1 is greedy. <unk> is never emitted unless allow_unk.

    The length penalty and trigram blocking apply to beam search (beam > 1)."""
    out = []
    for s in range(0, features.shape[0], batch_size):
        f = features[s:s + batch_size]
        if beam == 1:
            out += greedy(model, params, f, cfg, vocab, max_length, allow_unk, block_bad_endings)
        else:
            out += beam_search(model, params, f, cfg, vocab, beam, max_length, length_norm, allow_unk,
                               length_penalty_alpha, block_trigrams, block_bad_endings)
    return out


# Measured on the Flickr8k dev split with the released model (docs/results.md): at beam 3, trigram blocking and
# a length penalty of 0.6 together raise CIDEr from 0.461 to 0.478 and cut the captions that repeat a word pair
# from 10.4% to 8.4%, so the commands use both unless told otherwise; the functions above default to neither.
DEFAULT_LENGTH_PENALTY = 0.6
DEFAULT_BLOCK_TRIGRAMS = True
DEFAULT_BLOCK_BAD_ENDINGS = False


def add_decoding_arguments(parser):
    """--length-penalty and --block-trigrams / --no-block-trigrams, with the measured defaults."""
    import argparse

    parser.add_argument("--length-penalty", type=float, default=DEFAULT_LENGTH_PENALTY, metavar="ALPHA",
                        help="beam search ranks by logprob / ((5 + length) / 6) ** ALPHA (GNMT; default "
                             f"{DEFAULT_LENGTH_PENALTY}; 0: off)")
    parser.add_argument("--block-trigrams", action=argparse.BooleanOptionalAction, default=DEFAULT_BLOCK_TRIGRAMS,
                        help="forbid a beam to repeat one of its own trigrams (default: on)")
    parser.add_argument("--block-bad-endings", action=argparse.BooleanOptionalAction,
                        default=DEFAULT_BLOCK_BAD_ENDINGS,
                        help="forbid a caption to end on " + ", ".join(BAD_ENDINGS[:4]) + ", ... (default: "
                             f"{'on' if DEFAULT_BLOCK_BAD_ENDINGS else 'off'})")
    return parser

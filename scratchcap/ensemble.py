"""Several trained decoders of one vocabulary, decoded as one model.

Notation: M members, each with its own parameters and config (feature scale, sizes), over the same
vocabulary V and the same VGG-16 feature layer and image size.

    "prob"    log p(w | ...) = log (1/M sum_m p_m(w | ...))        the mean of the probabilities
    "logprob" log p(w | ...) = log_softmax(1/M sum_m log p_m(w | ...))   the renormalised geometric mean

An Ensemble has the decode_start / decode_step pair of the models in scratchcap.models, so
greedy() and beam_search() run it unchanged: its encoder output and state are the tuples of the
members', which the beam's row selection walks like any nested state. The attention it reports
is the first member's.
"""
from __future__ import annotations

import numpy as np

from .backend import get_array_module, to_device
from .checkpoint import CheckpointError
from .decode import expand_encoding
from .ops.softmax import log_softmax

COMBINE = ("prob", "logprob")

# Features must mean the same to every member: one cache, one VGG-16 pass (a fine-tuned member's is its
# block's input).
FEATURE_KEYS = ("layer", "image_size")


def check_members(ckpts, names):
    """A CheckpointError naming the members whose vocabulary or features differ from the first's."""
    first, first_name = ckpts[0], names[0]
    for ckpt, name in zip(ckpts[1:], names[1:]):
        if ckpt["vocabulary"] != first["vocabulary"]:
            from .data import Vocabulary
            a, b = Vocabulary.from_json(first["vocabulary"]), Vocabulary.from_json(ckpt["vocabulary"])
            raise CheckpointError(f"an ensemble needs one vocabulary: {name} has {len(b)} words "
                                  f"({b.fingerprint()[:12]}), {first_name} has {len(a)} ({a.fingerprint()[:12]})")
        for key in FEATURE_KEYS:
            mine, theirs = (_feature_key(c["config"], key) for c in (ckpt, first))
            if mine != theirs:
                raise CheckpointError(f"an ensemble needs one kind of features: {name} has {key} "
                                      f"{mine}, {first_name} has {theirs}")


def _feature_key(cfg, key):
    from .models.fine_tune import feature_layer
    return feature_layer(cfg) if key == "layer" else cfg.get(key)


class Ensemble:
    """members: [(model module, params, cfg)]; decode_start and decode_step ignore their own params and cfg."""

    def __init__(self, members, combine="prob"):
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if combine not in COMBINE:
            raise ValueError(f"unknown ensemble average {combine!r}; one of {', '.join(COMBINE)}")
        self.members, self.combine = list(members), combine
        self.NAME = "ensemble of " + ", ".join(m.NAME for m, _, _ in self.members)
        self.SENTINEL = getattr(self.members[0][0], "SENTINEL", False)  # the attention reported is the first's

    def decode_start(self, params, features, cfg):
        starts = [model.decode_start(p, features, c) for model, p, c in self.members]
        return tuple(s[0] for s in starts), tuple(s[1] for s in starts)

    def expand_encoding(self, enc, k):
        return tuple(expand_encoding(model, e, k) for (model, _, _), e in zip(self.members, enc))

    def decode_step(self, params, enc, state, words):
        outs = [model.decode_step(p, e, s, words) for (model, p, _), e, s in zip(self.members, enc, state)]
        logps = [o[0] for o in outs]
        xp = get_array_module(logps[0])
        M = logps[0].dtype.type(len(logps))
        if self.combine == "prob":
            top = logps[0]
            for lp in logps[1:]:
                top = xp.maximum(top, lp)
            total = sum(xp.exp(lp - top) for lp in logps)
            logp = top + xp.log(total / M)
        else:
            logp = log_softmax(sum(logps) / M, axis=-1)
        return logp, tuple(o[1] for o in outs), outs[0][2]


def decoder(ckpts, device="cpu", combine="prob", names=None):
    """(model, params) that decode() takes: one checkpoint's model and float32 parameters, or an Ensemble of
    several (checked by check_members; ``names`` name them in its errors) with params None."""
    from .models import model_for

    ckpts = list(ckpts)
    if len(ckpts) > 1:
        check_members(ckpts, names or [f"checkpoint {k + 1}" for k in range(len(ckpts))])
    members = [(model_for(c["model"], c["config"]), to_device({k: v.astype(np.float32) for k, v in c["params"].items()}, device),
                c["config"]) for c in ckpts]
    if len(members) == 1:
        return members[0][0], members[0][1]
    return Ensemble(members, combine), None


def add_ensemble_argument(parser):
    parser.add_argument("--ensemble-average", choices=COMBINE, default="prob",
                        help="with several --checkpoint: average the members' probabilities (prob) or their "
                             "log-probabilities (logprob) at every step (default prob)")
    return parser

"""Self-critical sequence training (Rennie et al. 2017): the model's own samples, rewarded by CIDEr-D.

    sampling.py   k captions per image from the model's distribution (seeded, batched, NumPy or CuPy)
    reward.py     CIDEr-D against the training references, <end> counted as a word
    objective.py  baselines, advantages, and the advantage-weighted cross-entropy's gradient

The training loop (scratchcap.train --objective scst) calls scst_loss_and_grads where a
cross-entropy run calls the model's loss_and_grads: same optimizer, checkpoints and allreduce.
"""
from .objective import BASELINES, advantages, scst_loss_and_grads
from .reward import CiderReward, sample_words
from .sampling import sample_captions

__all__ = ["BASELINES", "CiderReward", "advantages", "sample_captions", "sample_words", "scst_loss_and_grads"]

"""Caption text normalization, as the ICapNet paper describes it.

normalize("A dog, running!  On the 2nd beach.") == ["a", "dog", "running", "on", "the", "beach"]

Lowercase; split on anything that is not a letter or an apostrophe; drop tokens
that are not purely alphabetic (numbers, "2nd", stray punctuation). The same
function prepares references and hypotheses for the metrics.
"""
from __future__ import annotations

import re

_SPLIT = re.compile(r"[^a-z']+")


def normalize(caption: str, max_length: int | None = None) -> list:
    """Tokens of a caption; optionally only its first ``max_length`` tokens."""
    tokens = [t.strip("'") for t in _SPLIT.split(caption.lower())]
    tokens = [t for t in tokens if t.isalpha() and t.isascii()]
    return tokens[:max_length] if max_length is not None else tokens


def normalized_text(caption: str) -> str:
    return " ".join(normalize(caption))

"""Caption text normalization, as the ICapNet paper describes it.

normalize("A dog, running!  On the 2nd beach.") == ["a", "dog", "running", "on", "the", "beach"]

Lowercase; turn punctuation other than apostrophes into spaces; split; drop tokens
that are not alphabetic (numbers, "2nd", stray punctuation). An apostrophe
inside a word stays ("old's"), as in Keras's tokenizer. The same
function prepares references and hypotheses for the metrics.
"""
from __future__ import annotations

import re

_PUNCT = re.compile(r"[^a-z0-9'\s]+")


def normalize(caption: str, max_length: int | None = None) -> list:
    """Tokens of a caption; optionally only its first ``max_length`` tokens."""
    tokens = [t.strip("'") for t in _PUNCT.sub(" ", caption.lower()).split()]
    tokens = [t for t in tokens if t.replace("'", "").isalpha() and t.isascii()]
    return tokens[:max_length] if max_length is not None else tokens


def normalized_text(caption: str) -> str:
    return " ".join(normalize(caption))

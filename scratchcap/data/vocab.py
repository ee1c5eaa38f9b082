"""The vocabulary: word <-> id, built from the training split only.

Ids 0..3 are the special tokens <pad>, <start>, <end>, <unk>; words follow by
descending count, then alphabetically, so a vocabulary is the same on every run.
It is saved as JSON and travels inside every checkpoint; its fingerprint
(sha256 of the word list) tells whether two vocabularies are the same.
"""
from __future__ import annotations

import collections
import hashlib
import json

from ..atomic import atomic_path

PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIALS = (PAD, START, END, UNK)


class VocabularyError(ValueError):
    pass


class Vocabulary:
    def __init__(self, words):
        words = list(words)
        if tuple(words[:4]) != SPECIALS:
            raise VocabularyError(f"a vocabulary must start with {SPECIALS}, got {words[:4]}")
        if len(set(words)) != len(words):
            raise VocabularyError("a vocabulary lists a word twice")
        self.words = words
        self.index = {w: i for i, w in enumerate(words)}
        self.pad, self.start, self.end, self.unk = range(4)

    @classmethod
    def build(cls, token_lists, min_count: int = 5, top_k: int | None = None):
        """From tokenized training captions: words seen at least min_count times, or the top_k most common."""
        counts = collections.Counter(t for tokens in token_lists for t in tokens)
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        if top_k is not None:
            ranked = ranked[:top_k]
        else:
            ranked = [kv for kv in ranked if kv[1] >= min_count]
        return cls(list(SPECIALS) + [w for w, _ in ranked if w not in SPECIALS])

    def __len__(self):
        return len(self.words)

    def __eq__(self, other):
        return isinstance(other, Vocabulary) and self.words == other.words

    def encode(self, tokens, max_length: int | None = None) -> list:
        """[<start>, ids..., <end>]; unknown words become <unk>; at most max_length words."""
        tokens = list(tokens)[:max_length] if max_length is not None else list(tokens)
        return [self.start] + [self.index.get(t, self.unk) for t in tokens] + [self.end]

    def decode(self, ids) -> list:
        """Words up to the first <end>, without <start> and <pad>."""
        out = []
        for i in ids:
            i = int(i)
            if i == self.end:
                break
            if i in (self.pad, self.start):
                continue
            out.append(self.words[i] if 0 <= i < len(self.words) else UNK)
        return out

    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.words).encode()).hexdigest()

    def to_json(self) -> str:
        return json.dumps({"format": "scratchcap-vocabulary", "words": self.words})

    @classmethod
    def from_json(cls, text: str):
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise VocabularyError(f"vocabulary is not valid JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("format") != "scratchcap-vocabulary":
            raise VocabularyError("not a scratchcap vocabulary")
        return cls(data["words"])

    def save(self, path):
        with atomic_path(path) as tmp, open(tmp, "w") as f:
            f.write(self.to_json())

    @classmethod
    def load(cls, path):
        with open(path) as f:
            return cls.from_json(f.read())

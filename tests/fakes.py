"""Deterministic fakes injected through fixtures, so most tests need neither the model nor a network."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

_WORD = re.compile(r"[a-z0-9]+")


class FakeEmbedder:
    """Hashed bag of words: texts that share words are close, with no model to load.

    It has the interface of index.embed.Embedder and counts each encoded text, so tests can
    check that cached embeddings are not computed again.
    """

    name = "fake-bow"
    dim = 64
    max_tokens = 128
    special_tokens = 2

    def __init__(self) -> None:
        self.encoded = 0

    def encode(self, texts: list[str], *, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        # The ids a real model would read in place of the texts must come one per text; the bag is of the texts.
        assert token_ids is None or len(token_ids) == len(texts)
        self.encoded += len(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in _WORD.findall(text.lower()):
                bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
                out[row, bucket % self.dim] += 1.0
            norm = np.linalg.norm(out[row])
            if norm:
                out[row] /= norm
            else:
                out[row, 0] = 1.0
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """A token per word (split at spaces), numbered by hashing it."""
        return [[int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little") for word in text.split()]
                for text in texts]


class FakeClock:
    """A clock that stands still until the test moves `now`, for limits and throttles that read time."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

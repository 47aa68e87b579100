"""Near-duplicate detection for syndicated stories: MinHash over word shingles, with LSH bands.

The same wire story reprinted by several outlets differs in a headline, a byline or a trailing
paragraph. Word 5-shingles see through that; MinHash estimates their Jaccard similarity in
constant space, and banding turns "find similar" into a few indexed lookups.
"""

from __future__ import annotations

import hashlib
import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

_WORD = re.compile(r"\w+", re.UNICODE)
_PRIME = np.uint64((1 << 61) - 1)
_MASK32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class Fingerprint:
    """A MinHash signature and the LSH band keys derived from it."""

    signature: np.ndarray  # uint64[num_perm]
    bands: tuple[int, ...]

    def similarity(self, other: np.ndarray) -> float:
        return float(np.mean(self.signature == other))

    def best_match(self, candidates: Iterable[tuple[str, np.ndarray]], threshold: float) -> str | None:
        """The id of the candidate whose signature is most like this one, if it reaches `threshold`
        (of equals, the last)."""
        best, best_score = None, threshold
        for candidate_id, signature in candidates:
            score = self.similarity(signature)
            if score >= best_score:
                best, best_score = candidate_id, score
        return best


class MinHasher:
    """Computes fingerprints; the same seed always gives the same permutations."""

    def __init__(self, *, num_perm: int = 64, bands: int = 16, shingle: int = 5, seed: int = 7):
        if num_perm % bands:
            raise ValueError("num_perm must be a multiple of bands")
        if shingle < 1:
            raise ValueError("shingle must be at least 1")
        rng = np.random.default_rng(seed)
        self.a = rng.integers(1, int(_PRIME), size=num_perm, dtype=np.uint64)
        self.b = rng.integers(0, int(_PRIME), size=num_perm, dtype=np.uint64)
        self.num_perm, self.bands, self.shingle = num_perm, bands, shingle

    def run(self, text: str) -> Fingerprint:
        words = _WORD.findall(text.lower())
        n = self.shingle if len(words) >= self.shingle else max(len(words), 1)
        shingles = {" ".join(words[i : i + n]) for i in range(max(len(words) - n + 1, 1))}
        hashes = np.array([_hash32(s) for s in shingles], dtype=np.uint64)
        # (a*x + b) mod p on 32-bit inputs: a*x fits in 64 bits only if a < 2^32, so mix halves.
        x = hashes[:, None]
        products = ((self.a[None, :] & _MASK32) * x + self.b[None, :]) % _PRIME
        signature = products.min(axis=0)
        rows = self.num_perm // self.bands
        bands = tuple(
            _band_key(i, signature[i * rows : (i + 1) * rows]) for i in range(self.bands)
        )
        return Fingerprint(signature=signature, bands=bands)


def _hash32(text: str) -> int:
    return zlib.crc32(text.encode("utf-8"))


def _band_key(band: int, rows: np.ndarray) -> int:
    # Stable across processes (unlike hash()), and a signed 64-bit value SQLite can store.
    digest = hashlib.blake2b(rows.tobytes(), digest_size=8, person=band.to_bytes(2, "little")).digest()
    return int.from_bytes(digest, "little") & 0x7FFFFFFFFFFFFFFF

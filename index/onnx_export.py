"""ONNX files of a sentence-transformers model, exported on first use and kept with a checksum.

The export runs offline from the model folder (torch.onnx with the packaged weights: nothing is
downloaded) into a cache folder. A file counts only once its manifest, written after it, records
its SHA-256 and the file still has that digest: an export that was killed or failed halfway is
redone on the next start, never used. A lock file keeps two processes from exporting at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import sys
import tempfile
import warnings
from pathlib import Path

log = logging.getLogger(__name__)

# Part of the cache folder's name: a change to how the graph is exported or quantized gets new files.
EXPORT_FORMAT = 1
FP32_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
OPSET = 18


class ExportError(RuntimeError):
    """The model could not be exported to ONNX."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exported_model(model_dir: Path, source_digest: str, *, quantized: bool, cache_dir: Path) -> Path:
    """The checked ONNX file for the model in `model_dir` (int8 when `quantized`), exported if need be.

    `source_digest` names the weights it comes from, so a changed model never meets an old export."""
    folder = cache_dir / f"{model_dir.name}-{source_digest[:16]}-v{EXPORT_FORMAT}"
    wanted = folder / (INT8_FILE if quantized else FP32_FILE)
    if _is_complete(wanted):  # a finished export never changes: no lock needed (nor a writable folder)
        return wanted
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock = (folder / ".lock").open("a")
    except OSError as exc:
        raise ExportError(f"the ONNX export is missing or damaged in {folder}, and it cannot be made there "
                          f"({exc.strerror}): set NEWSDESK_MODEL_CACHE to a writable folder") from None
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one exporter at a time; released when the file closes
        for debris in folder.glob("*.partial"):  # left by an export that was killed; none runs now
            debris.unlink(missing_ok=True)
        fp32 = folder / FP32_FILE
        if not _is_complete(fp32):
            _commit(fp32, lambda partial: _export(model_dir, partial), what="exporting the embedding model to ONNX")
        if quantized and not _is_complete(wanted):
            _commit(wanted, lambda partial: _quantize(fp32, partial), what="quantizing the ONNX model to int8")
    return wanted


def _manifest(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def _is_complete(path: Path) -> bool:
    try:
        recorded = json.loads(_manifest(path).read_text())["sha256"]
        return path.is_file() and file_sha256(path) == recorded
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _commit(path: Path, write, *, what: str) -> None:
    """Writes `path` through `write(partial_path)`, then records its digest: the manifest comes last."""
    print(f"newsdesk: {what} (once; kept in {path.parent})…", file=sys.stderr, flush=True)
    _manifest(path).unlink(missing_ok=True)
    try:
        _replace(path, write)
    except Exception as exc:
        raise ExportError(f"{what} failed: {exc}") from exc
    record = {"sha256": file_sha256(path), "bytes": path.stat().st_size}
    _replace(_manifest(path), lambda partial: partial.write_text(json.dumps(record)))


def _replace(path: Path, write) -> None:
    """`write(partial_path)`, then the file synced and renamed to `path`: never a half-written `path`."""
    handle, partial = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".partial")
    os.close(handle)
    try:
        write(Path(partial))
        with open(partial, "rb") as written:
            os.fsync(written.fileno())
        os.chmod(partial, 0o644)  # readable by the other users a shared cache serves (the Docker image's)
        os.replace(partial, path)
    finally:
        Path(partial).unlink(missing_ok=True)


def _export(model_dir: Path, target: Path) -> None:
    import torch
    from transformers import AutoModel

    class MeanPooled(torch.nn.Module):
        """The transformer, mean pooling over real tokens, and L2 normalisation: one vector per text."""

        def __init__(self, encoder: torch.nn.Module) -> None:
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask, token_type_ids):
            states = self.encoder(input_ids=input_ids, attention_mask=attention_mask,
                                  token_type_ids=token_type_ids).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(states.dtype)
            pooled = (states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, dim=1)

    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()  # the progress line above says what is happening
    encoder = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()
    # Three distinct tensors: the exporter would take one tensor passed twice for one input.
    input_ids = torch.ones((2, 16), dtype=torch.long)
    batch, length = torch.export.Dim("batch"), torch.export.Dim("length", max=4096)
    axes = {0: batch, 1: length}
    with _quiet(), torch.no_grad():
        torch.onnx.export(
            MeanPooled(encoder), (input_ids, torch.ones_like(input_ids), torch.zeros_like(input_ids)), str(target),
            input_names=["input_ids", "attention_mask", "token_type_ids"], output_names=["sentence_embedding"],
            dynamic_shapes=(axes, axes, axes), opset_version=OPSET, dynamo=True, external_data=False,
            verbose=False,
        )


def _quantize(fp32: Path, target: Path) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # Per-channel int8 weights: per-tensor scales lose too much (cosine to torch down to .92).
    with _quiet():
        quantize_dynamic(str(fp32), str(target), weight_type=QuantType.QInt8, per_channel=True)


@contextlib.contextmanager
def _quiet():
    """The exporter's and quantizer's notes are about their own internals, nothing a user can act on;
    and the exporter reports its steps on standard output, which `--json` keeps for its one object."""
    loggers = [logging.getLogger(), logging.getLogger("torch.onnx")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with contextlib.redirect_stdout(sys.stderr), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)

"""The persistent bench index: the Reuters + BBC corpus, ingested once and reused by later runs.

The first run embeds every chunk (about 30k; some twenty minutes on two cores); a marker file in
the bench folder records which corpus files went in and that first ingest's report, so later runs
skip straight to measuring. When the corpus files or the settings that shape the index (chunk
size, overlap, de-duplication threshold, model) change, the bench builds it again from scratch.
"""

from __future__ import annotations

import json
from pathlib import Path

from bench.common import Progress, write_json

MARKER = "bench-corpus.json"


def fingerprint(corpus: list[Path]) -> list[dict]:
    return [{"path": str(Path(p).resolve()), "bytes": Path(p).stat().st_size} for p in corpus]


def index_settings(config) -> dict:
    """The settings that decide what the index holds: a change means building it again."""
    idx = config.index
    return {"model": idx.model, "chunk_tokens": idx.chunk_tokens, "chunk_overlap_sentences": idx.chunk_overlap_sentences,
            "near_duplicate_threshold": idx.near_duplicate_threshold}


def stale(store_dir: Path, corpus: list[Path], config) -> str | None:
    """Why the bench index in `store_dir` must be built again, or None if it holds `corpus` as configured."""
    marker = Path(store_dir) / MARKER
    if not marker.exists():
        return None
    recorded = json.loads(marker.read_text(encoding="utf-8"))
    if recorded.get("corpus") != fingerprint(corpus):
        return "other corpus files"
    if recorded.get("settings", index_settings(config)) != index_settings(config):
        return f"index settings changed ({recorded.get('settings')} -> {index_settings(config)})"
    return None


def wipe(store_dir: Path) -> None:
    """Delete a bench index that its marker says this bench built (and nothing else in the folder)."""
    store_dir = Path(store_dir)
    for path in [*store_dir.glob("news.sqlite3*"), *store_dir.glob("vectors-*.faiss*"), store_dir / MARKER]:
        path.unlink(missing_ok=True)


def ensure_corpus(service, corpus: list[Path], *, progress: Progress | None = None) -> dict:
    """Ingest `corpus` into the service's store unless the marker says it is in; the ingest report."""
    progress = progress or Progress(False)
    missing = [str(p) for p in corpus if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"bench corpus not found: {', '.join(missing)} (see --corpus)")
    marker = Path(service.store.dir) / MARKER
    wanted = fingerprint(corpus)
    if marker.exists():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if recorded.get("corpus") == wanted and recorded.get("settings", index_settings(service.config)) == \
                index_settings(service.config):
            progress(f"corpus already indexed in {service.store.dir}")
            return {**recorded["first_ingest"], "ingested_now": False}
    progress(f"ingesting {len(corpus)} corpus file(s) into {service.store.dir} (embeddings are cached there)")
    report = service.ingest([str(p) for p in corpus], progress=progress.enabled)
    if report.failed and not report.added and not report.duplicates:
        raise RuntimeError(f"corpus ingest failed: {report.failed[0].source}: {report.failed[0].reason}")
    first = {
        "articles_added": len(report.added), "duplicates": len(report.duplicates), "failed": len(report.failed),
        "chunks": report.chunks, "embedded": report.embedded, "seconds": round(report.seconds, 1),
        "chunks_per_s": round(report.chunks / report.seconds, 2) if report.seconds else None,
    }
    write_json(marker, {"corpus": wanted, "settings": index_settings(service.config), "first_ingest": first})
    return {**first, "ingested_now": True}

"""The embedding backends side by side: torch, torch-bf16, onnx and onnx-int8 on the same texts.

Each backend runs in a fresh process of its own (its load time and resident memory are its own):
- load: seconds to a ready model (the ONNX export, made once beforehand, is not counted) and RSS;
- question embedding: one question per call, as `ask` embeds it, p50/p95 on a quiet machine and
  while the same process ingests a slice of news in another thread;
- ingest: `ingest_throughput` (the whole ingest against the backend's bare encode on the same chunks);
- quality: a slice of each corpus indexed with the backend, then questions drawn from it (headlines and
  first sentences, as `ask_latency` draws them): how often the answer cites the article asked about.
The parent compares each backend's vectors with torch's on the same texts (cosine).
"""

from __future__ import annotations

import json
import pickle
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from bench.common import (
    Progress, bench_config, latency_summary, read_articles, rss_mb, run_in_process, sample_questions, write_slice,
)
from bot.config import Config
from index.embed import EMBED_BACKENDS

SAMPLE_TEXTS = 200  # texts of the ingest slice whose vectors are compared with torch's


def _question_latency(embedder, questions: list[str], *, until: threading.Event | None = None) -> dict:
    times = []
    while True:
        for question in questions:
            started = time.perf_counter()
            embedder.encode([question])
            times.append((time.perf_counter() - started) * 1000)
            if until is not None and until.is_set():
                return latency_summary(times)
        if until is None:
            return latency_summary(times)


def _own_article_cited(config: Config, embedder, corpora: list[str], *, articles: int, questions: int) -> dict:
    from bot.service import NewsService

    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-quality-") as folder:
        slices = []
        for number, corpus in enumerate(corpora):
            slices.append(str(Path(folder) / f"slice-{number}.jsonl"))
            write_slice(Path(corpus), Path(slices[-1]), count=articles)
        service = NewsService(bench_config(config, Path(folder) / "index"), embedder=embedder)
        service.ingest(slices)
        drawn = sample_questions(service.store, questions, seed=17)
        cited = found = 0
        for question, article_id in drawn:
            answer = service.ask(question)
            found += answer.found
            cited += any(c.article_id == article_id for c in answer.citations)
        service.store.close()
    return {"questions": len(drawn), "cites_own_article": round(cited / len(drawn), 4),
            "answered": round(found / len(drawn), 4)}


def _probe(spec: dict) -> dict:
    """One backend, measured in this (fresh) process."""
    from bench import ingest_throughput
    from index.embed import load_embedder

    with open(spec["config_pickle"], "rb") as handle:
        config = pickle.load(handle)
    before = rss_mb()
    started = time.perf_counter()
    embedder = load_embedder(backend=spec["backend"], batch_size=spec["batch_size"], cache_dir=Path(spec["cache_dir"]))
    load_seconds = time.perf_counter() - started
    loaded = rss_mb()
    questions = spec["questions"]
    embedder.encode(questions[:5])  # first calls allocate; not what a running bot sees
    quiet = _question_latency(embedder, questions)

    slice_path = Path(spec["corpus"])
    ingest = ingest_throughput.run(config, embedder, slice_path, articles=spec["articles"], rounds=spec["rounds"])
    busy = threading.Event()

    def ingest_in_background():
        try:
            ingest_throughput.run(config, embedder, slice_path, articles=spec["busy_articles"], rounds=1)
        finally:
            busy.set()

    worker = threading.Thread(target=ingest_in_background, daemon=True)
    worker.start()
    # From its start: the background run's warm-up is an ingest of ten articles, too.
    during_ingest = _question_latency(embedder, questions, until=busy)
    worker.join()

    sample = [json.loads(line) for line in Path(spec["sample"]).read_text().splitlines()]
    np.save(spec["vectors_out"], embedder.encode(sample))
    quality = _own_article_cited(config, embedder, spec["quality_corpora"], articles=spec["quality_articles"],
                                 questions=spec["quality_questions"])
    return {
        "backend": spec["backend"], "model": embedder.name, "load_seconds": round(load_seconds, 2),
        "rss_before_mb": round(before, 1), "rss_loaded_mb": round(loaded, 1), "rss_after_mb": round(rss_mb(), 1),
        "question_embed_quiet": quiet, "question_embed_during_ingest": during_ingest,
        "ingest_chunks_per_s": ingest["ingest_chunks_per_s"], "bare_chunks_per_s": ingest["bare_model_chunks_per_s"],
        "ingest_over_bare": ingest["ratio"], "chunks": ingest["chunks"], "quality": quality,
    }


def run(config: Config, corpora: list[Path], *, backends: tuple[str, ...] = EMBED_BACKENDS, articles: int = 300,
        rounds: int = 2, busy_articles: int = 100, questions: int = 50, quality_articles: int = 300,
        quality_questions: int = 200, progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    unknown = [b for b in backends if b not in EMBED_BACKENDS]
    if unknown or "torch" not in backends:
        raise ValueError(f"backends must include torch and come from {', '.join(EMBED_BACKENDS)}")
    from index.embed import load_embedder

    slice_corpus = corpora[-1]
    # Headlines of articles past the quality slice: questions as people type them.
    asked = [article.title for article in read_articles(corpora[0], start=quality_articles, count=questions)]
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-backends-") as folder:
        folder = Path(folder)
        sample = [article.text[:1200] for article in read_articles(slice_corpus, count=SAMPLE_TEXTS)]
        (folder / "sample.jsonl").write_text("\n".join(json.dumps(t) for t in sample))
        (folder / "config.pickle").write_bytes(pickle.dumps(config))
        cache = config.model_cache_dir
        for backend in backends:  # the one-time export, made here so that no probe's load time includes it
            if backend.startswith("onnx"):
                progress(f"embed_backends: making sure the {backend} export is ready in {cache}")
                load_embedder(backend=backend, cache_dir=cache)
        results = {}
        for backend in backends:
            progress(f"embed_backends: {backend} (load, question embedding, ingest of {articles} articles, "
                     f"quality on {quality_questions} questions)")
            spec = {"backend": backend, "batch_size": config.index.batch_size, "cache_dir": str(cache),
                    "config_pickle": str(folder / "config.pickle"), "questions": asked, "corpus": str(slice_corpus),
                    "articles": articles, "rounds": rounds, "busy_articles": busy_articles,
                    "sample": str(folder / "sample.jsonl"), "vectors_out": str(folder / f"{backend}.npy"),
                    "quality_corpora": [str(p) for p in corpora], "quality_articles": quality_articles,
                    "quality_questions": quality_questions}
            results[backend] = run_in_process("bench.embed_backends", spec, what=f"embed_backends probe ({backend})",
                                              timeout=3600)
            figures = results[backend]
            progress(f"embed_backends: {backend}: ingest {figures['ingest_chunks_per_s']:.1f} chunks/s (bare "
                     f"{figures['bare_chunks_per_s']:.1f}), question p95 {figures['question_embed_quiet']['p95_ms']:.1f} ms,"
                     f" cites own article {figures['quality']['cites_own_article']:.3f}")
        reference = np.load(folder / "torch.npy")
        for backend, figures in results.items():
            similarity = (np.load(folder / f"{backend}.npy") * reference).sum(axis=1)
            figures["cosine_to_torch"] = {"min": round(float(similarity.min()), 5),
                                          "mean": round(float(similarity.mean()), 5), "texts": len(sample)}
    torch_ingest = results["torch"]["ingest_chunks_per_s"]
    fastest_bare = max(figures["bare_chunks_per_s"] for figures in results.values())
    for figures in results.values():
        figures["ingest_over_torch_ingest"] = round(figures["ingest_chunks_per_s"] / torch_ingest, 3)
        figures["ingest_over_fastest_bare"] = round(figures["ingest_chunks_per_s"] / fastest_bare, 3)
    return {"backends": results, "slice": f"{slice_corpus.parent.name}/{slice_corpus.name}",
            "questions_from": f"{corpora[0].parent.name}/{corpora[0].name}"}


if __name__ == "__main__":
    print(json.dumps(_probe(json.loads(sys.argv[1]))))

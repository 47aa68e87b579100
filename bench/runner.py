"""Runs the bench sections, writes one JSON per section and a summary, then the plot and REPORT.md."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import numpy as np

from bench import SECTIONS
from bench.common import Progress, bench_config, default_corpus, machine_info, now_iso, sample_questions, write_json
from bot.config import Config
from index.embed import new_index_backend

log = logging.getLogger(__name__)

SUMMARY = "summary.json"

# Smaller inputs for a quick look (`--quick`); the defaults are the figures the report quotes.
QUICK = {
    "ingest_throughput": {"articles": 100, "rounds": 1},
    "follow_matching": {"articles": 100, "rounds": 1},
    "embed_backends": {"articles": 100, "rounds": 1, "busy_articles": 30, "questions": 20, "quality_articles": 100,
                       "quality_questions": 50},
    "ask_latency": {"questions": 50, "scoped_questions": 20, "all_cores_questions": 20,
                    "filtered_questions": 5},
    "footprint": {},
    "vector_search": {"sizes": (10_000, 30_000, 100_000), "latency_queries": 100},
    "discord_load": {"seed_articles": 100, "feed_articles": 50},
    "threads": {"queries": 10, "texts": 32},
    "abstention": {"questions": 50},
    "scale_out": {"feeds": 4, "articles_per_feed": 15, "ask_articles": 50, "questions": 20},
    "backends": {"sizes": (50_000,), "questions": 50, "scoped_questions": 20, "recall_queries": 50,
                 "memory_queries": 5},
}


def require_matplotlib() -> None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise RuntimeError(
            "the bench draws its plot with matplotlib, which is not installed: pip install -e '.[bench]'"
        ) from None


class Bench:
    """The sections share one embedder and one service over the persistent bench index."""

    def __init__(self, config: Config, *, data_dir: Path, results_dir: Path, corpus: list[Path] | None = None,
                 embedder=None, params: dict | None = None, progress: bool = True, plot: bool = True) -> None:
        self.config = config
        self.data_dir, self.results_dir = Path(data_dir), Path(results_dir)
        # Every store and process of the bench reads the ONNX export from the user's data folder, rather
        # than making one in each of its own folders.
        os.environ.setdefault("NEWSDESK_MODEL_CACHE", str(config.model_cache_dir))
        self.corpus = [Path(p) for p in (corpus or default_corpus(config))]
        self._embedder = embedder
        self._service = None
        self.params = params or {}
        self.progress = Progress(progress)
        self.plot = plot
        self.corpus_ingest: dict | None = None

    # -- shared resources ----------------------------------------------------------------------

    @property
    def embedder(self):
        if self._embedder is None:
            from bot.service import embedder_for

            self.progress("loading the embedding model")
            self._embedder = embedder_for(bench_config(self.config, self.data_dir))
        return self._embedder

    @property
    def service(self):
        """The NewsService over the bench index, with the corpus in it (ingested on first use)."""
        if self._service is None:
            from bench.corpus import ensure_corpus, stale, wipe
            from bot.service import NewsService

            why = stale(self.data_dir, self.corpus, self.config)
            if why:
                self.progress(f"rebuilding the bench index in {self.data_dir}: {why}")
                wipe(self.data_dir)
            self._service = NewsService(bench_config(self.config, self.data_dir), embedder=self.embedder)
            self.corpus_ingest = ensure_corpus(self._service, self.corpus, progress=self.progress)
        return self._service

    @property
    def slice_corpus(self) -> Path:
        """The corpus the ingest and Discord sections take their slices from: the last one (BBC by default)."""
        return self.corpus[-1]

    # -- sections ------------------------------------------------------------------------------

    def ingest_throughput(self, **kw) -> dict:
        from bench import ingest_throughput

        return ingest_throughput.run(self.config, self.embedder, self.slice_corpus, progress=self.progress, **kw)

    def follow_matching(self, **kw) -> dict:
        from bench import follow_matching

        return follow_matching.run(self.config, self.embedder, self.slice_corpus, progress=self.progress, **kw)

    def embed_backends(self, **kw) -> dict:
        from bench import embed_backends

        return embed_backends.run(self.config, self.corpus, progress=self.progress, **kw)

    def ask_latency(self, **kw) -> dict:
        from bench import ask_latency

        result = ask_latency.run(self.service, progress=self.progress, **kw)
        result["corpus"] = [f"{p.parent.name}/{p.name}" for p in self.corpus]
        result["corpus_first_ingest"] = self.corpus_ingest
        return result

    def abstention(self, **kw) -> dict:
        from bench import abstention

        return abstention.run(self.service, progress=self.progress, **kw)

    def footprint(self, **kw) -> dict:
        from bench import footprint

        service = self.service
        with_model = kw.pop("with_model", hasattr(self.embedder, "_model"))
        return footprint.run(bench_config(self.config, self.data_dir), service.store.dir,
                             model_name=self.embedder.name, dim=self.embedder.dim, with_model=with_model,
                             progress=self.progress, **kw)

    def vector_search(self, *, queries: int = 500, **kw) -> dict:
        from bench import vector_search

        store = self.service.store
        base = np.concatenate([record.vectors for record in store.export_articles()])
        asked = sample_questions(store, queries, seed=13)
        self.progress(f"vector_search: embedding {len(asked)} held-out questions as queries")
        query_vectors = self.embedder.encode([q for q, _ in asked])
        idx = self.config.index
        settings = {"exact_search_max": idx.exact_search_max, "hnsw_m": idx.hnsw_m, "hnsw_ef_search": idx.hnsw_ef_search}
        return vector_search.run(base, query_vectors, settings=settings, progress=self.progress, **kw)

    def discord_load(self, **kw) -> dict:
        from bench import discord_load

        return discord_load.run(self.config, self.embedder, self.slice_corpus, progress=self.progress, **kw)

    def threads(self, **kw) -> dict:
        from bench import threads

        return threads.run(self.config, progress=self.progress, **kw)

    def scale_out(self, **kw) -> dict:
        from bench import scale_out

        return scale_out.run(self.config, self.embedder, self.slice_corpus, progress=self.progress, **kw)

    def backends(self, **kw) -> dict:
        from bench import backends

        return backends.run(self.config, self.embedder, self.service, data_dir=self.data_dir, progress=self.progress,
                            **kw)

    # -- the run -------------------------------------------------------------------------------

    def run(self, sections: list[str] | None = None) -> dict:
        sections = list(sections or SECTIONS)
        unknown = [s for s in sections if s not in SECTIONS]
        if unknown:
            raise ValueError(f"unknown bench section(s): {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
        if self.plot:
            require_matplotlib()
        missing = [str(p) for p in self.corpus if not p.is_file()]
        if missing:
            raise FileNotFoundError(f"bench corpus not found: {', '.join(missing)} (pass --corpus FILE.jsonl)")
        failed = {}
        for name in SECTIONS:
            if name not in sections:
                continue
            self.progress(f"== {name}")
            started = time.perf_counter()
            try:
                figures = getattr(self, name)(**self.params.get(name, {}))
            except Exception as exc:  # one section failing must not lose the others' figures
                log.debug("bench section %s failed", name, exc_info=True)
                failed[name] = f"{type(exc).__name__}: {exc}"
                self.progress(f"{name} failed: {failed[name]}")
                continue
            record = {"section": name, "date": now_iso(), "seconds": round(time.perf_counter() - started, 1),
                      "machine": machine_info(), "params": _jsonable(self.params.get(name, {})), **figures}
            write_json(self.results_dir / f"{name}.json", record)
            self.progress(f"{name}: done in {record['seconds']} s -> {self.results_dir / (name + '.json')}")
        summary = self.summarize()
        summary["ran"] = [s for s in sections if s not in failed]
        summary["failed"] = failed
        write_json(self.results_dir / SUMMARY, summary)
        if self.plot:
            from bench import report

            report.write(summary, self.results_dir)
            self.progress(f"report: {report.report_path(self.results_dir)}")
        return summary

    def summarize(self) -> dict:
        """Every section's latest result in the results folder (this run's and earlier ones), with targets."""
        sections = {}
        for name in SECTIONS:
            path = self.results_dir / f"{name}.json"
            if path.exists():
                sections[name] = json.loads(path.read_text(encoding="utf-8"))
        return {"date": now_iso(), "machine": machine_info(), "targets": targets(sections), "sections": sections}


def _jsonable(value):
    return json.loads(json.dumps(value, default=list))


def targets(sections: dict) -> list[dict]:
    """The issue's targets against the figures measured (None where the section has not run)."""

    def get(section: str, *path):
        value = sections.get(section)
        for key in path:
            if not isinstance(value, dict):
                return None
            value = value.get(key)
        return value

    rows = []

    def row(name: str, target: str, value, met):
        rows.append({"name": name, "target": target, "value": value, "met": None if value is None else bool(met)})

    ratio = get("ingest_throughput", "ratio")
    row("ingest throughput / bare model encode", ">= 0.90", ratio, ratio is not None and ratio >= 0.90)
    follows = get("follow_matching", "ingest", "with_follows", "follows")
    if follows:
        share = get("follow_matching", "follows_share_of_ingest")
        row(f"follow matching at {follows:,} normal follows, with queueing: share of ingest time", "< 0.10", share, share < 0.10)
    chosen = new_index_backend()
    default = get("embed_backends", "backends", chosen)
    if default:
        row(f"ingest with {chosen} (auto's choice here) / torch ingest", ">= 1.7",
            default["ingest_over_torch_ingest"], default["ingest_over_torch_ingest"] >= 1.7)
        row(f"ingest with {chosen} / the fastest bare backend", ">= 0.90",
            default["ingest_over_fastest_bare"], default["ingest_over_fastest_bare"] >= 0.9)
    p95 = get("ask_latency", "ask", "p95_ms")
    row("ask p95 (reuters + bbc, extractive)", "< 150 ms", p95, p95 is not None and p95 < 150)
    recall = get("vector_search", "largest", "hnsw_recall_at_10")
    size = get("vector_search", "largest", "vectors")
    row(f"HNSW recall@10 vs exact at {size:,} vectors" if size else "HNSW recall@10 vs exact", ">= 0.95", recall,
        recall is not None and recall >= 0.95)
    answered, asked = get("discord_load", "answered"), get("discord_load", "questions")
    row("Discord load: questions answered", "all", None if answered is None else f"{answered}/{asked}",
        answered is not None and answered == asked)
    stall = get("discord_load", "event_loop", "max_stall_ms")
    row("Discord load: longest event-loop stall", "< 100 ms", stall, stall is not None and stall < 100)
    points = get("backends", "points") or []
    largest = max((p["size"] for p in points), default=None)
    for point in points:
        name = f"{point['backend']}, {point['chunks']:,} chunks"
        p95 = point["ask"]["p95_ms"]
        if point["size"] == largest:
            row(f"ask p95 with the query embedding ({name})", "<= 100 ms", p95, p95 <= 100)
            recall = point["recall_at_10"]
            row(f"vector search recall@10 vs exact ({name})", ">= 0.95", recall, recall >= 0.95)
        elif point["size"] == 100_000 and point["backend"] == "sqlite":  # the embedded default's own target
            row(f"ask p95 with the query embedding ({name})", "< 50 ms", p95, p95 < 50)
    return rows

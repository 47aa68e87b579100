"""`ask` latency over the bench corpus, in extractive mode, question by question as a user sends them.

Questions are drawn with a fixed seed from the stored articles (see bench.common.sample_questions),
each asked once (the retriever's query cache never hits), after a few warm-up questions that load
the FAISS index and warm SQLite's pages. Reported: the whole `ask` and its parts (query embedding,
vector search, BM25, fusion, the extractive answer), and whether the answer cites the article the
question was drawn from — a check that the figures come from real answers. A second, disjoint set
of questions is asked the way Discord asks them, filtered to a server's collections, and a third
with FAISS's OpenMP pool at one thread; then small sets with a date filter letting through about
1k, 5k, 19k and 21k chunks, on both sides of the retriever's exact-over-allowed-chunks limit.
"""

from __future__ import annotations

import os
import statistics
import time
from datetime import datetime

from bench.common import Progress, latency_summary, sample_questions
from bot.feeds import guild_collection
from index.article import DEFAULT_COLLECTION
from index.store import SearchFilters

PARTS = ("embed_ms", "dense_ms", "bm25_ms", "fuse_ms", "retrieve_ms", "answer_ms")


def _measure(service, drawn: list[tuple[str, str]], *, filters=None, progress: Progress, label: str) -> dict:
    totals: list[float] = []
    parts: dict[str, list[float]] = {p: [] for p in PARTS}
    found = cited_source = 0
    words: list[int] = []
    for number, (question, article_id) in enumerate(drawn, 1):
        started = time.perf_counter()
        answer = service.ask(question, filters=filters)
        totals.append((time.perf_counter() - started) * 1000)
        for part in PARTS:
            if part in answer.timing_ms:
                parts[part].append(answer.timing_ms[part])
        found += answer.found
        cited_source += any(c.article_id == article_id for c in answer.citations)
        words.append(len(answer.text.split()))
        if number % 50 == 0:
            progress(f"{label}: {number}/{len(drawn)} questions, p95 so far {latency_summary(totals)['p95_ms']:.1f} ms")
    return {
        "questions": len(drawn),
        "ask": latency_summary(totals),
        "retrieval_only": latency_summary(parts["retrieve_ms"]),
        "parts_median_ms": {p: round(statistics.median(v), 3) for p, v in parts.items() if v},
        "parts_p95_ms": {p: round(latency_summary(v)["p95_ms"], 3) for p, v in parts.items() if v},
        "answered_share": round(found / len(drawn), 4),
        "source_article_cited_share": round(cited_source / len(drawn), 4),
        "answer_words_median": statistics.median(words),
    }


FILTER_LEVELS = (1_000, 5_000, 20_000)


def _since_letting_through(store, chunks: int, oldest: datetime, newest: datetime) -> datetime:
    """The start of a date filter that lets about `chunks` chunks through (a bisection over dates)."""
    low, high = oldest, newest
    for _ in range(30):
        middle = low + (high - low) / 2
        if store.stats(SearchFilters(since=middle))["chunks"] > chunks:
            low = middle
        else:
            high = middle
    return high


def _filtered(service, *, seed: int, skip: int, per_level: int, progress: Progress) -> list[dict]:
    """`ask` with a date filter that lets through about N chunks: the embedded backend lists them
    (up to its LISTED_FILTER_LIMIT) and scans only their vectors, so the cost follows N."""
    if per_level < 1:
        return []
    stats = service.store.stats()
    oldest, newest = (datetime.fromisoformat(stats[k]) for k in ("oldest", "newest"))
    out = []
    for level_number, level in enumerate(FILTER_LEVELS):
        if level >= stats["chunks"]:
            break
        filters = SearchFilters(since=_since_letting_through(service.store, level, oldest, newest))
        allowed = service.store.stats(filters)["chunks"]
        drawn = sample_questions(service.store, per_level, seed=seed, skip=skip + level_number * per_level)
        result = _measure(service, drawn, filters=filters, progress=progress,
                          label=f"ask_latency (filter, {allowed} chunks)")
        out.append({"allowed_chunks": allowed, "questions": result["questions"], "ask": result["ask"],
                    "parts_median_ms": result["parts_median_ms"]})
    return out


def run(service, *, questions: int = 200, warmup: int = 10, scoped_questions: int = 100,
        all_cores_questions: int = 100, filtered_questions: int = 20, seed: int = 5,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    if service.llm is not None:
        raise ValueError("ask latency is measured in extractive mode: configure no [llm] base_url")
    drawn = sample_questions(service.store, questions + warmup, seed=seed)
    if len(drawn) < warmup + 1:
        raise ValueError("the bench store has too few articles to ask about")
    warm, measured = drawn[:warmup], drawn[warmup:]
    for question, _ in warm:
        service.ask(question)
    result = _measure(service, measured, progress=progress, label="ask_latency")
    # As Discord asks: every question there carries its server's collections as a filter.
    scoped = sample_questions(service.store, scoped_questions, seed=seed, skip=questions + warmup)
    scoped_result = None
    if scoped:
        filters = SearchFilters(collections=(DEFAULT_COLLECTION, guild_collection(1)))
        scoped_result = _measure(service, scoped, filters=filters, progress=progress, label="ask_latency (scoped)")
    # The same with FAISS's OpenMP pool at every core, the library's default, against the one
    # thread the retriever uses (config [retrieval] search_threads).
    all_cores = sample_questions(service.store, all_cores_questions,
                                 seed=seed, skip=questions + warmup + scoped_questions)
    all_cores_result = None
    if all_cores:
        settings = service.config.retrieval
        chosen, settings.search_threads = settings.search_threads, os.cpu_count() or 1
        try:
            all_cores_result = _measure(service, all_cores, progress=progress, label="ask_latency (all cores)")
        finally:
            settings.search_threads = chosen
        all_cores_result["search_threads"] = os.cpu_count() or 1
    filtered = _filtered(service, seed=seed, skip=questions + warmup + scoped_questions + all_cores_questions,
                         per_level=filtered_questions, progress=progress)
    stats = service.store.stats()
    return {
        "mode": "extractive",
        "backend": stats["backend"],
        "articles": stats["articles"],
        "chunks": stats["chunks"],
        "vector_index": stats["vector_index"],
        "search_threads": service.config.retrieval.search_threads,
        "warmup_questions": len(warm),
        "seed": seed,
        **result,
        "example_questions": [q for q, _ in measured[:5]],
        "scoped_like_discord": scoped_result,
        "faiss_all_cores": all_cores_result,
        "filtered_by_allowed_chunks": filtered,
    }

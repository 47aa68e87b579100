"""Hybrid retrieval: dense and lexical (BM25) rankings from the store, fused, with recency and diversity.

The store searches (index.store: FAISS or pgvector, its own BM25 postings or PostgreSQL full text) and applies the
filters; what is done with its two rankings is the same for every backend and lives here.
"""

from __future__ import annotations

import math
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np

from index.article import ArticleMeta
from index.embed import Embedder
from index.store import NewsStore, SearchFilters

__all__ = ["ArticleMeta", "Hit", "Retriever", "RetrievalMode", "RetrievalSettings", "query_terms"]

_TERM = re.compile(r"\w+", re.UNICODE)
STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being below between
    both but by can could did do does doing down during each few for from further had has have having he her here
    hers herself him himself his how i if in into is it its itself just me more most my myself no nor not now of
    off on once only or other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up very was we were what
    when where which while who whom why will with would you your yours yourself yourselves s t don said says say
    tell told according news latest""".split()
)


def query_terms(text: str) -> list[str]:
    """Content words of a question, lower-cased, in order, without repeats."""
    seen: dict[str, None] = {}
    for word in _TERM.findall(text.lower()):
        if word not in STOPWORDS and (len(word) > 1 or word.isdigit()):
            seen.setdefault(word, None)
    return list(seen)


class RetrievalMode:
    HYBRID = "hybrid"
    DENSE = "dense"
    LEXICAL = "bm25"
    ALL = (HYBRID, DENSE, LEXICAL)


@dataclass(frozen=True)
class Hit:
    """A retrieved passage with its article; `start`/`end` are offsets into the article's text."""

    chunk_id: int
    article: ArticleMeta
    text: str
    start: int
    end: int
    score: float
    dense: float | None = None
    lexical: float | None = None
    article_text: str = field(default="", repr=False, compare=False)


@dataclass
class RetrievalSettings:
    """The knobs of retrieval; config.toml's [retrieval] section."""

    top_k: int = 8
    candidates: int = 50
    dense_weight: float = 0.7
    lexical_weight: float = 1.0
    recency_half_life_days: float = 14.0
    recency_weight: float = 0.1
    lede_weight: float = 0.2
    max_chunks_per_article: int = 4
    # Vector search threads for one question (the embedded backend's FAISS; OpenMP sets it per thread).
    search_threads: int = 1


class Retriever:
    """Turns a query and filters into the best passages, diverse across articles."""

    def __init__(self, store: NewsStore, embedder: Embedder, settings: RetrievalSettings | None = None, *, mode: str = RetrievalMode.HYBRID):
        if mode not in RetrievalMode.ALL:
            raise ValueError(f"mode must be one of {RetrievalMode.ALL}")
        self.store, self.embedder = store, embedder
        self.settings = settings or RetrievalSettings()
        if self.settings.candidates < self.settings.top_k:
            raise ValueError("retrieval candidates must be at least top_k")
        self.mode = mode
        self._query_cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_lock = threading.Lock()  # questions from Discord are retrieved in several threads at once

    def run(self, query: str, *, filters: SearchFilters | None = None, k: int | None = None,
            timing: dict[str, float] | None = None) -> list[Hit]:
        """The best `k` passages; `timing`, when given, receives each step's milliseconds."""
        filters = filters or SearchFilters()
        k = k or self.settings.top_k
        n = max(self.settings.candidates, k * 3)
        timing = {} if timing is None else timing
        dense: list[tuple[int, float]] = []
        if self.mode != RetrievalMode.LEXICAL:
            t = time.perf_counter()
            vector = self._embed(query)
            timing["embed_ms"] = (time.perf_counter() - t) * 1000
            t = time.perf_counter()
            dense = self.store.dense_search(vector, n, filters)
            timing["dense_ms"] = (time.perf_counter() - t) * 1000
        lexical: list[tuple[int, float]] = []
        if self.mode != RetrievalMode.DENSE:
            t = time.perf_counter()
            terms = query_terms(query)
            if terms:
                lexical = self.store.lexical_search(terms, n, filters)
            timing["bm25_ms"] = (time.perf_counter() - t) * 1000

        t = time.perf_counter()
        hits = self._fuse(dense, lexical, k)
        timing["fuse_ms"] = (time.perf_counter() - t) * 1000
        return hits

    def _embed(self, query: str) -> np.ndarray:
        with self._cache_lock:
            cached = self._query_cache.get(query)
            if cached is not None:
                self._query_cache.move_to_end(query)
                return cached
        vector = self.embedder.encode([query])[0]  # outside the lock: encoding is the slow part
        with self._cache_lock:
            self._query_cache[query] = vector
            if len(self._query_cache) > 256:
                self._query_cache.popitem(last=False)
        return vector

    def _fuse(self, dense: list[tuple[int, float]], lexical: list[tuple[int, float]], k: int) -> list[Hit]:
        s = self.settings
        # A weighted sum of each ranking's scores, scaled to [0, 1] over its candidates. Unlike
        # reciprocal-rank fusion it keeps how far ahead a passage is, not only its place (newsqa
        # dev: hit@1 .62 against .57, hit@5 .858 against .848).
        fused: dict[int, float] = {}
        for weight, ranking in ((s.dense_weight, dense), (s.lexical_weight, lexical)):
            for chunk_id, scaled in _min_max(ranking):
                fused[chunk_id] = fused.get(chunk_id, 0.0) + weight * scaled
        if not fused:
            return []
        rows = self.store.chunks_with_articles(list(fused))  # a chunk deleted since the search drops here
        dense_of, lexical_of = dict(dense), dict(lexical)
        now = datetime.now(timezone.utc)
        top_fused = max(fused.values()) or 1.0
        scored = []
        for chunk_id, value in fused.items():
            if chunk_id not in rows:
                continue
            chunk, meta, _ = rows[chunk_id]
            if chunk.start == 0:
                # A news story puts who, what and when in its opening paragraph.
                value += s.lede_weight * top_fused
            if s.recency_weight and meta.sort_time:
                age_days = max((now - meta.sort_time).total_seconds() / 86400, 0.0)
                value += s.recency_weight * top_fused * math.pow(0.5, age_days / s.recency_half_life_days)
            scored.append((value, chunk_id))
        scored.sort(reverse=True)
        per_article: dict[str, int] = {}
        hits: list[Hit] = []
        for value, chunk_id in scored:
            chunk, meta, text = rows[chunk_id]
            if per_article.get(meta.id, 0) >= s.max_chunks_per_article:
                continue
            per_article[meta.id] = per_article.get(meta.id, 0) + 1
            hits.append(
                Hit(
                    chunk_id=chunk_id, article=meta, text=text[chunk.start : chunk.end], start=chunk.start,
                    end=chunk.end, score=value, dense=dense_of.get(chunk_id), lexical=lexical_of.get(chunk_id),
                    article_text=text,
                )
            )
            if len(hits) == k:
                break
        return hits


def _min_max(ranking: list[tuple[int, float]]) -> list[tuple[int, float]]:
    """Scores scaled to [0, 1] among the ranking's candidates; a lone candidate gets 1."""
    if not ranking:
        return []
    low, high = min(v for _, v in ranking), max(v for _, v in ranking)
    spread = high - low
    return [(chunk_id, (value - low) / spread if spread else 1.0) for chunk_id, value in ranking]

"""The embedded backend: articles and chunks in SQLite, their vectors in FAISS, kept in step by one atomic commit.

SQLite is the source of truth: it holds articles, chunks, the BM25 postings (sqlite_lexicon) and
every vector (the embedding cache). The FAISS file is derived data, written under a new generation
number before the SQLite transaction that names that generation commits. A crash at any moment
therefore leaves either the old generation or the new one; a FAISS file that SQLite does not name
is debris and is deleted on open (unless a writer is at work: then it may be that writer's next
generation), and a missing or stale one is rebuilt from the stored vectors.

One writer at a time (a lock file guards it across processes); readers use their own
connections in WAL mode and never see a half-written batch. Nothing here leaves the module but
the typed values of index.store.types: rowids, SQL and FAISS objects stay inside.
"""

from __future__ import annotations

import fcntl
import functools
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import faiss
import numpy as np

from index.article import Article, ArticleMeta, Chunk
from index.dedup import Fingerprint
from index.store import sqlite_lexicon
from index.store.sqlite_batches import in_batches
from index.store.sqlite_feeds import FILE as STATE_FILE
from index.store.sqlite_feeds import SQLiteFeedRegistry, SQLiteFollowRegistry, SQLiteOutbox, from_timestamp
from index.store.types import (
    AlsoReported, Announcement, ArticleRecord, ScoredChunk, SearchFilters, StoreCounts, StoredChunk, StoreError,
    other_embedding,
)

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
# A filter letting up to this many chunks through (a server's collections) is listed once per commit,
# and both searches score only those chunks, exactly: the vector search scans their vectors in memory
# (1M chunks, a server's 5%: 14 / 21 ms p50 / p95, where widening the graph search cost 68 ms at p95), BM25 masks
# its postings. Past that most chunks pass, and the filter is applied to the best candidates.
LISTED_FILTER_LIMIT = 200_000
WIDEST_GRAPH_SEARCH = 4096


_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS articles (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    url TEXT, outlet TEXT, author TEXT, section TEXT, language TEXT, source TEXT,
    published REAL, fetched REAL NOT NULL,
    sort_time REAL NOT NULL,          -- published, else fetched: what date filters and recency use
    content_hash TEXT NOT NULL,
    signature BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS articles_time ON articles(sort_time);
CREATE INDEX IF NOT EXISTS articles_hash ON articles(content_hash);
CREATE INDEX IF NOT EXISTS articles_outlet ON articles(outlet COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS article_collections (
    article INTEGER NOT NULL REFERENCES articles(rowid) ON DELETE CASCADE,
    collection TEXT NOT NULL,
    PRIMARY KEY (article, collection)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS collections_name ON article_collections(collection);
CREATE TABLE IF NOT EXISTS also_reported (
    article INTEGER NOT NULL REFERENCES articles(rowid) ON DELETE CASCADE,
    outlet TEXT NOT NULL, url TEXT, title TEXT,
    PRIMARY KEY (article, outlet)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS lsh (
    band_key INTEGER NOT NULL,
    article INTEGER NOT NULL REFERENCES articles(rowid) ON DELETE CASCADE
);
CREATE INDEX IF NOT EXISTS lsh_key ON lsh(band_key);
CREATE INDEX IF NOT EXISTS lsh_article ON lsh(article);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    article INTEGER NOT NULL REFERENCES articles(rowid) ON DELETE CASCADE,
    ordinal INTEGER NOT NULL,
    start INTEGER NOT NULL, end INTEGER NOT NULL,
    embed_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_article ON chunks(article);
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, hash)
) WITHOUT ROWID;
"""


def empty_faiss_index(dim: int, size: int, *, exact_search_max: int, hnsw_m: int, hnsw_ef_search: int) -> faiss.Index:
    """The index this backend builds for `size` vectors: exact up to `exact_search_max`, an HNSW
    graph past it. Public for `newsdesk bench`, which measures exactly these."""
    if size > exact_search_max:
        inner = faiss.IndexHNSWFlat(dim, hnsw_m, faiss.METRIC_INNER_PRODUCT)
        inner.hnsw.efConstruction = 80
    else:
        inner = faiss.IndexFlatIP(dim)
    index = faiss.IndexIDMap2(inner)
    tune_faiss_index(index, hnsw_ef_search)
    return index


def tune_faiss_index(index: faiss.Index, hnsw_ef_search: int) -> None:
    inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
    if isinstance(inner, faiss.IndexHNSW):
        inner.hnsw.efSearch = hnsw_ef_search


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value else None


def _filter_sql(filters: SearchFilters, *, per_row: bool = False) -> tuple[str, list]:
    """A WHERE clause over `articles a` for the filters.

    The collection and outlet conditions are `IN (subquery)` by default, which lets a narrow filter
    drive the query from its few articles. With `per_row`, for a query over `chunks c` driven by a
    few given chunks, they are `EXISTS` per article instead: SQLite would otherwise walk the whole
    list the subquery makes for each (1.6 s for 200 chunks under a 60,000-article collection, bench)."""
    clauses, params = ["1"], []
    if filters.since:
        clauses.append("a.sort_time >= ?")
        params.append(filters.since.timestamp())
    if filters.until:
        clauses.append("a.sort_time < ?")
        params.append(filters.until.timestamp())
    if filters.outlets:
        # An outlet matches the article's own outlet or one that also reported it.
        marks = ",".join("?" * len(filters.outlets))
        also = f"SELECT 1 FROM also_reported WHERE article = a.rowid AND outlet COLLATE NOCASE IN ({marks})" if per_row \
            else f"SELECT article FROM also_reported WHERE outlet COLLATE NOCASE IN ({marks})"
        clauses.append(f"(a.outlet COLLATE NOCASE IN ({marks}) OR {'EXISTS' if per_row else 'a.rowid IN'} ({also}))")
        params += [*filters.outlets, *filters.outlets]
    if filters.collections is not None:
        marks = ",".join("?" * len(filters.collections)) or "NULL"
        if per_row:
            clauses.append(f"EXISTS (SELECT 1 FROM article_collections WHERE article = c.article AND collection IN ({marks}))")
        else:
            clauses.append(f"a.rowid IN (SELECT article FROM article_collections WHERE collection IN ({marks}))")
        params += list(filters.collections)
    if filters.article_id is not None:
        clauses.append("a.id = ?")
        params.append(filters.article_id)
    return " AND ".join(clauses), params


# What stores written before the lexicon searched with; a writer replaces it with the lexicon.
_OLD_FTS5_TABLE = "chunks_fts"


def _fts_match(terms: Sequence[str]) -> str:
    """Any of the terms, each a quoted FTS5 string, so no term is read as query syntax."""
    return " OR ".join('"' + term.replace('"', '""') + '"' for term in terms)


class SQLiteStore:
    """The index in one folder: open it once per process and share it between threads."""

    backend = "sqlite"

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        model_name: str,
        dim: int,
        exact_search_max: int = 200_000,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 256,
        search_threads: int = 1,
        lexical_depth: int = sqlite_lexicon.DEPTH,
    ) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        if search_threads < 1:
            raise ValueError("search_threads must be at least 1")
        if lexical_depth < 1:
            raise ValueError("lexical_depth must be at least 1")
        self.dir = Path(data_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"can't create the data folder {self.dir}: {exc.strerror}") from None
        self.model_name, self.dim = model_name, dim
        self.exact_search_max, self.hnsw_m, self.hnsw_ef_search = exact_search_max, hnsw_m, hnsw_ef_search
        self.search_threads, self.lexical_depth = search_threads, lexical_depth
        self._local = threading.local()
        self._index_lock = threading.Lock()
        self._index: faiss.Index | None = None
        self._index_generation = -1
        self._feeds: SQLiteFeedRegistry | None = None
        self._outbox: SQLiteOutbox | None = None
        self._follows: SQLiteFollowRegistry | None = None
        with self._connect() as db:
            db.executescript(_SCHEMA)
            sqlite_lexicon.create(db)
            self._check_model(db)
        self._remove_debris_unless_writing()

    # -- connections -------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.dir / "news.sqlite3", timeout=30, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA foreign_keys=ON")
        return db

    @property
    def _db(self) -> sqlite3.Connection:
        """This thread's reader connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def close(self) -> None:
        """Closes this thread's reader connection; other threads' close when they end."""
        db = getattr(self._local, "db", None)
        if db is not None:
            db.close()
            self._local.db = None

    def _check_model(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key='model'").fetchone()
        wanted = json.dumps({"name": self.model_name, "dim": self.dim, "schema": SCHEMA_VERSION})
        if row is None:
            db.execute("INSERT INTO meta VALUES ('model', ?), ('generation', '0')", (wanted,))
        elif row[0] != wanted:
            recorded = json.loads(row[0])
            if (recorded["name"], recorded["dim"]) != (self.model_name, self.dim):
                raise other_embedding(str(self.dir), f"{recorded['name']} ({recorded['dim']})",
                                      f"{self.model_name} ({self.dim})")
            raise StoreError(f"{self.dir} was built with {row[0]}, not {wanted}; use another [index] dir or re-ingest")

    def _generation(self, db: sqlite3.Connection | None = None) -> int:
        return int((db or self._db).execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _faiss_path(self, generation: int) -> Path:
        return self.dir / f"vectors-{generation}.faiss"

    def _remove_debris(self) -> None:
        """Delete the FAISS files SQLite does not name. Only with the write lock held: a writer's
        next generation is not named until its commit, and is not debris while it is at work."""
        current = self._faiss_path(self._generation()).name
        for path in self.dir.glob("vectors-*.faiss*"):
            if path.name != current:
                path.unlink(missing_ok=True)

    def _remove_debris_unless_writing(self) -> None:
        """On open: what a writer killed mid-commit left, unless a writer (this process or another)
        is at work now; a `newsdesk stats` started during a bot's commit must not delete its files."""
        lock = open(self.dir / "write.lock", "w")
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return
            self._remove_debris()
        finally:
            lock.close()  # which releases the lock

    @property
    def feeds(self) -> SQLiteFeedRegistry:
        """Feeds live in their own file, so an admin can add one while a long ingest holds the index's lock."""
        if self._feeds is None:
            self._feeds = SQLiteFeedRegistry(self.dir / STATE_FILE)
        return self._feeds

    @property
    def outbox(self) -> SQLiteOutbox:
        if self._outbox is None:
            self._outbox = SQLiteOutbox(self.dir / STATE_FILE)
        return self._outbox

    @property
    def follows(self) -> SQLiteFollowRegistry:
        if self._follows is None:
            self._follows = SQLiteFollowRegistry(self.dir / STATE_FILE)
        return self._follows

    # -- the vector index ----------------------------------------------------------------------

    def _vector_index(self) -> faiss.Index:
        """The FAISS index of the committed generation; reloaded when another process wrote."""
        generation = self._generation()
        with self._index_lock:
            if self._index is None or self._index_generation != generation:
                self._index = self._load_index(generation)
                self._index_generation = generation
            return self._index

    def _load_index(self, generation: int) -> faiss.Index:
        path = self._faiss_path(generation)
        expected = self._total_chunks()
        if path.exists():
            try:
                index = faiss.read_index(str(path))
                if index.ntotal == expected:
                    self._tune(index)
                    return index
                log.warning("vector index has %d vectors, SQLite %d chunks: rebuilding", index.ntotal, expected)
            except RuntimeError as exc:
                log.warning("vector index %s unreadable (%s): rebuilding", path, exc)
        elif expected:
            log.warning("vector index missing for %d chunks: rebuilding", expected)
        return self._build_index(self._db)

    def _build_index(self, db: sqlite3.Connection) -> faiss.Index:
        ids, vectors = self._all_vectors(db)
        index = self._empty_index(len(ids))
        if len(ids):
            _add_vectors(index, vectors, ids)
        return index

    def _empty_index(self, size: int) -> faiss.Index:
        return empty_faiss_index(self.dim, size, exact_search_max=self.exact_search_max, hnsw_m=self.hnsw_m,
                                 hnsw_ef_search=self.hnsw_ef_search)

    def _tune(self, index: faiss.Index) -> None:
        tune_faiss_index(index, self.hnsw_ef_search)

    @staticmethod
    def _is_approximate(index: faiss.Index) -> bool:
        return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)

    def _all_vectors(self, db: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray]:
        rows = db.execute(
            "SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.model=? AND v.hash=c.embed_hash ORDER BY c.id",
            (self.model_name,),
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, np.ascontiguousarray(vectors)

    def cached_vectors(self, embed_keys: Iterable[str]) -> dict[str, np.ndarray]:
        return {key: np.frombuffer(blob, dtype=np.float32) for key, blob in _stored_vectors(self._db, self.model_name, embed_keys).items()}

    # -- search --------------------------------------------------------------------------------

    def dense_search(self, vector: np.ndarray, k: int, filters: SearchFilters) -> list[ScoredChunk]:
        index = self._vector_index()
        if k < 1 or index.ntotal == 0:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32).reshape(1, -1)
        if not filters.active:
            return self._faiss_search(index, query, min(k, index.ntotal))
        allowed = self._allowed_chunk_ids(filters)
        if allowed is None:
            return self._search_then_filter(index, query, k, filters)
        if len(allowed) == 0:
            return []
        return self._scan_allowed(index, query, k, allowed)

    def _scan_allowed(self, index: faiss.IndexIDMap2, query: np.ndarray, k: int, allowed: np.ndarray) -> list[ScoredChunk]:
        """The exact best `k` of the `allowed` chunks: their vectors scanned where the index holds
        them (the flat index itself, or the graph's flat storage), the others skipped by a bitmap.
        A graph search under a narrow filter would miss allowed neighbours or widen at length."""
        inner = faiss.downcast_index(index.index)
        flat = faiss.downcast_index(inner.storage) if isinstance(inner, faiss.IndexHNSW) else inner
        mask = np.zeros(int(allowed.max()) + 1, dtype=bool)
        mask[allowed] = True
        bitmap = np.packbits(mask, bitorder="little")
        # The flat vectors are in insertion order: the selector maps each position to its chunk id.
        chosen = faiss.IDSelectorTranslated(index.id_map, faiss.IDSelectorBitmap(len(bitmap), faiss.swig_ptr(bitmap)))
        faiss.omp_set_num_threads(self.search_threads)
        scores, positions = flat.search(query, min(k, len(allowed)), params=faiss.SearchParameters(sel=chosen))
        return [(int(index.id_map.at(int(p))), float(s)) for p, s in zip(positions[0], scores[0]) if p >= 0]

    def _faiss_search(self, index: faiss.Index, query: np.ndarray, fetch: int) -> list[ScoredChunk]:
        # Set in the searching thread: OpenMP keeps the setting per thread, and Discord questions are
        # retrieved in worker threads.
        faiss.omp_set_num_threads(self.search_threads)
        scores, ids = index.search(query, fetch)
        return [(int(i), float(s)) for i, s in zip(ids[0], scores[0]) if i >= 0]

    def _search_then_filter(self, index: faiss.Index, query: np.ndarray, k: int,
                            filters: SearchFilters) -> list[ScoredChunk]:
        """A broad filter: search wider, keep what passes, and widen again until `k` pass. A graph
        search gets no wider than WIDEST_GRAPH_SEARCH (its cost grows with the width): a filter that
        lets LISTED_FILTER_LIMIT chunks or more through fills k from that many neighbours."""
        widest = index.ntotal if not self._is_approximate(index) else min(index.ntotal, WIDEST_GRAPH_SEARCH)
        return _best_passing(lambda fetch: self._faiss_search(index, query, min(fetch, widest)),
                             functools.partial(self._passing, filters), k, fetch=k * 4, deepest=widest)

    def _passing(self, filters: SearchFilters, chunk_ids: list[int]) -> set[int]:
        where, params = _filter_sql(filters, per_row=True)
        # A filter on collections alone needs no article rows: reading them (cold, beside their texts)
        # cost ten times the check itself (2,000 chunks of a million, bench).
        needs_article = bool(filters.since or filters.until or filters.outlets or filters.article_id is not None)
        source = "chunks c JOIN articles a ON a.rowid = c.article" if needs_article else "chunks c"
        passing: set[int] = set()
        for part, marks in in_batches(chunk_ids):
            passing.update(r[0] for r in self._db.execute(
                f"SELECT c.id FROM {source} WHERE c.id IN ({marks}) AND {where}", [*part, *params],
            ))
        return passing

    def _allowed_chunk_ids(self, filters: SearchFilters) -> np.ndarray | None:
        """Chunk ids (int64) passing a filter, or None if there are more than LISTED_FILTER_LIMIT.

        The answer is kept per reader connection until a writer commits (SQLite's data_version
        tells): Discord asks every question of a server with the same collection filter, and a
        question's vector and BM25 searches share one listing. A date filter ("this week") is kept
        under its exact dates, so the next question's, taken at another moment, is listed anew.
        """
        db = self._db
        cache: dict = self._local.__dict__.setdefault("allowed_ids", {})
        version = db.execute("PRAGMA data_version").fetchone()[0]
        cached = cache.get(filters)
        if cached is not None and cached[0] == version:
            return cached[1]
        where, params = _filter_sql(filters)
        rows = db.execute(
            f"SELECT c.id FROM chunks c JOIN articles a ON a.rowid = c.article WHERE {where} LIMIT ?",
            (*params, LISTED_FILTER_LIMIT + 1),
        )
        # An array, not a list of ints: a kept answer of 200,000 ids is 1.6 MB, not 7 MB.
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64)
        found = None if len(ids) > LISTED_FILTER_LIMIT else ids
        if len(cache) >= 32:
            cache.clear()
        cache[filters] = (version, found)
        return found

    def lexical_search(self, terms: Sequence[str], k: int, filters: SearchFilters) -> list[ScoredChunk]:
        """BM25 over chunk bodies and titles (the title weighing half); higher is better.

        From the impact-ordered postings (sqlite_lexicon); a store written before them is searched
        with its FTS5 table until a writer opens it and builds them."""
        if not terms or k < 1:
            return []
        db = self._db
        db.execute("BEGIN")  # one snapshot: the totals and the postings of the same commit
        try:
            if sqlite_lexicon.is_built(db):
                return self._lexicon_search(terms, k, filters)
            return self._fts_search(terms, k, filters)
        finally:
            db.execute("COMMIT")

    def _lexicon_search(self, terms: Sequence[str], k: int, filters: SearchFilters) -> list[ScoredChunk]:
        db = self._db
        search = functools.partial(sqlite_lexicon.search, db, terms, depth=self.lexical_depth)
        if not filters.active:
            return search(k)
        allowed = self._allowed_chunk_ids(filters)
        if allowed is not None:
            return search(k, allowed=allowed) if len(allowed) else []
        return search(k, passes=functools.partial(self._passing, filters))  # a broad filter: asked of the best

    def _fts_search(self, terms: Sequence[str], k: int, filters: SearchFilters) -> list[ScoredChunk]:
        """BM25 from an older store's FTS5 table. FTS5 ranks alone, and a filter is applied to its
        best chunks afterwards."""
        match = _fts_match(terms)
        try:
            if not filters.active:
                return self._bm25(match, k)
            allowed = self._allowed_chunk_ids(filters)
            if allowed is not None and len(allowed) == 0:
                return []
            # As many as the filter should need to keep k if it keeps its share of the matches (a broad
            # filter, not listed, lets more than LISTED_FILTER_LIMIT through).
            share = LISTED_FILTER_LIMIT if allowed is None else len(allowed)
            fetch = max(k * 4, 2 * k * self._vector_index().ntotal // share)
            if allowed is None:
                passes = functools.partial(self._passing, filters)
            else:
                def passes(ids: list[int]) -> set[int]:
                    return set(np.asarray(ids, dtype=np.int64)[np.isin(ids, allowed)].tolist())
            return _best_passing(functools.partial(self._bm25, match), passes, k, fetch=fetch)
        except sqlite3.OperationalError as exc:
            log.debug("FTS query for %r failed: %s", terms, exc)
            return []

    def _bm25(self, match: str, limit: int) -> list[ScoredChunk]:
        return self._db.execute(
            f"SELECT rowid, -bm25({_OLD_FTS5_TABLE}, 0.5, 1.0) FROM {_OLD_FTS5_TABLE} WHERE {_OLD_FTS5_TABLE} MATCH ? "
            f"ORDER BY bm25({_OLD_FTS5_TABLE}, 0.5, 1.0), rowid LIMIT ?", (match, limit),
        ).fetchall()

    # -- reads ---------------------------------------------------------------------------------

    _META_COLUMNS = "a.rowid, a.id, a.title, a.outlet, a.url, a.published, a.fetched, a.language, a.sort_time"

    def _metas(self, rows: list[tuple]) -> dict[int, ArticleMeta]:
        if not rows:
            return {}
        rowids = [r[0] for r in rows]
        also: dict[int, list[str]] = {}
        for part, marks in in_batches(rowids):
            for article, outlet in self._db.execute(
                f"SELECT article, outlet FROM also_reported WHERE article IN ({marks}) ORDER BY outlet", part
            ):
                also.setdefault(article, []).append(outlet)
        return {
            r[0]: ArticleMeta(
                id=r[1], title=r[2], outlet=r[3], url=r[4], published=from_timestamp(r[5]), fetched=from_timestamp(r[6]),
                language=r[7], sort_time=from_timestamp(r[8]), also_reported_by=tuple(also.get(r[0], ())),
            )
            for r in rows
        }

    def chunks_with_articles(self, chunk_ids: Sequence[int]) -> dict[int, tuple[StoredChunk, ArticleMeta, str]]:
        out: dict[int, tuple[StoredChunk, ArticleMeta, str]] = {}
        for part, marks in in_batches([int(i) for i in chunk_ids]):
            rows = self._db.execute(
                f"SELECT c.id, c.start, c.end, {self._META_COLUMNS}, a.text "
                f"FROM chunks c JOIN articles a ON a.rowid = c.article WHERE c.id IN ({marks})",
                part,
            ).fetchall()
            metas = self._metas([r[3:12] for r in rows])
            for r in rows:
                meta = metas[r[3]]
                out[r[0]] = (StoredChunk(r[0], meta.id, r[1], r[2]), meta, r[12])
        return out

    def has_article(self, article_id: str) -> bool:
        return _has_article(self._db, article_id)

    def find_same_text(self, content_hash: str) -> str | None:
        return _find_same_text(self._db, content_hash)

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> str | None:
        return _find_near_duplicate(self._db, fingerprint, threshold)

    def article(self, article_id: str, *, collections: tuple[str, ...] | None = None) -> tuple[ArticleMeta, str] | None:
        where, params = _filter_sql(SearchFilters(collections=collections, article_id=article_id))
        row = self._db.execute(f"SELECT {self._META_COLUMNS}, a.text FROM articles a WHERE {where}", params).fetchone()
        if row is None:
            return None
        return self._metas([row[:9]])[row[0]], row[9]

    def recent_articles(self, filters: SearchFilters, *, limit: int = 500) -> list[tuple[ArticleMeta, str]]:
        where, params = _filter_sql(filters)
        rows = self._db.execute(
            f"SELECT {self._META_COLUMNS}, a.text FROM articles a WHERE {where} ORDER BY a.sort_time DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        metas = self._metas([r[:9] for r in rows])
        return [(metas[r[0]], r[9]) for r in rows]

    def lede_vectors(self, article_ids: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for part, marks in in_batches(list(article_ids)):
            rows = self._db.execute(
                "SELECT a.id, v.vector FROM articles a JOIN chunks c ON c.article = a.rowid AND c.ordinal = 0 "
                f"JOIN vectors v ON v.model = ? AND v.hash = c.embed_hash WHERE a.id IN ({marks})",
                (self.model_name, *part),
            )
            out.update((article_id, np.frombuffer(blob, dtype=np.float32)) for article_id, blob in rows)
        return out

    def article_ids(self) -> list[str]:
        return [r[0] for r in self._db.execute("SELECT id FROM articles ORDER BY rowid")]

    def titles(self, prefix: str = "", *, collections: tuple[str, ...] | None = None, limit: int = 25) -> list[tuple[str, str]]:
        where, params = _filter_sql(SearchFilters(collections=collections))
        rows = self._db.execute(
            f"SELECT a.id, a.title FROM articles a WHERE {where} AND a.title LIKE ? ORDER BY a.sort_time DESC LIMIT ?",
            (*params, f"%{prefix}%", limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    def outlets(self, *, collections: tuple[str, ...] | None = None, prefix: str = "", limit: int = 1000) -> list[str]:
        where, params = _filter_sql(SearchFilters(collections=collections))
        rows = self._db.execute(
            f"SELECT a.outlet FROM articles a WHERE {where} AND a.outlet IS NOT NULL AND a.outlet LIKE ? "
            "GROUP BY a.outlet COLLATE NOCASE ORDER BY count(*) DESC, a.outlet LIMIT ?",
            (*params, f"%{prefix}%", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def counts(self) -> StoreCounts:
        articles, chunks, vectors = self._db.execute(
            "SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM chunks), "
            "(SELECT count(*) FROM chunks c JOIN vectors v ON v.model = ? AND v.hash = c.embed_hash)",
            (self.model_name,),
        ).fetchone()
        return StoreCounts(articles, chunks, vectors, len(self.feeds.feeds()))

    def stats(self, filters: SearchFilters | None = None) -> dict:
        where, params = _filter_sql(filters or SearchFilters())
        # Counted in SQL, grouped as `outlets` groups them (ignoring case): a listing would cap the count.
        articles, newest, oldest, outlets = self._db.execute(
            "SELECT count(*), max(a.sort_time), min(a.sort_time), count(DISTINCT a.outlet COLLATE NOCASE) "
            f"FROM articles a WHERE {where}",
            params,
        ).fetchone()
        chunks = self._db.execute(
            f"SELECT count(*) FROM chunks c JOIN articles a ON a.rowid = c.article WHERE {where}", params
        ).fetchone()[0]
        return {
            "articles": articles,
            "chunks": chunks,
            "outlets": outlets,
            "newest": from_timestamp(newest).isoformat() if newest else None,
            "oldest": from_timestamp(oldest).isoformat() if oldest else None,
            "model": self.model_name,
            "backend": self.backend,
            # The kind the next commit keeps or builds, read without loading the index.
            "vector_index": "hnsw" if self._total_chunks() > self.exact_search_max else "exact",
            "generation": self._generation(),
            "data_dir": str(self.dir),
            "disk_bytes": self._disk_bytes(),
        }

    def _total_chunks(self) -> int:
        return self._db.execute("SELECT count(*) FROM chunks").fetchone()[0]

    def _disk_bytes(self) -> int:
        """The database with its WAL, and the committed generation's FAISS file."""
        files = [*self.dir.glob("news.sqlite3*"), self._faiss_path(self._generation())]
        return sum(path.stat().st_size for path in files if path.exists())

    # -- copies --------------------------------------------------------------------------------

    def export_articles(self) -> Iterator[ArticleRecord]:
        last = 0
        while True:
            rows = self._db.execute(
                "SELECT rowid, id, title, text, url, outlet, author, section, language, source, published, fetched, "
                "signature FROM articles WHERE rowid > ? ORDER BY rowid LIMIT 200",
                (last,),
            ).fetchall()
            if not rows:
                return
            yield from (self._record(row) for row in rows)
            last = rows[-1][0]

    def _record(self, row: tuple) -> ArticleRecord:
        rowid, article_id, title, text, url, outlet, author, section, language, source, published, fetched, signature = row
        db = self._db
        collections = tuple(r[0] for r in db.execute(
            "SELECT collection FROM article_collections WHERE article = ? ORDER BY collection", (rowid,)))
        also = tuple(AlsoReported(*r) for r in db.execute(
            "SELECT outlet, url, title FROM also_reported WHERE article = ? ORDER BY outlet", (rowid,)))
        bands = tuple(r[0] for r in db.execute("SELECT band_key FROM lsh WHERE article = ? ORDER BY rowid", (rowid,)))
        chunk_rows = db.execute(
            "SELECT c.ordinal, c.start, c.end, c.embed_hash, v.vector FROM chunks c "
            "JOIN vectors v ON v.model = ? AND v.hash = c.embed_hash WHERE c.article = ? ORDER BY c.ordinal",
            (self.model_name, rowid),
        ).fetchall()
        article = Article(
            id=article_id, title=title, text=text, url=url, outlet=outlet, published=from_timestamp(published),
            fetched=from_timestamp(fetched), language=language, author=author, section=section, source=source or "",
            collection=collections[0],
        )
        return ArticleRecord(
            article=article, collections=collections, also_reported=also,
            fingerprint=Fingerprint(np.frombuffer(signature, dtype=np.uint64), bands),
            chunks=tuple(Chunk(article_id, r[0], text[r[1]:r[2]], r[1], r[2]) for r in chunk_rows),
            embed_keys=tuple(r[3] for r in chunk_rows),
            vectors=np.frombuffer(b"".join(r[4] for r in chunk_rows), dtype=np.float32).reshape(len(chunk_rows), self.dim),
        )

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """Nothing to do: the FAISS index is rebuilt at each commit anyway, so a bulk load commits seldom."""
        yield

    @contextmanager
    def writer(self) -> Iterator[SQLiteWriter]:
        """The single writer: holds the lock file until the block ends; uncommitted work is rolled back."""
        lock = open(self.dir / "write.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StoreError(f"another newsdesk process is writing to {self.dir}; try again when it finishes") from None
        writer = SQLiteWriter(self)
        try:
            if not sqlite_lexicon.is_built(writer.db):
                sqlite_lexicon.build(writer.db, self._total_chunks(), _chunk_texts(writer.db), spill=self.dir)
                writer.db.execute(f"DROP TABLE IF EXISTS {_OLD_FTS5_TABLE}")  # what it was for, the lexicon does
                writer.db.execute("COMMIT")
                writer.db.execute("BEGIN IMMEDIATE")
            yield writer
        finally:
            writer.close()
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def _publish(self, index: faiss.Index, generation: int) -> None:
        with self._index_lock:
            self._index, self._index_generation = index, generation
        self._remove_debris()


# Lookups that run on the reader's connection (before a batch is written) and on the writer's
# (inside its transaction, where its own uncommitted articles count).

def _best_passing(ranked: Callable[[int], list[ScoredChunk]], passes: Callable[[list[int]], set[int]],
                  k: int, *, fetch: int, deepest: int | None = None) -> list[ScoredChunk]:
    """The best `k` of a ranking that pass a filter: rank `fetch` deep, keep what passes, and rank four
    times deeper until k pass, the ranking runs out, or `fetch` reaches `deepest`."""
    while True:
        found = ranked(fetch)
        passing = passes([chunk_id for chunk_id, _ in found])
        kept = [hit for hit in found if hit[0] in passing]
        if len(kept) >= k or len(found) < fetch or (deepest is not None and fetch >= deepest):
            return kept[:k]
        fetch *= 4


def _chunk_texts(db: sqlite3.Connection) -> Iterator[tuple[int, str, str]]:
    """(chunk id, title, passage) of every chunk."""
    rows = db.execute("SELECT c.id, c.start, c.end, a.title, a.text FROM chunks c JOIN articles a ON a.rowid = c.article "
                      "ORDER BY c.article, c.id")
    for chunk_id, start, end, title, text in rows:
        yield chunk_id, title, text[start:end]


def _add_vectors(index: faiss.Index, vectors: np.ndarray, ids: np.ndarray) -> None:
    # With every core: OpenMP keeps a thread's setting, and a thread that answered a question was left
    # at search_threads (the bench built its million-chunk graph on one core after its searches).
    faiss.omp_set_num_threads(os.cpu_count() or 1)
    index.add_with_ids(vectors, ids)


def recorded_model_name(data_dir: str | os.PathLike) -> str | None:
    """The embedding name the index in `data_dir` was built with; None where there is no index yet."""
    path = Path(data_dir) / "news.sqlite3"
    if not path.is_file():
        return None
    db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=30)
    try:
        row = db.execute("SELECT value FROM meta WHERE key='model'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # created, but not yet set up
            return None
        raise StoreError(f"can't read the index in {data_dir}: {exc}") from None
    finally:
        db.close()
    return json.loads(row[0])["name"] if row else None


def _has_article(db: sqlite3.Connection, article_id: str) -> bool:
    return db.execute("SELECT 1 FROM articles WHERE id = ?", (article_id,)).fetchone() is not None


def _find_same_text(db: sqlite3.Connection, content_hash: str) -> str | None:
    row = db.execute("SELECT id FROM articles WHERE content_hash = ?", (content_hash,)).fetchone()
    return row[0] if row else None


def _find_near_duplicate(db: sqlite3.Connection, fingerprint: Fingerprint, threshold: float) -> str | None:
    marks = ",".join("?" * len(fingerprint.bands))
    rows = db.execute(
        f"SELECT a.id, a.signature FROM articles a WHERE a.rowid IN (SELECT article FROM lsh WHERE band_key IN ({marks})) "
        "ORDER BY a.rowid",
        fingerprint.bands,
    )
    return fingerprint.best_match(((article_id, np.frombuffer(blob, dtype=np.uint64)) for article_id, blob in rows),
                                  threshold)


def _stored_vectors(db: sqlite3.Connection, model_name: str, embed_keys: Iterable[str]) -> dict[str, bytes]:
    """The cached vectors among `embed_keys`, looked up in batches rather than one query per chunk."""
    found: dict[str, bytes] = {}
    for part, marks in in_batches(list(dict.fromkeys(embed_keys))):
        found.update(db.execute(
            f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN ({marks})", (model_name, *part)
        ).fetchall())
    return found


class SQLiteWriter:
    """Adds and removes articles inside one open transaction; `commit` makes a batch visible."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.db = store._connect()
        self.db.execute("BEGIN IMMEDIATE")
        self._pending: list[tuple[int, np.ndarray]] = []  # (chunk id, vector) for the next FAISS generation
        self._unposted: list[tuple[int, str, str]] = []  # (chunk id, title, passage) for the BM25 postings
        self._removed = False
        self._announcements: list[Announcement] = []

    def _rowid(self, article_id: str) -> int | None:
        row = self.db.execute("SELECT rowid FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row[0] if row else None

    def has_article(self, article_id: str) -> bool:
        return _has_article(self.db, article_id)

    def find_same_text(self, content_hash: str) -> str | None:
        return _find_same_text(self.db, content_hash)

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> str | None:
        return _find_near_duplicate(self.db, fingerprint, threshold)

    def add_collection(self, article_id: str, collection: str) -> bool:
        rowid = self._rowid(article_id)
        if rowid is None:
            return False
        cursor = self.db.execute("INSERT OR IGNORE INTO article_collections VALUES (?, ?)", (rowid, collection))
        return cursor.rowcount > 0

    def add_also_reported(self, article_id: str, article: Article) -> None:
        row = self.db.execute("SELECT rowid, outlet FROM articles WHERE id = ?", (article_id,)).fetchone()
        if row and article.outlet and (row[1] or "").casefold() != article.outlet.casefold():
            self.db.execute(
                "INSERT OR IGNORE INTO also_reported VALUES (?, ?, ?, ?)", (row[0], article.outlet, article.url, article.title)
            )

    def add_article(self, article: Article, chunks: Sequence[Chunk], fingerprint: Fingerprint,
                    embed_keys: Sequence[str], vectors: np.ndarray) -> bool:
        return self._insert(article, (article.collection,), (), fingerprint, chunks, embed_keys, vectors)

    def add_announcement(self, announcement: Announcement) -> None:
        self._announcements.append(announcement)  # queued in the state file once the articles are committed

    def import_article(self, record: ArticleRecord) -> bool:
        return self._insert(record.article, record.collections, record.also_reported, record.fingerprint,
                            record.chunks, record.embed_keys, record.vectors)

    def _insert(self, article: Article, collections: Sequence[str], also: Sequence[AlsoReported],
                fingerprint: Fingerprint, chunks: Sequence[Chunk], embed_keys: Sequence[str], vectors: np.ndarray) -> bool:
        if not (len(chunks) == len(embed_keys) == len(vectors)) or vectors.shape[1:] != (self.store.dim,):
            raise ValueError(f"{article.id}: expected one vector of {self.store.dim} per chunk, got {vectors.shape}")
        if self._rowid(article.id) is not None:
            return False
        sort_time = article.published or article.fetched
        rowid = self.db.execute(
            "INSERT INTO articles (id, title, text, url, outlet, author, section, language, source, published, "
            "fetched, sort_time, content_hash, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                article.id, article.title, article.text, article.url, article.outlet, article.author, article.section,
                article.language, article.source, _ts(article.published), _ts(article.fetched), sort_time.timestamp(),
                article.content_hash, np.asarray(fingerprint.signature, dtype=np.uint64).tobytes(),
            ),
        ).lastrowid
        self.db.executemany("INSERT INTO article_collections VALUES (?, ?)", [(rowid, c) for c in collections])
        self.db.executemany("INSERT INTO also_reported VALUES (?, ?, ?, ?)",
                            [(rowid, a.outlet, a.url, a.title) for a in also])
        self.db.executemany("INSERT INTO lsh VALUES (?, ?)", [(key, rowid) for key in fingerprint.bands])
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        self.db.executemany(
            "INSERT OR IGNORE INTO vectors VALUES (?, ?, ?)",
            [(self.store.model_name, key, vector.tobytes()) for key, vector in zip(embed_keys, vectors)],
        )
        for chunk, key, vector in zip(chunks, embed_keys, vectors):
            chunk_id = self.db.execute(
                "INSERT INTO chunks (article, ordinal, start, end, embed_hash) VALUES (?,?,?,?,?)",
                (rowid, chunk.ordinal, chunk.start, chunk.end, key),
            ).lastrowid
            self._pending.append((chunk_id, vector))
            self._unposted.append((chunk_id, article.title, chunk.text))
        return True

    def _post(self) -> None:
        """The BM25 postings of the chunks added since the last call: posted a batch at a time, as
        each posting costs less in a batch (its term's counts are updated once per batch)."""
        sqlite_lexicon.add(self.db, self._unposted)
        self._unposted.clear()

    def remove_articles(self, *, article_id: str | None = None, before: datetime | None = None,
                        collections: tuple[str, ...] | None = None) -> list[str]:
        if article_id is None and before is None and collections is None:
            raise ValueError("say which articles to remove: an id, an age or collections")
        if article_id is not None and not article_id.strip():
            raise ValueError("an article id cannot be blank")
        clauses, params = ["1"], []
        if article_id is not None:
            clauses.append("a.id = ?")
            params.append(article_id)
        if before is not None:
            clauses.append("a.sort_time < ?")
            params.append(before.timestamp())
        if collections is not None:
            scope, scope_params = _filter_sql(SearchFilters(collections=collections))
            clauses.append(scope)
            params += scope_params
        self._post()  # an article added in this batch may be among those removed
        rows = self.db.execute(f"SELECT a.rowid, a.id FROM articles a WHERE {' AND '.join(clauses)}", params).fetchall()
        doomed = [r[0] for r in rows]
        if collections is not None:
            doomed = self._leave_collections(doomed, collections)
        # Once for all the chunks: each call rewrites the packed postings of every term they hold.
        sqlite_lexicon.remove(self.db, [r[0] for part, marks in in_batches(doomed) for r in self.db.execute(
            f"SELECT id FROM chunks WHERE article IN ({marks})", part)])
        for part, marks in in_batches(doomed):
            self.db.execute(f"DELETE FROM articles WHERE rowid IN ({marks})", part)
        if doomed:
            self._removed = True
        return [r[1] for r in rows]

    def _leave_collections(self, rowids: list[int], collections: tuple[str, ...]) -> list[int]:
        """Take the articles out of `collections`; returns those no collection holds any more."""
        names = ",".join("?" * len(collections)) or "NULL"
        orphans = []
        for part, marks in in_batches(rowids):
            self.db.execute(
                f"DELETE FROM article_collections WHERE collection IN ({names}) AND article IN ({marks})",
                [*collections, *part],
            )
            held = {r[0] for r in self.db.execute(
                f"SELECT DISTINCT article FROM article_collections WHERE article IN ({marks})", part
            )}
            orphans += [rowid for rowid in part if rowid not in held]
        return orphans

    def commit(self) -> None:
        """Write the next FAISS generation, then commit SQLite naming it. Readers switch at once."""
        self._commit()
        for announcement in self._announcements:
            self.store.outbox.add(announcement)
        self._announcements.clear()

    def _commit(self) -> None:
        self._post()
        store = self.store
        if not self._pending and not self._removed:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN IMMEDIATE")
            return
        generation = store._generation(self.db) + 1
        rebuild = self._removed  # a removal rebuilds from SQLite: the loaded index is not needed
        if not rebuild:
            current = store._vector_index()
            total = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            rebuild = (total > store.exact_search_max) != store._is_approximate(current)
        if rebuild:
            index = store._build_index(self.db)
        else:
            index = faiss.clone_index(current)
            store._tune(index)
            ids = np.array([chunk_id for chunk_id, _ in self._pending], dtype=np.int64)
            _add_vectors(index, np.stack([vector for _, vector in self._pending]), ids)
        path = store._faiss_path(generation)
        tmp = path.with_suffix(".faiss.tmp")
        faiss.write_index(index, str(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
        self.db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation),))
        self.db.execute("COMMIT")
        self._pending.clear()
        self._removed = False
        store._publish(index, generation)
        self.db.execute("BEGIN IMMEDIATE")

    def close(self) -> None:
        if self.db.in_transaction:
            self.db.execute("ROLLBACK")
        self.db.close()

"""Articles and chunks in SQLite, their vectors in FAISS, kept in step by one atomic commit.

SQLite is the source of truth: it holds articles, chunks, the BM25 postings (FTS5) and every
vector (the embedding cache). The FAISS file is derived data, written under a new generation
number before the SQLite transaction that names that generation commits. A crash at any moment
therefore leaves either the old generation or the new one; a FAISS file that SQLite does not name
is debris and is deleted on open (unless a writer is at work: then it may be that writer's next
generation), and a missing or stale one is rebuilt from the stored vectors.

One writer at a time (a lock file guards it across processes); readers use their own
connections in WAL mode and never see a half-written batch.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import faiss
import numpy as np

from index.article import Article, ArticleMeta, Chunk, content_hash
from index.dedup import Fingerprint

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
_BIND_BATCH = 900  # values bound per statement: SQLite's default limit is 999


def _in_batches(values: list) -> Iterator[tuple[list, str]]:
    """`values` in slices small enough to bind, each with its "?,?,…" placeholder list."""
    for start in range(0, len(values), _BIND_BATCH):
        part = values[start : start + _BIND_BATCH]
        yield part, ",".join("?" * len(part))

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
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(title, body, tokenize = 'porter unicode61');
CREATE TABLE IF NOT EXISTS vectors (
    model TEXT NOT NULL, hash TEXT NOT NULL, vector BLOB NOT NULL,
    PRIMARY KEY (model, hash)
) WITHOUT ROWID;
"""


class StoreError(RuntimeError):
    """The data folder cannot be used (locked by another writer, another model, unreadable)."""


@dataclass(frozen=True)
class StoredChunk:
    id: int
    article_rowid: int
    start: int
    end: int


def _ts(value: datetime | None) -> float | None:
    return value.timestamp() if value else None


def _dt(value: float | None) -> datetime | None:
    return datetime.fromtimestamp(value, timezone.utc) if value is not None else None


class NewsStore:
    """The index on disk: open it once per process and share it between threads."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        model_name: str,
        dim: int,
        exact_search_max: int = 200_000,
        hnsw_m: int = 32,
        hnsw_ef_search: int = 256,
    ) -> None:
        if dim < 1:
            raise ValueError("dim must be positive")
        self.dir = Path(data_dir)
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"can't create the data folder {self.dir}: {exc.strerror}") from None
        self.model_name, self.dim = model_name, dim
        self.exact_search_max, self.hnsw_m, self.hnsw_ef_search = exact_search_max, hnsw_m, hnsw_ef_search
        self._local = threading.local()
        self._index_lock = threading.Lock()
        self._index: faiss.Index | None = None
        self._index_generation = -1
        with self._connect() as db:
            db.executescript(_SCHEMA)
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
    def db(self) -> sqlite3.Connection:
        """This thread's reader connection."""
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = self._connect()
        return db

    def _check_model(self, db: sqlite3.Connection) -> None:
        row = db.execute("SELECT value FROM meta WHERE key='model'").fetchone()
        wanted = json.dumps({"name": self.model_name, "dim": self.dim, "schema": SCHEMA_VERSION})
        if row is None:
            db.execute("INSERT INTO meta VALUES ('model', ?), ('generation', '0')", (wanted,))
        elif row[0] != wanted:
            raise StoreError(
                f"{self.dir} was built with {row[0]}, not {wanted}; use another [index] dir or re-ingest"
            )

    def generation(self, db: sqlite3.Connection | None = None) -> int:
        return int((db or self.db).execute("SELECT value FROM meta WHERE key='generation'").fetchone()[0])

    def _faiss_path(self, generation: int) -> Path:
        return self.dir / f"vectors-{generation}.faiss"

    def _remove_debris(self) -> None:
        """Delete the FAISS files SQLite does not name. Only with the write lock held: a writer's
        next generation is not named until its commit, and is not debris while it is at work."""
        current = self._faiss_path(self.generation()).name
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

    # -- the vector index ----------------------------------------------------------------------

    def vector_index(self) -> faiss.Index:
        """The FAISS index of the committed generation; reloaded when another process wrote."""
        generation = self.generation()
        with self._index_lock:
            if self._index is None or self._index_generation != generation:
                self._index = self._load_index(generation)
                self._index_generation = generation
            return self._index

    def _load_index(self, generation: int) -> faiss.Index:
        path = self._faiss_path(generation)
        expected = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
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
        return self._build_index(self.db)

    def _build_index(self, db: sqlite3.Connection) -> faiss.Index:
        ids, vectors = self._all_vectors(db)
        index = self._empty_index(len(ids))
        if len(ids):
            index.add_with_ids(vectors, ids)
        return index

    def _empty_index(self, size: int) -> faiss.Index:
        if size > self.exact_search_max:
            inner = faiss.IndexHNSWFlat(self.dim, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            inner.hnsw.efConstruction = 80
        else:
            inner = faiss.IndexFlatIP(self.dim)
        index = faiss.IndexIDMap2(inner)
        self._tune(index)
        return index

    def _tune(self, index: faiss.Index) -> None:
        inner = faiss.downcast_index(index.index) if isinstance(index, faiss.IndexIDMap2) else index
        if isinstance(inner, faiss.IndexHNSW):
            inner.hnsw.efSearch = self.hnsw_ef_search

    def is_approximate(self, index: faiss.Index) -> bool:
        return isinstance(faiss.downcast_index(index.index), faiss.IndexHNSW)

    def _all_vectors(self, db: sqlite3.Connection) -> tuple[np.ndarray, np.ndarray]:
        rows = db.execute(
            "SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.model=? AND v.hash=c.embed_hash ORDER BY c.id",
            (self.model_name,),
        ).fetchall()
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vectors = np.frombuffer(b"".join(r[1] for r in rows), dtype=np.float32).reshape(len(rows), self.dim)
        return ids, np.ascontiguousarray(vectors)

    def vectors_for(self, chunk_ids: Iterable[int]) -> tuple[np.ndarray, np.ndarray]:
        """Stored vectors of the given chunks, for exact search over a filtered subset."""
        ids = [int(i) for i in chunk_ids]  # SQLite takes no numpy integers
        out_ids, out_vecs = [], []
        for part, marks in _in_batches(ids):
            rows = self.db.execute(
                f"SELECT c.id, v.vector FROM chunks c JOIN vectors v ON v.model=? AND v.hash=c.embed_hash "
                f"WHERE c.id IN ({marks})",
                (self.model_name, *part),
            ).fetchall()
            out_ids += [r[0] for r in rows]
            out_vecs += [r[1] for r in rows]
        vectors = np.frombuffer(b"".join(out_vecs), dtype=np.float32).reshape(len(out_ids), self.dim)
        return np.array(out_ids, dtype=np.int64), vectors

    # -- reads ---------------------------------------------------------------------------------

    _META_COLUMNS = "a.rowid, a.id, a.title, a.outlet, a.url, a.published, a.fetched, a.language, a.sort_time"

    def _metas(self, rows: list[tuple]) -> dict[int, ArticleMeta]:
        if not rows:
            return {}
        rowids = [r[0] for r in rows]
        also: dict[int, list[str]] = {}
        for part, marks in _in_batches(rowids):
            for article, outlet in self.db.execute(
                f"SELECT article, outlet FROM also_reported WHERE article IN ({marks}) "
                "ORDER BY outlet",
                part,
            ):
                also.setdefault(article, []).append(outlet)
        return {
            r[0]: ArticleMeta(
                id=r[1], title=r[2], outlet=r[3], url=r[4], published=_dt(r[5]), fetched=_dt(r[6]),
                language=r[7], sort_time=_dt(r[8]), also_reported_by=tuple(also.get(r[0], ())),
            )
            for r in rows
        }

    def chunks_with_articles(self, chunk_ids: list[int]) -> dict[int, tuple[StoredChunk, ArticleMeta, str]]:
        """For each chunk id still present: the chunk, its article's metadata and the article text."""
        out: dict[int, tuple[StoredChunk, ArticleMeta, str]] = {}
        for part, marks in _in_batches([int(i) for i in chunk_ids]):
            rows = self.db.execute(
                f"SELECT c.id, c.article, c.start, c.end, {self._META_COLUMNS}, a.text "
                f"FROM chunks c JOIN articles a ON a.rowid = c.article WHERE c.id IN ({marks})",
                part,
            ).fetchall()
            metas = self._metas([r[4:13] for r in rows])
            for r in rows:
                out[r[0]] = (StoredChunk(r[0], r[1], r[2], r[3]), metas[r[1]], r[13])
        return out

    def has_article(self, article_id: str) -> bool:
        return self.db.execute("SELECT 1 FROM articles WHERE id = ?", (article_id,)).fetchone() is not None

    def article(
        self, article_id: str, *, collections: tuple[str, ...] | None = None
    ) -> tuple[ArticleMeta, str] | None:
        """The article with its text, or None; with `collections`, None unless one of them holds it."""
        where, params = self.filter_sql(collections=collections)
        row = self.db.execute(
            f"SELECT {self._META_COLUMNS}, a.text FROM articles a WHERE a.id = ? AND {where}", (article_id, *params)
        ).fetchone()
        if row is None:
            return None
        return self._metas([row[:9]])[row[0]], row[9]

    def articles_between(
        self, since: datetime | None, until: datetime | None, collections: tuple[str, ...] | None, limit: int = 500
    ) -> list[tuple[ArticleMeta, str, int]]:
        """Articles in a time window, newest first, with their text and rowid."""
        where, params = self.filter_sql(since=since, until=until, collections=collections)
        rows = self.db.execute(
            f"SELECT {self._META_COLUMNS}, a.text FROM articles a WHERE {where} ORDER BY a.sort_time DESC LIMIT ?",
            (*params, limit),
        ).fetchall()
        metas = self._metas([r[:9] for r in rows])
        return [(metas[r[0]], r[9], r[0]) for r in rows]

    def first_chunk_ids(self, article_rowids: list[int]) -> dict[int, int]:
        out = {}
        for part, marks in _in_batches(article_rowids):
            out.update(
                self.db.execute(
                    f"SELECT article, min(id) FROM chunks WHERE article IN ({marks}) GROUP BY article",
                    part,
                ).fetchall()
            )
        return out

    @staticmethod
    def filter_sql(
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        outlets: tuple[str, ...] = (),
        collections: tuple[str, ...] | None = None,
        article_id: str | None = None,
    ) -> tuple[str, list]:
        """A WHERE clause over `articles a` for the given filters."""
        clauses, params = ["1"], []
        if since:
            clauses.append("a.sort_time >= ?")
            params.append(since.timestamp())
        if until:
            clauses.append("a.sort_time < ?")
            params.append(until.timestamp())
        if outlets:
            # An outlet matches the article's own outlet or one that also reported it.
            marks = ",".join("?" * len(outlets))
            clauses.append(
                f"(a.outlet COLLATE NOCASE IN ({marks}) OR a.rowid IN "
                f"(SELECT article FROM also_reported WHERE outlet COLLATE NOCASE IN ({marks})))"
            )
            params += [*outlets, *outlets]
        if collections is not None:
            marks = ",".join("?" * len(collections)) or "NULL"
            clauses.append(f"a.rowid IN (SELECT article FROM article_collections WHERE collection IN ({marks}))")
            params += list(collections)
        if article_id:
            clauses.append("a.id = ?")
            params.append(article_id)
        return " AND ".join(clauses), params

    def chunk_ids_where(self, where: str, params: list, limit: int, *, reuse: bool = False) -> np.ndarray | None:
        """Chunk ids (int64) of the articles matching a filter, or None if there are more than `limit`.

        With `reuse`, the answer is kept per reader connection until a writer commits (SQLite's
        data_version tells): Discord asks every question of a server with the same collection
        filter, and listing up to `limit` rows to learn that cost 20 ms of a 60 ms question (bench).
        """
        db = self.db
        cache: dict = self._local.__dict__.setdefault("allowed_ids", {})
        key = (where, tuple(params), limit)
        version = db.execute("PRAGMA data_version").fetchone()[0] if reuse else None
        cached = cache.get(key) if reuse else None
        if cached is not None and cached[0] == version:
            return cached[1]
        rows = db.execute(
            f"SELECT c.id FROM chunks c JOIN articles a ON a.rowid = c.article WHERE {where} LIMIT ?",
            (*params, limit + 1),
        ).fetchall()
        # An array, not a list of ints: a kept answer of 20,000 ids is 160 kB, not 720 kB.
        found = None if len(rows) > limit else np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if reuse:
            if len(cache) >= 32:
                cache.clear()
            cache[key] = (version, found)
        return found

    def lexical_search(self, match: str, k: int, where: str = "1", params: list | None = None) -> list[tuple[int, float]]:
        """BM25 over chunk bodies and titles (FTS5); higher is better."""
        sql = (
            "SELECT f.rowid, -bm25(chunks_fts, 0.5, 1.0) AS s FROM chunks_fts f "
            "JOIN chunks c ON c.id = f.rowid JOIN articles a ON a.rowid = c.article "
            f"WHERE chunks_fts MATCH ? AND {where} ORDER BY bm25(chunks_fts, 0.5, 1.0) LIMIT ?"
        )
        try:
            return self.db.execute(sql, (match, *(params or []), k)).fetchall()
        except sqlite3.OperationalError as exc:
            log.debug("FTS query %r failed: %s", match, exc)
            return []

    def counts(self) -> tuple[int, int]:
        row = self.db.execute("SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM chunks)").fetchone()
        return row[0], row[1]

    def stats(self, collections: tuple[str, ...] | None = None) -> dict:
        where, params = self.filter_sql(collections=collections)
        # Counted in SQL, grouped as `outlets` groups them (ignoring case): a listing would cap the count.
        articles, newest, oldest, outlets = self.db.execute(
            "SELECT count(*), max(a.sort_time), min(a.sort_time), count(DISTINCT a.outlet COLLATE NOCASE) "
            f"FROM articles a WHERE {where}",
            params,
        ).fetchone()
        chunks = self.db.execute(
            f"SELECT count(*) FROM chunks c JOIN articles a ON a.rowid = c.article WHERE {where}", params
        ).fetchone()[0]
        return {
            "articles": articles,
            "chunks": chunks,
            "outlets": outlets,
            "newest": _dt(newest).isoformat() if newest else None,
            "oldest": _dt(oldest).isoformat() if oldest else None,
            "model": self.model_name,
            "generation": self.generation(),
            "data_dir": str(self.dir),
        }

    def outlets(self, *, collections: tuple[str, ...] | None = None, prefix: str = "", limit: int = 1000) -> list[str]:
        where, params = self.filter_sql(collections=collections)
        rows = self.db.execute(
            f"SELECT a.outlet FROM articles a WHERE {where} AND a.outlet IS NOT NULL AND a.outlet LIKE ? "
            "GROUP BY a.outlet COLLATE NOCASE ORDER BY count(*) DESC, a.outlet LIMIT ?",
            (*params, f"%{prefix}%", limit),
        ).fetchall()
        return [r[0] for r in rows]

    def titles(self, prefix: str = "", *, collections: tuple[str, ...] | None = None, limit: int = 25) -> list[tuple[str, str]]:
        where, params = self.filter_sql(collections=collections)
        rows = self.db.execute(
            f"SELECT a.id, a.title FROM articles a WHERE {where} AND a.title LIKE ? ORDER BY a.sort_time DESC LIMIT ?",
            (*params, f"%{prefix}%", limit),
        ).fetchall()
        return [(r[0], r[1]) for r in rows]

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def writer(self) -> Iterator[StoreWriter]:
        """The single writer: holds the lock file until the block ends; uncommitted work is rolled back."""
        lock = open(self.dir / "write.lock", "w")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            raise StoreError(f"another newsdesk process is writing to {self.dir}; try again when it finishes") from None
        writer = StoreWriter(self)
        try:
            yield writer
        finally:
            writer.close()
            fcntl.flock(lock, fcntl.LOCK_UN)
            lock.close()

    def _publish(self, index: faiss.Index, generation: int) -> None:
        with self._index_lock:
            self._index, self._index_generation = index, generation
        self._remove_debris()


class StoreWriter:
    """Adds and removes articles inside one open transaction; `commit` makes a batch visible."""

    def __init__(self, store: NewsStore) -> None:
        self.store = store
        self.db = store._connect()
        self.db.execute("BEGIN IMMEDIATE")
        self._pending: list[tuple[int, str, str]] = []  # (chunk id, embed hash, text to embed)
        self._removed = False

    @property
    def pending_chunks(self) -> int:
        return len(self._pending)

    def find_article(self, article_id: str) -> int | None:
        row = self.db.execute("SELECT rowid FROM articles WHERE id = ?", (article_id,)).fetchone()
        return row[0] if row else None

    def find_same_text(self, content_hash: str) -> int | None:
        row = self.db.execute("SELECT rowid FROM articles WHERE content_hash = ?", (content_hash,)).fetchone()
        return row[0] if row else None

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> int | None:
        marks = ",".join("?" * len(fingerprint.bands))
        candidates = [
            r[0] for r in self.db.execute(f"SELECT DISTINCT article FROM lsh WHERE band_key IN ({marks})", fingerprint.bands)
        ]
        best, best_score = None, threshold
        for rowid in candidates:
            blob = self.db.execute("SELECT signature FROM articles WHERE rowid = ?", (rowid,)).fetchone()[0]
            score = fingerprint.similarity(np.frombuffer(blob, dtype=np.uint64))
            if score >= best_score:
                best, best_score = rowid, score
        return best

    def article_id_of(self, rowid: int) -> str:
        return self.db.execute("SELECT id FROM articles WHERE rowid = ?", (rowid,)).fetchone()[0]

    def add_collection(self, rowid: int, collection: str) -> bool:
        """Make an existing article visible to another collection; True if it was not already."""
        cursor = self.db.execute("INSERT OR IGNORE INTO article_collections VALUES (?, ?)", (rowid, collection))
        return cursor.rowcount > 0

    def add_also_reported(self, rowid: int, article: Article) -> None:
        """Record another outlet that carried the story (an outlet's own reprint is not news)."""
        own = self.db.execute("SELECT outlet FROM articles WHERE rowid = ?", (rowid,)).fetchone()[0]
        if article.outlet and (own or "").casefold() != article.outlet.casefold():
            self.db.execute(
                "INSERT OR IGNORE INTO also_reported VALUES (?, ?, ?, ?) ",
                (rowid, article.outlet, article.url, article.title),
            )

    def add_article(self, article: Article, chunks: list[Chunk], fingerprint: Fingerprint, embed_texts: list[str]) -> int:
        sort_time = article.published or article.fetched
        cursor = self.db.execute(
            "INSERT INTO articles (id, title, text, url, outlet, author, section, language, source, published, "
            "fetched, sort_time, content_hash, signature) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                article.id, article.title, article.text, article.url, article.outlet, article.author, article.section,
                article.language, article.source, _ts(article.published), _ts(article.fetched), sort_time.timestamp(),
                article.content_hash, fingerprint.signature.astype(np.uint64).tobytes(),
            ),
        )
        rowid = cursor.lastrowid
        self.db.execute("INSERT INTO article_collections VALUES (?, ?)", (rowid, article.collection))
        self.db.executemany("INSERT INTO lsh VALUES (?, ?)", [(key, rowid) for key in fingerprint.bands])
        for chunk, embed_text in zip(chunks, embed_texts, strict=True):
            embed_hash = content_hash(self.store.model_name + "\x00" + embed_text)
            chunk_id = self.db.execute(
                "INSERT INTO chunks (article, ordinal, start, end, embed_hash) VALUES (?,?,?,?,?)",
                (rowid, chunk.ordinal, chunk.start, chunk.end, embed_hash),
            ).lastrowid
            self.db.execute("INSERT INTO chunks_fts (rowid, title, body) VALUES (?, ?, ?)", (chunk_id, article.title, chunk.text))
            self._pending.append((chunk_id, embed_hash, embed_text))
        return rowid

    def remove_articles(self, where: str, params: list, *, collections: tuple[str, ...] | None = None) -> list[str]:
        """Delete the matching articles with their chunks, postings and LSH keys; returns their ids.

        With `collections` (a server's own), only articles they hold match, and they leave those
        collections only: one that the shared collection or another server also holds (the same
        story added twice is stored once) stays for them, and is deleted only when no collection
        holds it any more.
        """
        if collections is not None:
            scope, scope_params = self.store.filter_sql(collections=collections)
            where, params = f"({where}) AND {scope}", [*params, *scope_params]
        rows = self.db.execute(f"SELECT a.rowid, a.id FROM articles a WHERE {where}", params).fetchall()
        doomed = [r[0] for r in rows]
        if collections is not None:
            doomed = self._leave_collections(doomed, collections)
        for part, marks in _in_batches(doomed):
            self.db.execute(
                f"DELETE FROM chunks_fts WHERE rowid IN (SELECT id FROM chunks WHERE article IN ({marks}))", part
            )
            self.db.execute(f"DELETE FROM articles WHERE rowid IN ({marks})", part)
        if doomed:
            self._removed = True
        return [r[1] for r in rows]

    def _leave_collections(self, rowids: list[int], collections: tuple[str, ...]) -> list[int]:
        """Take the articles out of `collections`; returns those no collection holds any more."""
        names = ",".join("?" * len(collections)) or "NULL"
        orphans = []
        for part, marks in _in_batches(rowids):
            self.db.execute(
                f"DELETE FROM article_collections WHERE collection IN ({names}) AND article IN ({marks})",
                [*collections, *part],
            )
            held = {r[0] for r in self.db.execute(
                f"SELECT DISTINCT article FROM article_collections WHERE article IN ({marks})", part
            )}
            orphans += [rowid for rowid in part if rowid not in held]
        return orphans

    def _stored_vectors(self, hashes: Iterable[str]) -> dict[str, bytes]:
        """The cached vectors among `hashes`, looked up in batches rather than one query per chunk."""
        wanted = list(dict.fromkeys(hashes))
        found: dict[str, bytes] = {}
        for part, marks in _in_batches(wanted):
            found.update(
                self.db.execute(
                    f"SELECT hash, vector FROM vectors WHERE model = ? AND hash IN ({marks})",
                    (self.store.model_name, *part),
                ).fetchall()
            )
        return found

    def missing_vectors(self) -> list[tuple[str, str]]:
        """(hash, text) of pending chunks whose vector is not cached yet, each hash once."""
        cached = self._stored_vectors(h for _, h, _ in self._pending)
        texts = {embed_hash: text for _, embed_hash, text in self._pending if embed_hash not in cached}
        return list(texts.items())

    def put_vectors(self, hashes: list[str], vectors: np.ndarray) -> None:
        if vectors.shape != (len(hashes), self.store.dim):
            raise ValueError(f"expected {len(hashes)} vectors of {self.store.dim}, got {vectors.shape}")
        self.db.executemany(
            "INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
            [(self.store.model_name, h, np.asarray(v, dtype=np.float32).tobytes()) for h, v in zip(hashes, vectors)],
        )

    def commit(self) -> None:
        """Write the next FAISS generation, then commit SQLite naming it. Readers switch at once."""
        store = self.store
        if not self._pending and not self._removed:
            self.db.execute("COMMIT")
            self.db.execute("BEGIN IMMEDIATE")
            return
        generation = store.generation(self.db) + 1
        rebuild = self._removed  # a removal rebuilds from SQLite: the loaded index is not needed
        if not rebuild:
            current = store.vector_index()
            total = self.db.execute("SELECT count(*) FROM chunks").fetchone()[0]
            rebuild = (total > store.exact_search_max) != store.is_approximate(current)
        if rebuild:
            index = store._build_index(self.db)
        else:
            index = faiss.clone_index(current)
            store._tune(index)
            ids = np.array([p[0] for p in self._pending], dtype=np.int64)
            stored = self._stored_vectors(h for _, h, _ in self._pending)
            if any(h not in stored for _, h, _ in self._pending):
                raise StoreError("a chunk has no vector; call put_vectors before commit")
            vectors = np.frombuffer(b"".join(stored[h] for _, h, _ in self._pending), dtype=np.float32)
            vectors = vectors.reshape(len(ids), store.dim)
            index.add_with_ids(vectors, ids)
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

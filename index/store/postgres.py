"""The server backend: PostgreSQL with pgvector, shared by any number of newsdesk processes.

Vectors live in a pgvector column with an HNSW index, searched with the filters in the same query
(pgvector 0.8's iterative index scans keep a narrow filter from starving the results; a filter too
narrow even for that is searched exactly). Lexical search is PostgreSQL's full text search (a GIN
index over English lexemes) ranked by BM25 as FTS5 computes it, from lexeme statistics that
triggers keep beside the chunks. Writers serialise on one advisory lock per transaction, so that
two processes ingesting the same story at once store it once; the model runs before that lock is
taken (index.ingest), so the lock is held for the inserts only.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime

import numpy as np
import psycopg
from psycopg.pq import TransactionStatus

from index.article import Article, ArticleMeta, Chunk
from index.dedup import Fingerprint
from index.store.postgres_db import Database
from index.store.postgres_feeds import PostgresFeedRegistry, PostgresFollowRegistry, PostgresOutbox, queue_announcement
from index.store.postgres_schema import (
    BM25_TITLE_WEIGHT, CHAMPIONS, TEXT_SEARCH_CONFIG, VECTOR_INDEX, bm25_impact, check_schema,
)
from index.store.types import (
    AlsoReported, Announcement, ArticleRecord, ScoredChunk, SearchFilters, StoreCounts, StoredChunk, StoreError,
    StoreSettings,
)

_WRITE_LOCK = 0x6E657773  # pg_advisory_xact_lock's first key ("news"); the schema's hash is the second
_WORD = re.compile(r"[^\W_]+")  # a word as FTS5's unicode61 tokenizer cuts it: "_" separates
_BATCH = 500
# A lexical search scores every chunk with a query word up to this many such chunks (measured: 5,000
# cost about 30 ms), and each word's champions past it.
log = logging.getLogger(__name__)

EXACT_POSTINGS = 5000
_CHUNKS_PER_STATEMENT = 2000
_TABLES = ("articles", "article_collections", "also_reported", "lsh", "chunks", "lexeme_stats", "lexeme_champions",
           "corpus_stats", "feeds", "digests", "announcements", "follows", "channel_posts", "newsdesk_meta")


def _filter_sql(filters: SearchFilters, *, per_row: bool = False) -> tuple[str, list]:
    """A condition over `articles a` for the filters.

    The planner may turn the collection and outlet conditions into a join that starts from every
    article of the collection, which is right for a narrow filter. With `per_row`, for a query that
    starts from a few candidate chunks, they are checked per article instead (OFFSET 0 keeps the
    planner from turning them around: 1.6 s against 20 ms for a search over 60,000 articles, bench)."""
    keep = " OFFSET 0" if per_row else ""
    clauses, params = ["TRUE"], []
    if filters.since:
        clauses.append("a.sort_time >= %s")
        params.append(filters.since)
    if filters.until:
        clauses.append("a.sort_time < %s")
        params.append(filters.until)
    if filters.outlets:
        # An outlet matches the article's own outlet or one that also reported it, in any case.
        lowered = [outlet.lower() for outlet in filters.outlets]
        clauses.append("(lower(a.outlet) = ANY(%s) OR EXISTS (SELECT 1 FROM also_reported r "
                       f"WHERE r.article = a.pk AND lower(r.outlet) = ANY(%s){keep}))")
        params += [lowered, lowered]
    if filters.collections is not None:
        clauses.append("EXISTS (SELECT 1 FROM article_collections ac WHERE ac.article = a.pk "
                       f"AND ac.collection = ANY(%s){keep})")
        params.append(list(filters.collections))
    if filters.article_id is not None:
        clauses.append("a.id = %s")
        params.append(filters.article_id)
    return " AND ".join(clauses), params


_META = "a.pk, a.id, a.title, a.outlet, a.url, a.published, a.fetched, a.language, a.sort_time"


def _metas(conn: psycopg.Connection, rows: list[tuple]) -> dict[int, ArticleMeta]:
    """ArticleMeta by article pk for rows that start with the _META columns."""
    if not rows:
        return {}
    also: dict[int, list[str]] = {}
    for article, outlet in conn.execute(
        "SELECT article, outlet FROM also_reported WHERE article = ANY(%s) ORDER BY outlet", ([r[0] for r in rows],)
    ):
        also.setdefault(article, []).append(outlet)
    return {
        r[0]: ArticleMeta(id=r[1], title=r[2], outlet=r[3], url=r[4], published=r[5], fetched=r[6], language=r[7],
                          sort_time=r[8], also_reported_by=tuple(also.get(r[0], ())))
        for r in rows
    }


# Lookups shared by the store (a read before a batch is written) and the writer (inside its transaction).

def _has_article(conn: psycopg.Connection, article_id: str) -> bool:
    return conn.execute("SELECT 1 FROM articles WHERE id = %s", (article_id,)).fetchone() is not None


def _find_same_text(conn: psycopg.Connection, content_hash: str) -> str | None:
    row = conn.execute("SELECT id FROM articles WHERE content_hash = %s ORDER BY pk LIMIT 1", (content_hash,)).fetchone()
    return row[0] if row else None


def _find_near_duplicate(conn: psycopg.Connection, fingerprint: Fingerprint, threshold: float) -> str | None:
    rows = conn.execute(
        "SELECT a.id, a.signature FROM articles a WHERE a.pk IN (SELECT article FROM lsh WHERE band_key = ANY(%s)) "
        "ORDER BY a.pk",
        (list(fingerprint.bands),),
    )
    return fingerprint.best_match(((article_id, np.frombuffer(blob, dtype=np.uint64)) for article_id, blob in rows),
                                  threshold)


class PostgresStore:
    """The news in PostgreSQL: open it once per process and share it between threads."""

    backend = "postgres"

    def __init__(self, url: str, *, model_name: str, dim: int, settings: StoreSettings | None = None,
                 hnsw_ef_search: int = 256, exact_postings: int = EXACT_POSTINGS, read_url: str | None = None) -> None:
        """`read_url`, a read replica's, takes the searches and the reads behind answers; writes,
        duplicate checks, feeds and the outbox stay on the primary at `url`."""
        if dim < 1:
            raise ValueError("dim must be positive")
        self.model_name, self.dim = model_name, dim
        self.exact_postings = exact_postings
        settings = settings or StoreSettings(backend="postgres")
        # Iterative scans (pgvector 0.8): a filtered HNSW search goes on until it has k rows.
        session = {"hnsw.ef_search": str(hnsw_ef_search), "hnsw.iterative_scan": "relaxed_order"}
        self.db = Database(url, settings, session=session)
        self.reads = Database(read_url, settings, session=session) if read_url else self.db
        for database in {self.db, self.reads}:
            # On a connection of its own: the pool's connections need the vector type, which a
            # database not yet upgraded lacks.
            with database.connect() as conn, database.guard():
                check_schema(conn, model_name=model_name, dim=dim, namespace=database.schema)
        self.feeds = PostgresFeedRegistry(self.db)
        self.outbox = PostgresOutbox(self.db)
        self.follows = PostgresFollowRegistry(self.db)

    def close(self) -> None:
        for database in {self.db, self.reads}:
            database.close()

    # -- search --------------------------------------------------------------------------------

    def dense_search(self, vector: np.ndarray, k: int, filters: SearchFilters) -> list[ScoredChunk]:
        if k < 1:
            return []
        query = np.ascontiguousarray(vector, dtype=np.float32)
        where, params = _filter_sql(filters)
        join = "JOIN articles a ON a.pk = c.article" if filters.active else ""
        with self.reads.connection() as conn:
            rows = conn.execute(
                f"SELECT c.id, c.embedding <#> %s FROM chunks c {join} WHERE {where} "
                "ORDER BY c.embedding <#> %s LIMIT %s",
                (query, *params, query, k),
            ).fetchall()
            if filters.active and len(rows) < k:
                # Fewer than k after the iterative scan gave up: the filter keeps so few chunks that
                # scoring them all is cheap, and exact.
                rows = conn.execute(
                    f"WITH allowed AS MATERIALIZED (SELECT c.id, c.embedding FROM chunks c {join} WHERE {where}) "
                    "SELECT id, embedding <#> %s FROM allowed ORDER BY embedding <#> %s LIMIT %s",
                    (*params, query, query, k),
                ).fetchall()
        # <#> is the negative inner product; relaxed-order scans may return near-ties out of order.
        return sorted(((chunk_id, -distance) for chunk_id, distance in rows), key=lambda row: -row[1])

    def lexical_search(self, terms: Sequence[str], k: int, filters: SearchFilters) -> list[ScoredChunk]:
        """BM25 over chunk passages and titles, as FTS5 computes it (k1 1.2, b 0.75, the title
        weighing half, idf floored at 1e-6), on PostgreSQL's English lexemes.

        When the query's words occur in few chunks (at most `exact_postings` between them), every
        chunk with any of them is scored. Past that, a question of common words would score tens of
        thousands of chunks: then the candidates are each word's champions (its best-scoring chunks,
        kept by the triggers), scored exactly, and a filter that leaves fewer than k of them is
        searched in full. At 100k chunks this finds .959 of the full search's top 10 (bench questions).
        Adding the chunks that have every word as candidates found .967, but costs a GIN scan of every
        word's postings: 8 ms more at p95 with a million chunks.
        """
        if not terms or k < 1:
            return []
        text = " ".join(terms)
        where, params = _filter_sql(filters)
        join = "JOIN articles a ON a.pk = c.article" if filters.active else ""
        every_match = f"FROM query, chunks c {join} WHERE c.terms @@ query.tsq AND {where}"
        checked, checked_params = _filter_sql(filters, per_row=True)  # for the few champions
        with self.reads.connection() as conn:
            postings = conn.execute(
                f"SELECT coalesce(sum(s.chunks), 0) FROM (SELECT DISTINCT unnest(tsvector_to_array("
                f"to_tsvector('{TEXT_SEARCH_CONFIG}', %s)))) AS l(lexeme) JOIN lexeme_stats s ON s.lexeme = l.lexeme",
                (text,),
            ).fetchone()[0]
            if postings <= self.exact_postings:
                rows = conn.execute(_bm25_sql(every_match), (text, *params, k)).fetchall()
            else:
                champions = f"""FROM query, (
                        SELECT DISTINCT ch.chunk AS id FROM q CROSS JOIN LATERAL (
                            SELECT chunk FROM lexeme_champions lc WHERE lc.lexeme = q.lexeme
                            ORDER BY lc.impact DESC LIMIT {CHAMPIONS}) AS ch
                    ) AS candidates JOIN chunks c ON c.id = candidates.id {join} WHERE {checked}"""
                rows = conn.execute(_bm25_sql(champions), (text, *checked_params, k)).fetchall()
                if filters.active and len(rows) < k:
                    rows = conn.execute(_bm25_sql(every_match), (text, *params, k)).fetchall()
        return [(chunk_id, float(score)) for chunk_id, score in rows]

    # -- reads ---------------------------------------------------------------------------------

    def has_article(self, article_id: str) -> bool:
        with self.db.connection() as conn:
            return _has_article(conn, article_id)

    def find_same_text(self, content_hash: str) -> str | None:
        with self.db.connection() as conn:
            return _find_same_text(conn, content_hash)

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> str | None:
        with self.db.connection() as conn:
            return _find_near_duplicate(conn, fingerprint, threshold)

    def chunks_with_articles(self, chunk_ids: Sequence[int]) -> dict[int, tuple[StoredChunk, ArticleMeta, str]]:
        ids = [int(i) for i in chunk_ids]
        with self.reads.connection() as conn:
            rows = conn.execute(
                f"SELECT c.id, c.start_offset, c.end_offset, {_META}, a.text "
                "FROM chunks c JOIN articles a ON a.pk = c.article WHERE c.id = ANY(%s)",
                (ids,),
            ).fetchall()
            metas = _metas(conn, [r[3:12] for r in rows])
        return {r[0]: (StoredChunk(r[0], metas[r[3]].id, r[1], r[2]), metas[r[3]], r[12]) for r in rows}

    def article(self, article_id: str, *, collections: tuple[str, ...] | None = None) -> tuple[ArticleMeta, str] | None:
        found = self.recent_articles(SearchFilters(collections=collections, article_id=article_id), limit=1)
        return found[0] if found else None

    def recent_articles(self, filters: SearchFilters, *, limit: int = 500) -> list[tuple[ArticleMeta, str]]:
        where, params = _filter_sql(filters)
        with self.reads.connection() as conn:
            rows = conn.execute(
                f"SELECT {_META}, a.text FROM articles a WHERE {where} ORDER BY a.sort_time DESC, a.pk DESC LIMIT %s",
                (*params, limit),
            ).fetchall()
            metas = _metas(conn, [r[:9] for r in rows])
        return [(metas[r[0]], r[9]) for r in rows]

    def lede_vectors(self, article_ids: Sequence[str]) -> dict[str, np.ndarray]:
        rows = self.reads.rows(
            "SELECT a.id, c.embedding FROM articles a JOIN chunks c ON c.article = a.pk AND c.ordinal = 0 "
            "WHERE a.id = ANY(%s)",
            (list(article_ids),), binary=True,
        )
        return {article_id: vector.to_numpy() for article_id, vector in rows}

    def cached_vectors(self, embed_keys: Iterable[str]) -> dict[str, np.ndarray]:
        """Embeddings are kept with their chunks: a text is cached while a chunk with it is stored."""
        rows = self.db.rows("SELECT DISTINCT ON (embed_key) embed_key, embedding FROM chunks WHERE embed_key = ANY(%s)",
                            (list(dict.fromkeys(embed_keys)),), binary=True)
        return {key: vector.to_numpy() for key, vector in rows}

    def article_ids(self) -> list[str]:
        return [r[0] for r in self.db.rows("SELECT id FROM articles ORDER BY pk")]

    def titles(self, prefix: str = "", *, collections: tuple[str, ...] | None = None, limit: int = 25) -> list[tuple[str, str]]:
        where, params = _filter_sql(SearchFilters(collections=collections))
        return [tuple(r) for r in self.reads.rows(
            f"SELECT a.id, a.title FROM articles a WHERE {where} AND strpos(lower(a.title), lower(%s)) > 0 "
            "ORDER BY a.sort_time DESC, a.pk DESC LIMIT %s",
            (*params, prefix, limit),
        )]

    def outlets(self, *, collections: tuple[str, ...] | None = None, prefix: str = "", limit: int = 1000) -> list[str]:
        where, params = _filter_sql(SearchFilters(collections=collections))
        return [r[0] for r in self.reads.rows(
            f"SELECT min(a.outlet) FROM articles a WHERE {where} AND a.outlet IS NOT NULL "
            "AND strpos(lower(a.outlet), lower(%s)) > 0 GROUP BY lower(a.outlet) ORDER BY count(*) DESC, min(a.outlet) LIMIT %s",
            (*params, prefix, limit),
        )]

    def counts(self) -> StoreCounts:
        articles, chunks, feeds = self.db.rows(
            "SELECT (SELECT count(*) FROM articles), (SELECT count(*) FROM chunks), (SELECT count(*) FROM feeds)")[0]
        return StoreCounts(articles, chunks, chunks, feeds)  # every chunk row carries its vector

    def stats(self, filters: SearchFilters | None = None) -> dict:
        where, params = _filter_sql(filters or SearchFilters())
        with self.reads.connection() as conn:
            articles, newest, oldest, outlets = conn.execute(
                f"SELECT count(*), max(a.sort_time), min(a.sort_time), count(DISTINCT lower(a.outlet)) FROM articles a WHERE {where}",
                params,
            ).fetchone()
            chunks = conn.execute(f"SELECT count(*) FROM chunks c JOIN articles a ON a.pk = c.article WHERE {where}",
                                  params).fetchone()[0]
            disk = conn.execute(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c WHERE c.relkind = 'r' "
                "AND c.relnamespace = current_schema()::regnamespace AND c.relname = ANY(%s)", (list(_TABLES),),
            ).fetchone()[0]
        return {
            "articles": articles, "chunks": chunks, "outlets": outlets,
            "newest": newest.isoformat() if newest else None, "oldest": oldest.isoformat() if oldest else None,
            "model": self.model_name, "backend": self.backend, "vector_index": "hnsw",
            "disk_bytes": int(disk),  # tables with their indexes and TOAST
        }

    # -- copies --------------------------------------------------------------------------------

    def export_articles(self) -> Iterator[ArticleRecord]:
        last = 0
        while True:
            with self.db.connection() as conn:
                articles = conn.execute(
                    "SELECT pk, id, title, text, url, outlet, author, section, language, source, published, fetched, "
                    "signature FROM articles WHERE pk > %s ORDER BY pk LIMIT %s",
                    (last, _BATCH),
                ).fetchall()
                if not articles:
                    return
                pks = [r[0] for r in articles]
                collections = _grouped(conn.execute(
                    "SELECT article, collection FROM article_collections WHERE article = ANY(%s) ORDER BY collection", (pks,)))
                also = _grouped(conn.execute(
                    "SELECT article, outlet, url, title FROM also_reported WHERE article = ANY(%s) ORDER BY outlet", (pks,)))
                bands = _grouped(conn.execute("SELECT article, band_key FROM lsh WHERE article = ANY(%s)", (pks,)))
                chunks = _grouped(conn.execute(
                    "SELECT article, ordinal, start_offset, end_offset, embed_key, embedding FROM chunks "
                    "WHERE article = ANY(%s) ORDER BY article, ordinal", (pks,), binary=True))
            for pk, article_id, title, text, url, outlet, author, section, language, source, published, fetched, \
                    signature in articles:
                mine = chunks.get(pk, [])
                held = tuple(c for (c,) in collections[pk])
                yield ArticleRecord(
                    article=Article(id=article_id, title=title, text=text, url=url, outlet=outlet, published=published,
                                    fetched=fetched, language=language, author=author, section=section,
                                    source=source or "", collection=held[0]),
                    collections=held,
                    also_reported=tuple(AlsoReported(*row) for row in also.get(pk, [])),
                    fingerprint=Fingerprint(np.frombuffer(bytes(signature), dtype=np.uint64),
                                            tuple(b for (b,) in bands.get(pk, []))),
                    chunks=tuple(Chunk(article_id, o, text[s:e], s, e) for o, s, e, _, _ in mine),
                    embed_keys=tuple(key for _, _, _, key, _ in mine),
                    vectors=np.array([v.to_numpy() for *_, v in mine], dtype=np.float32).reshape(len(mine), self.dim),
                )
            last = pks[-1]

    # -- writes --------------------------------------------------------------------------------

    @contextmanager
    def bulk_load(self) -> Iterator[None]:
        """For many articles at once (`db copy`, the bench): the HNSW index is dropped first and built
        once at the end, instead of being updated chunk by chunk (at a million chunks, well under an
        hour against several). Searches meanwhile read every vector. A process stopped before the end
        leaves the index to `newsdesk db upgrade`."""
        with self.db.connect() as conn, self.db.guard():
            conn.execute("DROP INDEX IF EXISTS chunks_embedding")
        try:
            yield
        finally:
            log.info("building the vector index (minutes for a million chunks)")
            with self.db.connect() as conn, self.db.guard():
                conn.execute("SET statement_timeout = 0")
                conn.execute(VECTOR_INDEX)

    @contextmanager
    def writer(self) -> Iterator[PostgresWriter]:
        """A writer; what it has not committed when the block ends is rolled back."""
        writer = PostgresWriter(self)
        try:
            yield writer
        finally:
            writer.rollback()


def _bm25_sql(candidates: str) -> str:
    """BM25 of the chunks that `candidates` (a FROM clause over `query` and `chunks c`) yields, for
    the lexemes of the text bound first; `q` and `query` are the query's lexemes with their idf."""
    return f"""
        WITH q AS (
            SELECT s.lexeme, greatest(ln((n.chunks - s.chunks + 0.5) / (s.chunks + 0.5)), 1e-6) AS idf
            FROM (SELECT DISTINCT unnest(tsvector_to_array(to_tsvector('{TEXT_SEARCH_CONFIG}', %s)))) AS l(lexeme)
            JOIN lexeme_stats s ON s.lexeme = l.lexeme CROSS JOIN corpus_stats n
        ), query AS (
            SELECT array_agg(lexeme) AS lexemes, string_agg(quote_literal(lexeme), ' | ')::tsquery AS tsq FROM q
        ), hits AS (
            -- each candidate's tsvector cut down to the query's lexemes (weight B marks them)
            SELECT c.id, c.term_count, c.title_end, ts_filter(setweight(c.terms, 'B', query.lexemes), '{{b}}') AS found
            {candidates}
        )
        SELECT h.id, sum(q.idf * {bm25_impact("t.tf", "h.term_count", "avg.dl")}) AS score
        FROM hits h
        CROSS JOIN LATERAL (
            SELECT u.lexeme, sum(CASE WHEN p <= h.title_end THEN {BM25_TITLE_WEIGHT} ELSE 1.0 END) AS tf
            FROM unnest(h.found) AS u, unnest(u.positions) AS p GROUP BY u.lexeme
        ) AS t
        JOIN q ON q.lexeme = t.lexeme
        CROSS JOIN (SELECT term_count::float8 / greatest(chunks, 1) AS dl FROM corpus_stats) AS avg
        GROUP BY h.id ORDER BY score DESC, h.id LIMIT %s"""


def _grouped(cursor) -> dict[int, list[tuple]]:
    """Rows (key, *rest) as {key: [rest, ...]}, in order."""
    out: dict[int, list[tuple]] = {}
    for key, *rest in cursor:
        out.setdefault(key, []).append(tuple(rest))
    return out


class PostgresWriter:
    """Changes in one transaction, which begins with the write lock taken: two processes never
    decide at the same moment that the same story is new. The connection is taken from the pool
    when the transaction begins and given back when it ends, so a writer reading feeds between
    batches holds none. `commit` ends the transaction; the next call begins another."""

    def __init__(self, store: PostgresStore) -> None:
        self.store = store
        self.conn: psycopg.Connection | None = None
        self._chunks: list[tuple] = []  # rows for `chunks`, written together (see _write_chunks)

    def _begin(self) -> psycopg.Connection:
        if self.conn is None:
            conn = self.store.db.acquire()
            self.conn = conn
            with self.store.db.guard():
                # Read committed, whatever the database's default: each statement must see the other
                # writers' commits up to the moment it runs, not a snapshot from before the lock.
                conn.execute("BEGIN ISOLATION LEVEL READ COMMITTED")
                # One writer per schema at a time; the schema's name keys the lock, so the eval's or
                # another deployment's writers do not wait on this one.
                conn.execute("SELECT pg_advisory_xact_lock(%s, hashtext(coalesce(current_schema(), '')))", (_WRITE_LOCK,))
        return self.conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection]:
        conn = self._begin()
        with self.store.db.guard():
            yield conn

    def has_article(self, article_id: str) -> bool:
        with self._tx() as conn:
            return _has_article(conn, article_id)

    def find_same_text(self, content_hash: str) -> str | None:
        with self._tx() as conn:
            return _find_same_text(conn, content_hash)

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> str | None:
        with self._tx() as conn:
            return _find_near_duplicate(conn, fingerprint, threshold)

    def add_collection(self, article_id: str, collection: str) -> bool:
        with self._tx() as conn:
            cursor = conn.execute(
                "INSERT INTO article_collections SELECT pk, %s FROM articles WHERE id = %s ON CONFLICT DO NOTHING",
                (collection, article_id),
            )
            return cursor.rowcount > 0

    def add_also_reported(self, article_id: str, article: Article) -> None:
        if not article.outlet:
            return
        with self._tx() as conn:
            conn.execute(
                "INSERT INTO also_reported SELECT pk, %s, %s, %s FROM articles "
                "WHERE id = %s AND lower(coalesce(outlet, '')) <> lower(%s) ON CONFLICT DO NOTHING",
                (article.outlet, article.url, article.title, article_id, article.outlet),
            )

    def add_article(self, article: Article, chunks: Sequence[Chunk], fingerprint: Fingerprint,
                    embed_keys: Sequence[str], vectors: np.ndarray) -> bool:
        return self._insert(article, (article.collection,), (), fingerprint, chunks, embed_keys, vectors)

    def add_announcement(self, announcement: Announcement) -> None:
        with self._tx() as conn:
            queue_announcement(conn, announcement)

    def import_article(self, record: ArticleRecord) -> bool:
        return self._insert(record.article, record.collections, record.also_reported, record.fingerprint,
                            record.chunks, record.embed_keys, record.vectors)

    def _insert(self, article: Article, collections: Sequence[str], also: Sequence[AlsoReported],
                fingerprint: Fingerprint, chunks: Sequence[Chunk], embed_keys: Sequence[str], vectors: np.ndarray) -> bool:
        dim = self.store.dim
        if not (len(chunks) == len(embed_keys) == len(vectors)) or vectors.shape[1:] != (dim,):
            raise ValueError(f"{article.id}: expected one vector of {dim} per chunk, got {vectors.shape}")
        with self._tx() as conn:
            row = conn.execute(
                "INSERT INTO articles (id, title, text, url, outlet, author, section, language, source, published, "
                "fetched, sort_time, content_hash, signature) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s) "
                "ON CONFLICT (id) DO NOTHING RETURNING pk",
                (article.id, article.title, article.text, article.url, article.outlet, article.author, article.section,
                 article.language, article.source, article.published, article.fetched,
                 article.published or article.fetched, article.content_hash,
                 np.asarray(fingerprint.signature, dtype=np.uint64).tobytes()),
            ).fetchone()
            if row is None:
                return False  # stored already, by this writer or another process
            pk = row[0]
            conn.execute("INSERT INTO article_collections SELECT %s, unnest(%s::text[]) ON CONFLICT DO NOTHING",
                         (pk, list(collections)))
            if also:
                conn.cursor().executemany("INSERT INTO also_reported VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                                          [(pk, a.outlet, a.url, a.title) for a in also])
            conn.execute("INSERT INTO lsh SELECT unnest(%s::bigint[]), %s ON CONFLICT DO NOTHING",
                         (list(fingerprint.bands), pk))
        title_words = len(_WORD.findall(article.title))
        self._chunks += [(pk, c.ordinal, c.start, c.end, key, np.asarray(vector, dtype=np.float32), article.title,
                          c.text, title_words + len(_WORD.findall(c.text)))
                         for c, key, vector in zip(chunks, embed_keys, vectors)]
        if len(self._chunks) >= _CHUNKS_PER_STATEMENT:
            self._write_chunks()
        return True

    def _write_chunks(self) -> None:
        """The chunks added since the last call, in one statement: the BM25 statistics' trigger then
        runs once for them all, not once per article (which made a bulk copy ten times slower)."""
        if not self._chunks:
            return
        columns = list(zip(*self._chunks))
        with self._tx() as conn:
            conn.execute(
                f"""INSERT INTO chunks (article, ordinal, start_offset, end_offset, embed_key, embedding, terms,
                                        title_end, term_count)
                SELECT c.article, c.ordinal, c.start_offset, c.end_offset, c.embed_key, c.embedding,
                       title.terms || to_tsvector('{TEXT_SEARCH_CONFIG}', c.body), title_end.position, c.term_count
                FROM unnest(%s::bigint[], %s::int[], %s::int[], %s::int[], %s::text[], %s::vector[], %s::text[],
                            %s::text[], %s::int[])
                     AS c(article, ordinal, start_offset, end_offset, embed_key, embedding, title, body, term_count)
                CROSS JOIN LATERAL (SELECT setweight(to_tsvector('{TEXT_SEARCH_CONFIG}', c.title), 'A') AS terms) AS title
                CROSS JOIN LATERAL (SELECT coalesce(max(p), 0) AS position
                                    FROM unnest(title.terms) AS u, unnest(u.positions) AS p) AS title_end""",
                [list(column) for column in columns],
            )
        self._chunks.clear()

    def remove_articles(self, *, article_id: str | None = None, before: datetime | None = None,
                        collections: tuple[str, ...] | None = None) -> list[str]:
        if article_id is None and before is None and collections is None:
            raise ValueError("say which articles to remove: an id, an age or collections")
        if article_id is not None and not article_id.strip():
            raise ValueError("an article id cannot be blank")
        where, params = _filter_sql(SearchFilters(until=before, collections=collections, article_id=article_id))
        self._write_chunks()
        with self._tx() as conn:
            rows = conn.execute(f"SELECT a.pk, a.id FROM articles a WHERE {where} ORDER BY a.pk", params).fetchall()
            doomed = [r[0] for r in rows]
            if collections is not None and doomed:
                # Leave those collections; delete only what no other collection still holds.
                conn.execute("DELETE FROM article_collections WHERE collection = ANY(%s) AND article = ANY(%s)",
                             (list(collections), doomed))
                doomed = [r[0] for r in conn.execute(
                    "SELECT pk FROM unnest(%s::bigint[]) AS pk "
                    "WHERE NOT EXISTS (SELECT 1 FROM article_collections WHERE article = pk)", (doomed,))]
            if doomed:
                # Chunks first, in one statement: the BM25 statistics trigger then runs once, not per article.
                conn.execute("DELETE FROM chunks WHERE article = ANY(%s)", (doomed,))
                conn.execute("DELETE FROM articles WHERE pk = ANY(%s)", (doomed,))
        return [r[1] for r in rows]

    def commit(self) -> None:
        if self.conn is None:
            return
        self._write_chunks()
        with self.store.db.guard():
            if self.conn.info.transaction_status == TransactionStatus.INERROR:
                raise StoreError("a statement of this write failed, so PostgreSQL rolled the whole batch back")
            self.conn.execute("COMMIT")
        self._release()

    def rollback(self) -> None:
        self._chunks.clear()
        if self.conn is None:
            return
        try:
            self.conn.execute("ROLLBACK")
        except psycopg.Error:
            pass  # the connection is gone, and with it the transaction; the pool discards it
        self._release()

    def _release(self) -> None:
        conn, self.conn = self.conn, None
        self.store.db.release(conn)

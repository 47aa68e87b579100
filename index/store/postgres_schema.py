"""The PostgreSQL backend's schema: versioned migrations, applied by `newsdesk db upgrade`, and the
check every process makes when it opens the database.

Each migration runs in its own transaction under an advisory lock, so two upgrades started at once
apply it once. The version reached is recorded in newsdesk_meta, with the embedding model the
vectors came from: a process with another model, or a schema older or newer than it knows, refuses
to start with one line that says what to run.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import psycopg
from psycopg import sql

from index.store.postgres_db import Database
from index.store.types import SchemaError, StoreSettings, other_embedding

# PostgreSQL's English stemmer and stop words: the nearest to FTS5's porter tokenizer.
TEXT_SEARCH_CONFIG = "english"
_SCHEMA_LOCK = 0x6E657773_64736B01  # "newsdsk" + 1: pg_advisory_xact_lock's key for upgrades


@dataclass(frozen=True)
class Migration:
    version: int
    about: str
    statements: Callable[[int], list[str]]  # the embedding dimension -> SQL


def _initial(dim: int) -> list[str]:
    return [
        """CREATE TABLE articles (
            pk bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            id text NOT NULL UNIQUE,
            title text NOT NULL,
            text text NOT NULL,
            url text, outlet text, author text, section text, language text, source text,
            published timestamptz, fetched timestamptz NOT NULL,
            sort_time timestamptz NOT NULL,  -- published, else fetched: what date filters and recency use
            content_hash text NOT NULL,
            signature bytea NOT NULL)""",
        "CREATE INDEX articles_time ON articles (sort_time)",
        "CREATE INDEX articles_hash ON articles (content_hash)",
        "CREATE INDEX articles_outlet ON articles (lower(outlet))",
        """CREATE TABLE article_collections (
            article bigint NOT NULL REFERENCES articles (pk) ON DELETE CASCADE,
            collection text NOT NULL,
            PRIMARY KEY (article, collection))""",
        "CREATE INDEX article_collections_name ON article_collections (collection, article)",
        """CREATE TABLE also_reported (
            article bigint NOT NULL REFERENCES articles (pk) ON DELETE CASCADE,
            outlet text NOT NULL, url text, title text,
            PRIMARY KEY (article, outlet))""",
        "CREATE INDEX also_reported_outlet ON also_reported (lower(outlet))",
        # Near-duplicate detection: an article's MinHash bands, looked up by key.
        """CREATE TABLE lsh (
            band_key bigint NOT NULL,
            article bigint NOT NULL REFERENCES articles (pk) ON DELETE CASCADE,
            PRIMARY KEY (band_key, article))""",
        "CREATE INDEX lsh_article ON lsh (article)",
        f"""CREATE TABLE chunks (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            article bigint NOT NULL REFERENCES articles (pk) ON DELETE CASCADE,
            ordinal int NOT NULL,
            start_offset int NOT NULL, end_offset int NOT NULL,
            embed_key text NOT NULL,
            embedding vector({dim}) NOT NULL,
            terms tsvector NOT NULL,       -- the title's lexemes (weight A), then the passage's
            title_end int NOT NULL,        -- the last position that belongs to the title
            term_count int NOT NULL,       -- words in title and passage: BM25's document length
            UNIQUE (article, ordinal))""",
        "CREATE INDEX chunks_embed_key ON chunks (embed_key)",
        "CREATE INDEX chunks_terms ON chunks USING gin (terms)",
        "CREATE INDEX chunks_embedding ON chunks USING hnsw (embedding vector_ip_ops) WITH (m = 16, ef_construction = 64)",
        # BM25 needs each lexeme's document frequency and the average document length, which
        # PostgreSQL's full text search does not keep: these tables do, maintained by triggers in
        # the same transaction as the chunks, so a search always sees figures that match them.
        "CREATE TABLE lexeme_stats (lexeme text PRIMARY KEY, chunks bigint NOT NULL)",
        """CREATE TABLE corpus_stats (
            only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
            chunks bigint NOT NULL, term_count bigint NOT NULL)""",
        "INSERT INTO corpus_stats (chunks, term_count) VALUES (0, 0)",
        """CREATE FUNCTION newsdesk_chunks_added() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO lexeme_stats (lexeme, chunks)
                SELECT lexeme, count(*) FROM added, unnest(tsvector_to_array(added.terms)) AS lexeme GROUP BY lexeme
                ON CONFLICT (lexeme) DO UPDATE SET chunks = lexeme_stats.chunks + excluded.chunks;
            UPDATE corpus_stats SET chunks = corpus_stats.chunks + n, term_count = corpus_stats.term_count + terms
                FROM (SELECT count(*) AS n, coalesce(sum(term_count), 0) AS terms FROM added) AS d;
            RETURN NULL;
        END $$""",
        """CREATE FUNCTION newsdesk_chunks_removed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE lexeme_stats SET chunks = lexeme_stats.chunks - d.n
                FROM (SELECT lexeme, count(*) AS n FROM removed, unnest(tsvector_to_array(removed.terms)) AS lexeme
                      GROUP BY lexeme) AS d
                WHERE lexeme_stats.lexeme = d.lexeme;
            DELETE FROM lexeme_stats WHERE chunks <= 0;
            UPDATE corpus_stats SET chunks = corpus_stats.chunks - n, term_count = corpus_stats.term_count - terms
                FROM (SELECT count(*) AS n, coalesce(sum(term_count), 0) AS terms FROM removed) AS d;
            RETURN NULL;
        END $$""",
        """CREATE TRIGGER chunks_added AFTER INSERT ON chunks REFERENCING NEW TABLE AS added
            FOR EACH STATEMENT EXECUTE FUNCTION newsdesk_chunks_added()""",
        """CREATE TRIGGER chunks_removed AFTER DELETE ON chunks REFERENCING OLD TABLE AS removed
            FOR EACH STATEMENT EXECUTE FUNCTION newsdesk_chunks_removed()""",
        """CREATE TABLE feeds (
            url text NOT NULL, collection text NOT NULL,
            channel_id bigint NOT NULL DEFAULT 0, added_by bigint NOT NULL DEFAULT 0,
            from_config boolean NOT NULL DEFAULT false,
            added_at timestamptz NOT NULL, last_polled timestamptz, last_error text,
            PRIMARY KEY (url, collection))""",
        """CREATE TABLE digests (
            channel_id bigint NOT NULL, day date NOT NULL, posted_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (channel_id, day))""",
    ]


# BM25 as FTS5 computes it: k1, b, and the title's weight against the passage's (1.0).
BM25_K1, BM25_B, BM25_TITLE_WEIGHT = 1.2, 0.75, 0.5
# Each lexeme keeps its best-scoring chunks (at least this many, at most twice): a search over common
# words scores those instead of every chunk that has them.
CHAMPIONS = 250


def bm25_impact(tf: str, term_count: str, avgdl: str) -> str:
    """SQL for a term's BM25 weight in a chunk without the idf: what orders a lexeme's champions."""
    return f"({tf} * {BM25_K1 + 1} / ({tf} + {BM25_K1} * ({1 - BM25_B} + {BM25_B} * {term_count} / {avgdl})))"


def _champions(dim: int) -> list[str]:
    per_term_tf = (f"SELECT u.lexeme, sum(CASE WHEN p <= c.title_end THEN {BM25_TITLE_WEIGHT} ELSE 1.0 END) AS tf "
                   "FROM unnest(c.terms) AS u, unnest(u.positions) AS p GROUP BY u.lexeme")
    return [
        # Kept by the chunk triggers, not by foreign keys: a cascade would run after the triggers
        # that count the lists.
        "CREATE TABLE lexeme_champions (lexeme text NOT NULL, chunk bigint NOT NULL, impact real NOT NULL)",
        "CREATE INDEX lexeme_champions_best ON lexeme_champions (lexeme, impact DESC)",
        "CREATE INDEX lexeme_champions_chunk ON lexeme_champions (chunk)",
        """ALTER TABLE lexeme_stats ADD COLUMN champions int NOT NULL DEFAULT 0,
                                    ADD COLUMN champion_floor real NOT NULL DEFAULT 0""",
        f"CREATE INDEX lexeme_stats_crowded ON lexeme_stats (lexeme) WHERE champions > {2 * CHAMPIONS}",
        f"""CREATE FUNCTION newsdesk_enter_champions(ids bigint[]) RETURNS void LANGUAGE plpgsql AS $$
        DECLARE
            avgdl float8;
        BEGIN
            SELECT term_count::float8 / greatest(chunks, 1) INTO avgdl FROM corpus_stats;
            WITH postings AS (
                SELECT t.lexeme, c.id AS chunk, {bm25_impact("t.tf", "c.term_count", "avgdl")}::real AS impact
                FROM chunks c CROSS JOIN LATERAL ({per_term_tf}) AS t
                WHERE c.id = ANY(ids)
            ), entered AS (
                INSERT INTO lexeme_champions (lexeme, chunk, impact)
                SELECT p.lexeme, p.chunk, p.impact FROM postings p JOIN lexeme_stats s ON s.lexeme = p.lexeme
                WHERE p.impact > s.champion_floor
                RETURNING lexeme
            )
            UPDATE lexeme_stats s SET champions = s.champions + e.n
                FROM (SELECT lexeme, count(*) AS n FROM entered GROUP BY lexeme) AS e WHERE s.lexeme = e.lexeme;
            -- A list past twice its size keeps its best {CHAMPIONS}; what enters later must beat the last of them.
            WITH ranked AS (
                SELECT c.ctid AS row, c.lexeme, c.impact,
                       row_number() OVER (PARTITION BY c.lexeme ORDER BY c.impact DESC, c.chunk) AS rank
                FROM lexeme_champions c
                WHERE c.lexeme IN (SELECT lexeme FROM lexeme_stats WHERE champions > {2 * CHAMPIONS})
            ), dropped AS (
                DELETE FROM lexeme_champions c USING ranked r WHERE c.ctid = r.row AND r.rank > {CHAMPIONS}
            )
            UPDATE lexeme_stats s SET champions = {CHAMPIONS}, champion_floor = r.impact
                FROM ranked r WHERE r.rank = {CHAMPIONS} AND s.lexeme = r.lexeme;
        END $$""",
        """CREATE OR REPLACE FUNCTION newsdesk_chunks_added() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            INSERT INTO lexeme_stats (lexeme, chunks)
                SELECT lexeme, count(*) FROM added, unnest(tsvector_to_array(added.terms)) AS lexeme GROUP BY lexeme
                ON CONFLICT (lexeme) DO UPDATE SET chunks = lexeme_stats.chunks + excluded.chunks;
            UPDATE corpus_stats SET chunks = corpus_stats.chunks + n, term_count = corpus_stats.term_count + terms
                FROM (SELECT count(*) AS n, coalesce(sum(term_count), 0) AS terms FROM added) AS d;
            PERFORM newsdesk_enter_champions(ARRAY(SELECT id FROM added));
            RETURN NULL;
        END $$""",
        f"""CREATE OR REPLACE FUNCTION newsdesk_chunks_removed() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            -- A list that falls below its size takes any chunk again, until it is full.
            WITH gone AS (DELETE FROM lexeme_champions c USING removed r WHERE c.chunk = r.id RETURNING c.lexeme)
            UPDATE lexeme_stats s SET champions = s.champions - g.n,
                   champion_floor = CASE WHEN s.champions - g.n < {CHAMPIONS} THEN 0 ELSE s.champion_floor END
                FROM (SELECT lexeme, count(*) AS n FROM gone GROUP BY lexeme) AS g WHERE s.lexeme = g.lexeme;
            UPDATE lexeme_stats SET chunks = lexeme_stats.chunks - d.n
                FROM (SELECT lexeme, count(*) AS n FROM removed, unnest(tsvector_to_array(removed.terms)) AS lexeme
                      GROUP BY lexeme) AS d
                WHERE lexeme_stats.lexeme = d.lexeme;
            DELETE FROM lexeme_stats WHERE chunks <= 0;
            UPDATE corpus_stats SET chunks = corpus_stats.chunks - n, term_count = corpus_stats.term_count - terms
                FROM (SELECT count(*) AS n, coalesce(sum(term_count), 0) AS terms FROM removed) AS d;
            RETURN NULL;
        END $$""",
        # The chunks stored before: entered in slices, so that the lists are trimmed as they grow.
        """DO $$
        DECLARE
            low bigint := 0;
            high bigint;
        BEGIN
            LOOP
                SELECT max(id) INTO high FROM (SELECT id FROM chunks WHERE id > low ORDER BY id LIMIT 5000) AS slice;
                EXIT WHEN high IS NULL;
                PERFORM newsdesk_enter_champions(ARRAY(SELECT id FROM chunks WHERE id > low AND id <= high));
                low := high;
            END LOOP;
        END $$""",
    ]


def _sharing(dim: int) -> list[str]:
    return [
        # A feed's lease: the worker polling it, until when (the database's clock: workers' clocks differ).
        """ALTER TABLE feeds ADD COLUMN guild_id bigint NOT NULL DEFAULT 0,
                             ADD COLUMN lease_holder text, ADD COLUMN lease_until timestamptz""",
        """CREATE TABLE announcements (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            guild_id bigint NOT NULL, channel_id bigint NOT NULL, article_ids text[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            taken_by text, taken_until timestamptz, sent_at timestamptz)""",
        "CREATE INDEX announcements_unsent ON announcements (id) WHERE sent_at IS NULL",
    ]


HNSW_M, HNSW_EF_CONSTRUCTION = 32, 128
# The vector index as migration 4 made it; also rebuilt after a bulk load (PostgresStore.bulk_load).
VECTOR_INDEX = (f"CREATE INDEX IF NOT EXISTS chunks_embedding ON chunks USING hnsw (embedding vector_ip_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION})")


def _denser_graph(dim: int) -> list[str]:
    # Measured on the bench's million chunks: m 16, ef_construction 64 found .74 of the exact top 10
    # (ef_search 256; .89 at the most, 1000). FAISS's graph in the embedded backend uses M 32.
    return ["DROP INDEX chunks_embedding", VECTOR_INDEX]

def _follows(dim: int) -> list[str]:
    return [
        """CREATE TABLE follows (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            guild_id bigint NOT NULL, channel_id bigint NOT NULL, topic text NOT NULL, level text NOT NULL,
            vector bytea NOT NULL,  -- the topic's embedding, little-endian float32
            created_by bigint NOT NULL, created_at timestamptz NOT NULL DEFAULT now(),
            feed_url text NOT NULL, format text NOT NULL,  -- a feed's announcements: its items only
            UNIQUE (guild_id, channel_id, topic, feed_url))""",
        # A follow's match is an announcement; `held`: kept back once by its channel's hourly cap.
        """ALTER TABLE announcements ADD COLUMN follow_id bigint NOT NULL DEFAULT 0,
                                     ADD COLUMN held boolean NOT NULL DEFAULT false""",
        "CREATE TABLE channel_posts (channel_id bigint NOT NULL, posted_at timestamptz NOT NULL DEFAULT now())",
        "CREATE INDEX channel_posts_time ON channel_posts (channel_id, posted_at)",
    ]


MIGRATIONS = [
    Migration(1, "articles, chunks with pgvector and full-text search, BM25 statistics, feeds", _initial),
    Migration(2, "each lexeme's best-scoring chunks, so that BM25 over common words stays fast", _champions),
    Migration(3, "feed leases and the announcement outbox, for several workers and bot processes", _sharing),
    Migration(4, "a denser HNSW graph (m 32, ef_construction 128): recall@10 at a million chunks", _denser_graph),
    Migration(5, "follows, their matches in the outbox, and the posts that count against a channel's hourly cap",
              _follows),
]
SCHEMA_VERSION = MIGRATIONS[-1].version


def _meta(conn: psycopg.Connection, namespace: str) -> dict[str, str] | None:
    """newsdesk_meta of this namespace (the search path's first schema when empty) as a dict, or None
    where newsdesk has not set up: another namespace's tables further down the path do not count."""
    namespace = namespace or conn.execute("SELECT current_schema()").fetchone()[0]
    if namespace is None or conn.execute("SELECT to_regclass(format('%%I.newsdesk_meta', %s::text))",
                                         (namespace,)).fetchone()[0] is None:
        return None
    table = sql.Identifier(namespace, "newsdesk_meta")
    return dict(conn.execute(sql.SQL("SELECT key, value FROM {}").format(table)).fetchall())


def _model(model_name: str, dim: int) -> str:
    return json.dumps({"name": model_name, "dim": dim})


def _check_model(meta: dict[str, str], model_name: str, dim: int) -> None:
    if meta.get("model") != _model(model_name, dim):
        recorded = json.loads(meta["model"]) if meta.get("model") else {"name": "?", "dim": "?"}
        raise other_embedding("the database", f"{recorded['name']} ({recorded['dim']})", f"{model_name} ({dim})")


def check_schema(conn: psycopg.Connection, *, model_name: str, dim: int, namespace: str = "") -> None:
    """SchemaError (or a StoreError for another embedding) unless the database is ready for this newsdesk."""
    if conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone() is None:
        raise SchemaError("the pgvector extension is not installed in this database: run `newsdesk db upgrade` "
                          "(as a role that may CREATE EXTENSION vector)")
    meta = _meta(conn, namespace)
    if meta is None:
        where = f"schema {namespace} of the database" if namespace else "the database"
        raise SchemaError(f"{where} has no newsdesk tables yet: run `newsdesk db upgrade`")
    version = int(meta["schema_version"])
    if version < SCHEMA_VERSION:
        raise SchemaError(f"the database schema is version {version}, this newsdesk needs {SCHEMA_VERSION}: "
                          "run `newsdesk db upgrade`")
    if version > SCHEMA_VERSION:
        raise SchemaError(f"the database schema is version {version}, newer than this newsdesk knows "
                          f"({SCHEMA_VERSION}): upgrade newsdesk")
    _check_model(meta, model_name, dim)


def recorded_model_name(url: str, settings: StoreSettings) -> str | None:
    """The embedding name the database's vectors came from; None before `db upgrade` set one."""
    database = Database(url, settings)
    with database.connect() as conn, database.guard():
        meta = _meta(conn, settings.schema) or {}
    return json.loads(meta["model"])["name"] if "model" in meta else None


def upgrade_database(url: str, settings: StoreSettings, *, model_name: str, dim: int) -> tuple[int, int]:
    """`newsdesk db upgrade`: the schema (and [store] schema's namespace) brought to this version."""
    database = Database(url, settings)
    with database.connect() as conn, database.guard():
        return upgrade(conn, model_name=model_name, dim=dim, namespace=settings.schema)


def drop_namespace(url: str, settings: StoreSettings) -> None:
    """Delete [store] schema's namespace with everything in it (the eval's and the bench's own)."""
    if not settings.schema:
        raise ValueError("only a [store] schema of its own can be dropped")
    database = Database(url, settings)
    with database.connect() as conn, database.guard():
        conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(settings.schema)))


def upgrade(conn: psycopg.Connection, *, model_name: str, dim: int, namespace: str = "",
            migrations: list[Migration] = MIGRATIONS) -> tuple[int, int]:
    """Apply the migrations the database lacks, each in its own transaction; (version before, after)."""
    conn.execute("SET statement_timeout = 0")  # a migration may rewrite every chunk: no limit for this connection
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
        if namespace:
            conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(namespace)))
        try:
            # In public, which every search path newsdesk sets includes: created in a [store] schema,
            # it would be hidden from the others and dropped with it.
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector WITH SCHEMA public")
        except psycopg.Error as exc:
            raise SchemaError(
                f"could not install pgvector ({exc.diag.message_primary or type(exc).__name__}): install the "
                "pgvector extension on the server (e.g. the pgvector/pgvector image), or have a superuser run "
                "CREATE EXTENSION vector in this database"
            ) from None
        conn.execute("CREATE TABLE IF NOT EXISTS newsdesk_meta (key text PRIMARY KEY, value text NOT NULL)")
        meta = _meta(conn, namespace) or {}
        if "model" in meta:
            _check_model(meta, model_name, dim)
        else:
            conn.execute("INSERT INTO newsdesk_meta VALUES ('model', %s), ('schema_version', '0')",
                         (_model(model_name, dim),))
        before = int(meta.get("schema_version", 0))
    known = migrations[-1].version if migrations else 0
    if before > known:
        raise SchemaError(f"the database schema is version {before}, newer than this newsdesk knows ({known}): "
                          "upgrade newsdesk")
    for migration in migrations:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
            current = int(conn.execute("SELECT value FROM newsdesk_meta WHERE key = 'schema_version'").fetchone()[0])
            if current >= migration.version:
                continue  # another upgrade applied it meanwhile
            for statement in migration.statements(dim):
                conn.execute(statement)
            conn.execute("UPDATE newsdesk_meta SET value = %s WHERE key = 'schema_version'", (str(migration.version),))
    if known >= 4:
        conn.execute(VECTOR_INDEX)  # a bulk load stopped before it rebuilt the index left the chunks without it
    return before, known

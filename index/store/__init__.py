"""Where the news is kept: one interface (protocol.NewsStore), two backends, chosen by config.

`[store] backend = "sqlite"` (the default) keeps everything in the data folder: SQLite (BM25 postings) +
FAISS, for one process on one machine. `"postgres"` keeps it in PostgreSQL with pgvector, which any
number of newsdesk processes on any number of machines can share; its URL comes from the
environment variable named by `[store] url_env`, never from a file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from index.store.protocol import DuplicateLookup, FeedRegistry, FollowRegistry, NewsStore, Outbox, StoreWriter
from index.store.types import (
    FOLLOW_FORMATS, FOLLOW_LEVELS, AlsoReported, Announcement, ArticleRecord, Feed, Follow, SchemaError, ScoredChunk, SearchFilters, Shards, StoreCounts,
    StoredChunk, StoreError, StoreSettings, embed_key,
)


def database_url(settings: StoreSettings, environ: Mapping[str, str] = os.environ, *, variable: str = "") -> str:
    """The PostgreSQL URL from the environment (the variable [store] url_env names, or `variable`);
    StoreError naming the variable (not its value) if it is unset."""
    variable = variable or settings.url_env
    url = environ.get(variable, "").strip()
    if not url:
        raise StoreError(f"[store] backend is postgres, but {variable} is not set: put the database URL "
                         "in that environment variable (e.g. postgresql://user:password@host/newsdesk)")
    return url


def open_store(
    settings: StoreSettings,
    *,
    data_dir: str | os.PathLike,
    model_name: str,
    dim: int,
    exact_search_max: int = 200_000,
    hnsw_m: int = 32,
    hnsw_ef_search: int = 256,
    search_threads: int = 1,
    environ: Mapping[str, str] = os.environ,
) -> NewsStore:
    """The configured backend, opened for this model. Each backend's library is imported only when chosen."""
    if settings.backend == "postgres":
        from index.store.postgres import PostgresStore

        read_url = database_url(settings, environ, variable=settings.read_url_env) if settings.read_url_env else None
        return PostgresStore(database_url(settings, environ), model_name=model_name, dim=dim, settings=settings,
                             hnsw_ef_search=hnsw_ef_search, read_url=read_url)
    from index.store.sqlite import SQLiteStore

    return SQLiteStore(Path(data_dir), model_name=model_name, dim=dim, exact_search_max=exact_search_max,
                       hnsw_m=hnsw_m, hnsw_ef_search=hnsw_ef_search, search_threads=search_threads)


def recorded_model_name(settings: StoreSettings, *, data_dir: str | os.PathLike,
                        environ: Mapping[str, str] = os.environ) -> str | None:
    """The embedding name the configured store's vectors came from; None for a store not yet built."""
    if settings.backend == "postgres":
        from index.store.postgres_schema import recorded_model_name as recorded

        return recorded(database_url(settings, environ), settings)
    from index.store.sqlite import recorded_model_name as recorded

    return recorded(data_dir)


def upgrade_database(settings: StoreSettings, *, model_name: str, dim: int,
                     environ: Mapping[str, str] = os.environ) -> tuple[int, int]:
    """`newsdesk db upgrade`: the PostgreSQL schema created or brought up to date; (version before, after)."""
    from index.store.postgres_schema import upgrade_database as upgrade

    return upgrade(database_url(settings, environ), settings, model_name=model_name, dim=dim)


def drop_namespace(settings: StoreSettings, environ: Mapping[str, str] = os.environ) -> None:
    """Deletes [store] schema's namespace in PostgreSQL with all in it (the eval's and the bench's scratch)."""
    from index.store.postgres_schema import drop_namespace as drop

    drop(database_url(settings, environ), settings)


__all__ = [
    "FOLLOW_FORMATS", "FOLLOW_LEVELS", "AlsoReported", "Announcement", "ArticleRecord", "DuplicateLookup", "Feed", "FeedRegistry",
    "Follow", "FollowRegistry", "NewsStore", "Outbox",
    "SchemaError", "ScoredChunk", "SearchFilters", "Shards", "StoreCounts", "StoreError", "StoreSettings",
    "StoreWriter", "StoredChunk",
    "database_url", "drop_namespace", "embed_key", "open_store", "recorded_model_name", "upgrade_database",
]

"""The values that cross the storage interface: typed filters, ids, datetimes and records, never SQL.

Every backend (index.store.sqlite, index.store.postgres) takes and returns these, so the code above
the interface (ingest, retrieval, the bot) never learns which database holds the news.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from index.article import Article, ArticleMeta, Chunk, content_hash
from index.dedup import Fingerprint


class StoreError(RuntimeError):
    """The store cannot be used: a locked folder, another model's index, an unreachable database.

    The message is one line that says what to do; it never carries a database URL or password.
    """


class SchemaError(StoreError):
    """The database schema is missing, older or newer than this newsdesk; the message says what to run."""


BACKENDS = ("sqlite", "postgres")


def other_embedding(where: str, recorded: str, wanted: str) -> StoreError:
    """The error for a store whose vectors came from another model or embedding backend: mixing
    them would rank nonsense, so it is refused, saying how to go on."""
    return StoreError(f"{where} holds vectors of {recorded}, not {wanted}: use the embedding it was built with "
                      "([index] embed_backend = \"auto\" follows it; [index] model as it was), or give [index] dir "
                      "(or the database) a new place and ingest again")


@dataclass
class StoreSettings:
    """config.toml's [store] section: which backend holds the news, and how to reach PostgreSQL."""

    backend: str = "sqlite"
    # The environment variable that holds the PostgreSQL URL (a secret: never in config.toml).
    url_env: str = "NEWSDESK_DATABASE_URL"
    # The variable that holds a read replica's URL, for searches and reads; empty: the primary does all.
    read_url_env: str = ""
    pool_size: int = 8
    connect_timeout_seconds: float = 5.0
    # No question or write waits longer than this on the database.
    statement_timeout_seconds: float = 30.0
    # A PostgreSQL schema (namespace) of its own for newsdesk's tables; empty: the database's default.
    schema: str = ""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ValueError(f"backend: expected one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if not self.url_env.strip():
            raise ValueError("url_env: must name an environment variable")
        if self.pool_size < 1:
            raise ValueError("pool_size: must be at least 1")
        for key in ("connect_timeout_seconds", "statement_timeout_seconds"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key}: must be positive")
        if self.schema and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", self.schema):
            raise ValueError(f"schema: expected a lower-case name of letters, digits and _, got {self.schema!r}")


@dataclass(frozen=True)
class SearchFilters:
    """What a search may see. Every backend applies all of them, to dense and lexical search alike."""

    since: datetime | None = None
    until: datetime | None = None
    outlets: tuple[str, ...] = ()  # the article's outlet or one that also reported it, any case
    collections: tuple[str, ...] | None = None  # None: every collection
    article_id: str | None = None

    @property
    def active(self) -> bool:
        return bool(self.since or self.until or self.outlets or self.collections is not None
                    or self.article_id is not None)


@dataclass(frozen=True)
class StoredChunk:
    """A passage as stored: offsets into its article's text."""

    id: int
    article_id: str
    start: int
    end: int


# (chunk id, score): higher is better. Dense scores are inner products (cosine: vectors are
# normalised); lexical scores are BM25.
ScoredChunk = tuple[int, float]


def embed_key(model_name: str, embed_text: str) -> str:
    """The embedding cache's key for a text: the same text and model never need a second encode."""
    return content_hash(model_name + "\x00" + embed_text)


@dataclass(frozen=True)
class AlsoReported:
    outlet: str
    url: str | None = None
    title: str | None = None


@dataclass(frozen=True)
class ArticleRecord:
    """All a store holds of one article, to copy it to another store without embedding it again."""

    article: Article  # its `collection` is the first of `collections`
    collections: tuple[str, ...]
    also_reported: tuple[AlsoReported, ...]
    fingerprint: Fingerprint
    chunks: tuple[Chunk, ...]
    embed_keys: tuple[str, ...]
    vectors: np.ndarray = field(repr=False)  # float32, one row per chunk


@dataclass(frozen=True)
class Feed:
    url: str
    collection: str
    channel_id: int = 0  # where new headlines are posted; 0: nowhere
    added_by: int = 0  # the Discord user who added it; 0 for config feeds
    from_config: bool = False
    last_polled: datetime | None = None
    last_error: str | None = None
    added_at: datetime | None = None
    guild_id: int = 0  # the server of `channel_id`, which decides the process that posts there; 0: unknown


@dataclass(frozen=True)
class Shards:
    """The Discord gateway shards a process holds: a guild belongs to shard (guild_id >> 22) % count."""

    ids: tuple[int, ...] = (0,)
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not self.ids or any(not 0 <= i < self.count for i in self.ids):
            raise ValueError(f"shards {self.ids} of {self.count}: each must be in 0..{self.count - 1}")


@dataclass(frozen=True)
class Announcement:
    """New articles of a feed to post in a channel. Whoever polled the feed writes it; the process
    holding the shard of `guild_id` posts it (guild 0, unknown, falls to shard 0)."""

    guild_id: int
    channel_id: int
    article_ids: tuple[str, ...]
    id: int = 0  # given by the outbox
    # How long ago it was queued when the outbox gave it out, by the store's clock (processes' clocks differ).
    age: timedelta | None = None
    follow_id: int = 0  # 0: a feed's new headlines; else the follow that this article matched
    # Nobody takes it before this much time has passed since it was queued: copies of the story
    # that arrive meanwhile fold into it (a follow's delivery window).
    delay: timedelta = timedelta(0)
    held: bool = False  # kept back once by its channel's hourly cap: posted with the others kept back


FOLLOW_LEVELS = ("strict", "normal", "broad")
FOLLOW_FORMATS = ("summary", "headline")  # a story each, cited; or a list of headline links


@dataclass(frozen=True)
class Follow:
    """A topic a server follows: articles new to it that match are posted in `channel_id`."""

    id: int
    guild_id: int
    channel_id: int
    topic: str  # as the admin wrote it: free text, "quoted phrases" that must appear, -words that must not
    vector: np.ndarray = field(repr=False, compare=False)  # the embedding of the topic's meaning
    level: str = "normal"  # one of FOLLOW_LEVELS: how close a match must be
    created_by: int = 0
    created_at: datetime | None = None
    # A feed's announcements (/feeds add with a filter or a format): only that feed's new items,
    # and an empty topic takes them all. "": every article the server can see.
    feed_url: str = field(default="", repr=False)  # may carry credentials: never in a repr
    format: str = "summary"  # one of FOLLOW_FORMATS


ALREADY_FOLLOWED = "That channel follows this topic already."


def too_many_follows(limit: int) -> str:
    return f"This server has {limit} follows already, the most it may have: /unfollow one first."


def vector_bytes(vector: np.ndarray) -> bytes:
    """A follow's embedding as stored: little-endian float32, whichever machine reads it."""
    return np.asarray(vector, dtype="<f4").tobytes()


def vector_from(stored: bytes) -> np.ndarray:
    return np.frombuffer(stored, dtype="<f4").astype(np.float32)


@dataclass(frozen=True)
class StoreCounts:
    """What `db copy` compares on both sides."""

    articles: int
    chunks: int
    vectors: int
    feeds: int

    def to_json(self) -> dict:
        return {"articles": self.articles, "chunks": self.chunks, "vectors": self.vectors, "feeds": self.feeds}


__all__ = [
    "AlsoReported", "Announcement", "ArticleMeta", "ArticleRecord", "BACKENDS", "FOLLOW_FORMATS", "FOLLOW_LEVELS", "Feed", "Follow",
    "SchemaError",
    "ScoredChunk", "SearchFilters", "Shards", "StoreCounts", "StoreError", "StoreSettings", "StoredChunk", "embed_key",
]

"""The storage interface: what ingest, retrieval and the bot may ask of any backend.

Two backends implement it: index.store.sqlite (SQLite with BM25 postings + FAISS in one folder, one writing
process: the embedded default) and index.store.postgres (PostgreSQL + pgvector, shared by any number
of processes on any number of machines). Arguments and results are typed values from
index.store.types; the logic that does not depend on the backend (fusion, recency, the lede boost,
the per-article cap, the duplicate decision) stays above this line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import date, datetime, timedelta
from typing import Protocol

import numpy as np

from index.article import Article, ArticleMeta, Chunk
from index.dedup import Fingerprint
from index.store.types import (
    Announcement, ArticleRecord, Feed, Follow, ScoredChunk, SearchFilters, Shards, StoreCounts, StoredChunk,
)


class DuplicateLookup(Protocol):
    """Where an incoming article may already be: the store (a read), or a writer (inside its transaction)."""

    def has_article(self, article_id: str) -> bool: ...

    def find_same_text(self, content_hash: str) -> str | None:
        """The id of a stored article with exactly this text (case and spacing aside)."""

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> str | None:
        """The id of the stored article most like this one, if their MinHash similarity reaches `threshold`."""


class StoreWriter(DuplicateLookup, Protocol):
    """Changes made in one transaction: nothing is visible to readers until `commit`, and a process
    killed before it leaves nothing behind. After `commit` the writer starts the next transaction."""

    def add_article(self, article: Article, chunks: Sequence[Chunk], fingerprint: Fingerprint,
                    embed_keys: Sequence[str], vectors: np.ndarray) -> bool:
        """A new article in `article.collection`, with one embedding row per chunk; False if an
        article with its id is stored already."""

    def add_collection(self, article_id: str, collection: str) -> bool:
        """Make a stored article visible to another collection; True if it was not already."""

    def add_also_reported(self, article_id: str, article: Article) -> None:
        """Record another outlet that carried the stored story (an outlet's own reprint is not news)."""

    def remove_articles(self, *, article_id: str | None = None, before: datetime | None = None,
                        collections: tuple[str, ...] | None = None) -> list[str]:
        """Remove the article, or those older than `before` (by publication, else fetch time).

        With `collections` (a server's own), only articles they hold match, and they leave those
        collections only: one that another collection also holds stays for it. `collections` alone
        empties those collections. Returns the ids that matched.
        """

    def add_announcement(self, announcement: Announcement) -> None:
        """Queue headlines of articles this writer adds, to go with them: on PostgreSQL in the same
        transaction (no commit without its announcement); SQLite keeps its outbox in another file and
        queues it right after the commit."""

    def import_article(self, record: ArticleRecord) -> bool:
        """Store a record copied from another store as it is (no duplicate check, no embedding);
        False if an article with its id is already here."""

    def commit(self) -> None: ...


class FeedRegistry(Protocol):
    """Feeds by (url, collection), each one's polling state, and the digests already posted."""

    def sync_config(self, feeds: Iterable[Feed]) -> None:
        """Make these the registry's config feeds: new ones added, dropped ones removed."""

    def add(self, url: str, *, collection: str, channel_id: int = 0, added_by: int = 0, guild_id: int = 0) -> Feed:
        """Register a feed; ValueError if the URL is not usable or already registered there."""

    def remove(self, url: str, *, collection: str) -> bool:
        """Forget a feed that a server added; config feeds are changed in config.toml only."""

    def feeds(self, *, collections: Iterable[str] | None = None) -> list[Feed]:
        """Feeds in the given collections (all when None), shared ones first."""

    def due(self, *, every: timedelta, now: datetime | None = None) -> list[Feed]:
        """Feeds never polled, or polled longer than `every` ago, the longest waiting first."""

    def claim_due(self, *, every: timedelta, holder: str, lease: timedelta, limit: int = 10) -> list[Feed]:
        """Up to `limit` due feeds that no other holder's lease covers, leased to `holder` for
        `lease` (by the store's clock): while the lease runs, no other worker polls them."""

    def renew(self, feed: Feed, *, holder: str, lease: timedelta) -> bool:
        """Extend `holder`'s lease on the feed by `lease` from now; False if it holds it no more."""

    def mark_polled(self, feed: Feed, *, when: datetime, error: str | None = None, holder: str | None = None) -> None:
        """Record a poll's outcome and end the lease on the feed (with `holder`: only if it is that
        holder's: a worker that lost its lease must not end the next one's)."""

    def claim_digest(self, channel_id: int, day: date) -> bool:
        """True for the first caller only, per channel and day: a digest is posted once."""

    def restore(self, feeds: Iterable[Feed]) -> int:
        """Feeds copied from another store, with their polling state; returns how many were new."""


class Outbox(Protocol):
    """Announcements on their way to Discord: written by the process that polled the feed, posted
    by the process that holds the guild's shard, each once."""

    def add(self, announcement: Announcement) -> int:
        """Queue it; returns its id."""

    def take(self, *, holder: str, shards: Shards, lease: timedelta, limit: int = 20) -> list[Announcement]:
        """Unsent announcements of guilds on `shards` that no other holder's lease covers, oldest
        first, leased to `holder`: if it dies before `mark_sent`, another takes them when the lease ends."""

    def mark_sent(self, announcement_id: int) -> None: ...

    def hold(self, announcement_ids: Sequence[int], *, wait: timedelta) -> None:
        """Keep these back (their channel's hourly cap is reached): marked held, and nobody takes
        them for `wait`, by the store's clock (processes' clocks differ)."""

    def waiting(self, channel_id: int) -> list[Announcement]:
        """The channel's follow matches still waiting out their delay (not taken, not held), oldest
        first: a story posted now folds in those that tell it too, and marks them sent."""

    def record_post(self, channel_id: int) -> None:
        """A follow's message was posted in the channel now: it counts against the hourly cap."""

    def recent_posts(self, channel_id: int, within: timedelta) -> list[timedelta]:
        """How long ago each follow message posted in the channel in the last `within` was posted,
        by the store's clock, oldest first."""

    def unsent(self) -> int:
        """How many are still waiting."""

    def prune(self, *, older_than: timedelta) -> int:
        """Forget announcements sent (and posts recorded) longer ago than `older_than`; returns how
        many announcements."""


class FollowRegistry(Protocol):
    """The topics each server follows. Matches go to the outbox, with the articles that made them."""

    def add(self, *, guild_id: int, channel_id: int, topic: str, vector: np.ndarray, level: str = "normal",
            created_by: int = 0, limit: int = 50, feed_url: str = "", format: str = "summary") -> Follow:
        """A new follow (of one feed's items, with `feed_url`); ValueError if the server has `limit`
        follows already, or the channel follows this topic (of this feed) already."""

    def remove(self, follow_id: int, *, guild_id: int) -> bool:
        """Forget one of the server's follows; False if it has none with that id."""

    def follows(self, *, guild_id: int | None = None) -> list[Follow]:
        """The server's follows (every server's when None), oldest first."""


class NewsStore(DuplicateLookup, Protocol):
    """Articles, their chunks and embeddings, the two searches over them, and the bot's own state."""

    model_name: str
    dim: int

    # -- reads -------------------------------------------------------------------------------------

    def article(self, article_id: str, *, collections: tuple[str, ...] | None = None) -> tuple[ArticleMeta, str] | None:
        """The article with its text, or None; with `collections`, None unless one of them holds it."""

    def chunks_with_articles(self, chunk_ids: Sequence[int]) -> dict[int, tuple[StoredChunk, ArticleMeta, str]]:
        """For each chunk id still present: the chunk, its article's metadata and the article text."""

    def recent_articles(self, filters: SearchFilters, *, limit: int = 500) -> list[tuple[ArticleMeta, str]]:
        """Articles passing the filters, newest first, with their text."""

    def lede_vectors(self, article_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The embedding of each article's opening passage: what a story is about, for grouping."""

    def cached_vectors(self, embed_keys: Iterable[str]) -> dict[str, np.ndarray]:
        """The stored embeddings among these keys (index.store.types.embed_key)."""

    def titles(self, prefix: str = "", *, collections: tuple[str, ...] | None = None,
               limit: int = 25) -> list[tuple[str, str]]:
        """(id, title) of articles whose title contains `prefix`, newest first."""

    def outlets(self, *, collections: tuple[str, ...] | None = None, prefix: str = "", limit: int = 1000) -> list[str]:
        """Outlets whose name contains `prefix`, those with most articles first."""

    def article_ids(self) -> list[str]:
        """Every article's id, in the order they were stored."""

    def counts(self) -> StoreCounts: ...

    def stats(self, filters: SearchFilters | None = None) -> dict:
        """articles, chunks, outlets, newest and oldest of what passes `filters`, the model and the
        backend (and the backend's own details)."""

    # -- search --------------------------------------------------------------------------------------

    def dense_search(self, vector: np.ndarray, k: int, filters: SearchFilters) -> list[ScoredChunk]:
        """The `k` chunks passing `filters` whose embeddings are closest to `vector`, best first."""

    def lexical_search(self, terms: Sequence[str], k: int, filters: SearchFilters) -> list[ScoredChunk]:
        """The `k` chunks passing `filters` that rank best by BM25 for any of `terms`, best first."""

    # -- writes and copies ---------------------------------------------------------------------------

    def writer(self) -> AbstractContextManager[StoreWriter]:
        """A writer; what it has not committed when the block ends is rolled back."""

    def bulk_load(self) -> AbstractContextManager[None]:
        """Around a load of many articles (`db copy`): the vector index may be built once at the end
        instead of kept up to date article by article; searches still work meanwhile, more slowly."""

    def export_articles(self) -> Iterator[ArticleRecord]:
        """Every article with all that is stored of it, for `newsdesk db copy`."""

    @property
    def feeds(self) -> FeedRegistry: ...

    @property
    def outbox(self) -> Outbox: ...

    @property
    def follows(self) -> FollowRegistry: ...

    def close(self) -> None: ...

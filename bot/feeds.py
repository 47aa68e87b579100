"""The feeds the bot polls, and the poller that ingests them without blocking the event loop.

Feeds live in their own small SQLite file beside the index, so the registry can change (an admin
adds a feed) while the index is being written, and the index can be rebuilt without losing the
list. A feed belongs to a collection: "shared" for feeds from config.toml, which every server
reads, and "guild:<id>" for a feed one server's admins added, which only that server reads.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable, Iterable
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol
from urllib.parse import urlsplit

from bot.config import FeedSettings
from index.article import DEFAULT_COLLECTION, utcnow
from index.ingest import IngestReport
from index.urls import redact_url

log = logging.getLogger(__name__)

REGISTRY_FILE = "feeds.sqlite3"
MAX_URL_CHARS = 2000


def guild_collection(guild_id: int) -> str:
    """The collection that holds what one server's admins added."""
    return f"guild:{guild_id}"


def check_feed_url(url: str) -> str:
    """The URL stripped, or ValueError saying why it cannot be a feed."""
    url = url.strip()
    if len(url) > MAX_URL_CHARS:
        raise ValueError("That URL is too long.")
    try:
        parts = urlsplit(url)
    except ValueError:
        raise ValueError("That is not a valid URL.") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("A feed URL must start with http:// or https://.")
    return url


@dataclass(frozen=True)
class Feed:
    url: str
    collection: str
    channel_id: int = 0  # where new headlines are posted; 0: nowhere
    added_by: int = 0  # the Discord user who added it; 0 for config feeds
    from_config: bool = False
    last_polled: datetime | None = None
    last_error: str | None = None


class FeedRegistry:
    """Feeds by (url, collection), with the outcome of each one's last poll.

    Each call opens its own connection, so the registry can be used from any thread.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with closing(self._connect()) as db, db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS feeds ("
                " url TEXT NOT NULL, collection TEXT NOT NULL, channel_id INTEGER NOT NULL DEFAULT 0,"
                " added_by INTEGER NOT NULL DEFAULT 0, from_config INTEGER NOT NULL DEFAULT 0,"
                " added_at REAL NOT NULL, last_polled REAL, last_error TEXT,"
                " PRIMARY KEY (url, collection))"
            )

    @classmethod
    def in_data_dir(cls, data_dir: str | Path) -> FeedRegistry:
        return cls(Path(data_dir) / REGISTRY_FILE)

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=10)

    def sync_config(self, feeds: Iterable[FeedSettings]) -> None:
        """Make the config feeds the registry's config feeds: new ones added, dropped ones removed."""
        wanted = {(check_feed_url(f.url), f.collection): f for f in feeds}
        now = utcnow().timestamp()
        with closing(self._connect()) as db, db:
            present = {(u, c) for u, c in db.execute("SELECT url, collection FROM feeds WHERE from_config = 1")}
            for url, collection in present - set(wanted):
                db.execute("DELETE FROM feeds WHERE url = ? AND collection = ?", (url, collection))
            for (url, collection), feed in wanted.items():
                db.execute(
                    "INSERT INTO feeds (url, collection, channel_id, from_config, added_at) VALUES (?, ?, ?, 1, ?)"
                    " ON CONFLICT (url, collection) DO UPDATE SET channel_id = excluded.channel_id, from_config = 1",
                    (url, collection, feed.channel, now),
                )

    def add(self, url: str, *, collection: str, channel_id: int = 0, added_by: int = 0) -> Feed:
        """Register a feed; ValueError if the URL is not usable or already registered there."""
        url = check_feed_url(url)
        with closing(self._connect()) as db, db:
            try:
                db.execute(
                    "INSERT INTO feeds (url, collection, channel_id, added_by, added_at) VALUES (?, ?, ?, ?, ?)",
                    (url, collection, channel_id, added_by, utcnow().timestamp()),
                )
            except sqlite3.IntegrityError:
                raise ValueError("That feed is already on the list.") from None
        return Feed(url, collection, channel_id, added_by)

    def remove(self, url: str, *, collection: str) -> bool:
        """Forget a feed that a server added; config feeds are changed in config.toml only."""
        with closing(self._connect()) as db, db:
            cursor = db.execute(
                "DELETE FROM feeds WHERE url = ? AND collection = ? AND from_config = 0", (url.strip(), collection)
            )
        return cursor.rowcount > 0

    def feeds(self, *, collections: Iterable[str] | None = None) -> list[Feed]:
        """Feeds in the given collections (all when None), shared ones first."""
        query = "SELECT url, collection, channel_id, added_by, from_config, last_polled, last_error FROM feeds"
        params: list = []
        if collections is not None:
            params = list(collections)
            query += f" WHERE collection IN ({', '.join('?' * len(params)) or 'NULL'})"
        query += " ORDER BY collection != ?, collection, added_at, url"
        params.append(DEFAULT_COLLECTION)
        with closing(self._connect()) as db:
            rows = db.execute(query, params).fetchall()
        return [_feed(row) for row in rows]

    def due(self, *, every: timedelta, now: datetime | None = None) -> list[Feed]:
        """Feeds never polled, or polled longer than `every` ago, the longest waiting first."""
        cutoff = ((now or utcnow()) - every).timestamp()
        with closing(self._connect()) as db:
            rows = db.execute(
                "SELECT url, collection, channel_id, added_by, from_config, last_polled, last_error FROM feeds"
                " WHERE last_polled IS NULL OR last_polled <= ? ORDER BY coalesce(last_polled, 0), added_at",
                (cutoff,),
            ).fetchall()
        return [_feed(row) for row in rows]

    def mark_polled(self, feed: Feed, *, when: datetime, error: str | None = None) -> None:
        with closing(self._connect()) as db, db:
            db.execute(
                "UPDATE feeds SET last_polled = ?, last_error = ? WHERE url = ? AND collection = ?",
                (when.timestamp(), error, feed.url, feed.collection),
            )


def _feed(row: tuple) -> Feed:
    url, collection, channel_id, added_by, from_config, last_polled, last_error = row
    polled = datetime.fromtimestamp(last_polled, timezone.utc) if last_polled is not None else None
    return Feed(url, collection, channel_id, added_by, bool(from_config), polled, last_error)


class Ingests(Protocol):
    """The part of bot.service.NewsService the poller uses."""

    def ingest(
        self, sources: list[str], *, collection: str = DEFAULT_COLLECTION, progress: bool = False
    ) -> IngestReport: ...


@dataclass(frozen=True)
class PollResult:
    feed: Feed
    added: list[str] = field(default_factory=list)  # ids of the new articles
    error: str | None = None
    first_poll: bool = False  # the feed's backlog, not news: headlines are not posted for it


class FeedPoller:
    """Polls due feeds one at a time, ingesting each in a worker thread.

    Ingesting embeds text (CPU-bound) and writes the index, so it runs off the event loop, and
    one poll at a time: a second `run` waits for the first instead of polling the same feeds twice.
    """

    def __init__(
        self, registry: FeedRegistry, service: Ingests, *, every: timedelta, clock: Callable[[], datetime] = utcnow
    ) -> None:
        if every <= timedelta(0):
            raise ValueError("the poll interval must be positive")
        self.registry, self.service, self.every, self.clock = registry, service, every, clock
        self._lock = asyncio.Lock()

    async def run(self, *, feeds: list[Feed] | None = None) -> list[PollResult]:
        """Poll `feeds`, or every feed that is due; a failing feed is recorded, never raised."""
        async with self._lock:
            if feeds is None:
                feeds = await asyncio.to_thread(self.registry.due, every=self.every, now=self.clock())
            return [await self._poll(feed) for feed in feeds]

    async def _poll(self, feed: Feed) -> PollResult:
        try:
            # Feeds a server added came from its members; config feeds from the operator.
            report = await asyncio.to_thread(
                self.service.ingest, [feed.url], collection=feed.collection, untrusted=feed.collection != DEFAULT_COLLECTION
            )
        except Exception as exc:  # one broken feed must not stop the others
            log.warning("polling %s failed", redact_url(feed.url), exc_info=True)
            report, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = _describe_failures(report)
        await asyncio.to_thread(self.registry.mark_polled, feed, when=self.clock(), error=error)
        if error:
            log.info("feed %s: %s", redact_url(feed.url), error)
        return PollResult(feed, list(report.added) if report else [], error, first_poll=feed.last_polled is None)


def _describe_failures(report: IngestReport) -> str | None:
    """The first failure's reason, with a count when there were more: a line for /status, not a log."""
    if not report.failed:
        return None
    first = report.failed[0].reason
    return first if len(report.failed) == 1 else f"{len(report.failed)} items failed, e.g. {first}"

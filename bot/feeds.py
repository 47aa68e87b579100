"""The feeds the bot polls, and the poller that ingests them without blocking the event loop.

The feeds themselves are kept by the store (index.store: FeedRegistry), for either backend. A feed
belongs to a collection: "shared" for feeds from config.toml, which every server reads, and
"guild:<id>" for a feed one server's admins added, which only that server reads.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Protocol

from bot.config import FeedSettings
from index.article import DEFAULT_COLLECTION, utcnow
from index.ingest import IngestReport
from index.store import Announcement, Feed, FeedRegistry, Outbox, StoreError
from index.urls import redact_url

log = logging.getLogger(__name__)


MAX_HEADLINES = 10  # per feed and poll: a feed that dumps 200 items must not flood a channel
PRUNE_EVERY_SECONDS = 3600.0
KEEP_SENT = timedelta(days=7)  # sent announcements (and posts counted for a cap) are kept this long


class OutboxPruning:
    """Forgets what the outbox sent KEEP_SENT ago, at most once per PRUNE_EVERY_SECONDS: workers and
    bot processes each call it from their loop."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._pruned_at = float("-inf")

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        if loop.time() - self._pruned_at > PRUNE_EVERY_SECONDS:
            await asyncio.to_thread(self.outbox.prune, older_than=KEEP_SENT)
            self._pruned_at = loop.time()


def guild_collection(guild_id: int) -> str:
    """The collection that holds what one server's admins added."""
    return f"guild:{guild_id}"


def collections_for(guild_id: int) -> tuple[str, str]:
    """What one server sees (its questions, its follows): the shared collection and its own, never
    another server's."""
    return (DEFAULT_COLLECTION, guild_collection(guild_id))


def this_process() -> str:
    """Who holds a lease: the machine and the process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def guild_of(feed: Feed) -> int:
    """The server whose channel gets the feed's headlines: recorded, or read from a server's own collection."""
    if feed.guild_id or not feed.collection.startswith("guild:"):
        return feed.guild_id
    return int(feed.collection.removeprefix("guild:"))


def config_feeds(sources: Iterable[FeedSettings]) -> list[Feed]:
    """The feeds config.toml lists, as the registry keeps them."""
    return [Feed(url=f.url, collection=f.collection, channel_id=f.channel, from_config=True, guild_id=f.guild)
            for f in sources]


class Ingests(Protocol):
    """The part of bot.service.NewsService the poller uses."""

    def ingest(
        self, sources: list[str], *, collection: str = DEFAULT_COLLECTION, progress: bool = False,
        untrusted: bool = False, announce: Announcement | None = None, backlog: bool = False,
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
        self, registry: FeedRegistry, service: Ingests, *, every: timedelta, clock: Callable[[], datetime] = utcnow,
        announce: bool = False, holder: str | None = None,
    ) -> None:
        """With `announce`, the headlines of a poll's new articles are queued in the store's outbox
        with the articles (a worker's way); `holder` is the worker whose leases the polls end."""
        if every <= timedelta(0):
            raise ValueError("the poll interval must be positive")
        self.registry, self.service, self.every, self.clock = registry, service, every, clock
        self.announce, self.holder = announce, holder
        self._lock = asyncio.Lock()

    async def run(self, *, feeds: list[Feed] | None = None) -> list[PollResult]:
        """Poll `feeds`, or every feed that is due; a failing feed is recorded, never raised."""
        async with self._lock:
            if feeds is None:
                feeds = await asyncio.to_thread(self.registry.due, every=self.every, now=self.clock())
            return [await self._poll(feed) for feed in feeds]

    async def _poll(self, feed: Feed) -> PollResult:
        # Feeds a server added came from its members; config feeds from the operator.
        options = {"collection": feed.collection, "untrusted": feed.collection != DEFAULT_COLLECTION,
                   "backlog": feed.last_polled is None}
        if self.announce and feed.channel_id and feed.last_polled is not None:  # a first poll is the backlog
            options["announce"] = Announcement(guild_of(feed), feed.channel_id, ())
        try:
            report = await asyncio.to_thread(self.service.ingest, [feed.url], **options)
        except StoreError:
            raise  # the database's trouble, not the feed's: the caller waits for it
        except Exception as exc:  # one broken feed must not stop the others
            log.warning("polling %s failed", redact_url(feed.url), exc_info=True)
            report, error = None, f"{type(exc).__name__}: {exc}"
        else:
            error = _describe_failures(report)
        await asyncio.to_thread(self.registry.mark_polled, feed, when=self.clock(), error=error, holder=self.holder)
        if error:
            log.info("feed %s: %s", redact_url(feed.url), error)
        return PollResult(feed, list(report.added) if report else [], error, first_poll=feed.last_polled is None)


def announcement_for(result: PollResult) -> Announcement | None:
    """The headlines a poll has to post: its new articles, if the feed has a channel and this was
    not its first poll (a feed's backlog is not news)."""
    if not (result.added and result.feed.channel_id and not result.first_poll):
        return None
    return Announcement(guild_of(result.feed), result.feed.channel_id, tuple(result.added[:MAX_HEADLINES]))


def _describe_failures(report: IngestReport) -> str | None:
    """The first failure's reason, with a count when there were more: a line for /status, not a log."""
    if not report.failed:
        return None
    first = report.failed[0].reason
    return first if len(report.failed) == 1 else f"{len(report.failed)} items failed, e.g. {first}"

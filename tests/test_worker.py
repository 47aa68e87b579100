"""`newsdesk worker` on its own: rounds of leased polls, announcements queued, and a database outage
waited out with one log line when it goes and one when it is back."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import timedelta
from types import SimpleNamespace

from bot.config import Config, FeedSettings
from bot.worker import FeedWorker
from index.article import Failure
from index.ingest import IngestReport
from index.store import Shards, StoreError
from index.store.sqlite_feeds import SQLiteFeedRegistry, SQLiteOutbox


class Service:
    """Ingests by recording; each call 'adds' one article per source."""

    def __init__(self, store) -> None:
        self.store = store
        self.calls: list[tuple[str, str]] = []

    def ingest(self, sources, *, collection="shared", progress=False, untrusted=False):
        self.calls.append((sources[0], collection))
        if "broken" in sources[0]:
            return IngestReport(failed=[Failure(sources[0], "HTTP 404")])
        return IngestReport(added=[f"{sources[0]}#{len(self.calls)}"])


class FlakyRegistry:
    """A registry whose database is away for the first `outage` calls of claim_due."""

    def __init__(self, registry, outage: int) -> None:
        self.registry, self.outage = registry, outage

    def claim_due(self, **kwargs):
        if self.outage:
            self.outage -= 1
            raise StoreError("PostgreSQL is unavailable: connection refused")
        return self.registry.claim_due(**kwargs)

    def __getattr__(self, name):
        return getattr(self.registry, name)


def worker_for(tmp_path, *, outage: int = 0, post_headlines: bool = True, feeds: tuple[str, ...] = ()):
    config = Config(base_dir=tmp_path)
    config.feeds.sources = [FeedSettings(url) for url in feeds]
    config.feeds.poll_minutes = 0.01
    config.discord.post_headlines = post_headlines
    state = tmp_path / "feeds.sqlite3"
    store = SimpleNamespace(feeds=FlakyRegistry(SQLiteFeedRegistry(state), outage), outbox=SQLiteOutbox(state))
    service = Service(store)
    return FeedWorker(config, service, holder="test-worker"), store, service


def test_a_round_polls_one_leased_feed_and_queues_its_headlines(tmp_path):
    worker, store, service = worker_for(tmp_path)
    store.feeds.add("https://wire.test/rss", collection="guild:5", channel_id=9)
    store.feeds.add("https://broken.test/rss", collection="guild:5", channel_id=9)
    assert len(asyncio.run(worker.run_round())) == 1  # one feed per lease
    first = asyncio.run(worker.run_round())
    assert [r.feed.url for r in first] == ["https://broken.test/rss"] and first[0].error == "HTTP 404"
    assert asyncio.run(worker.run_round()) == []  # nothing due, nothing leased twice
    assert store.outbox.unsent() == 0  # a feed's first poll is its backlog, not news
    (again,) = [r for r in _rounds_until_polled(worker, "https://wire.test/rss")]
    assert again.added and not again.first_poll
    (queued,) = store.outbox.take(holder="serve", shards=Shards(), lease=timedelta(minutes=1))
    assert (queued.guild_id, queued.channel_id, queued.article_ids) == (5, 9, tuple(again.added))


def _rounds_until_polled(worker, url):
    for _ in range(100):
        time.sleep(0.05)
        results = [r for r in asyncio.run(worker.run_round()) if r.feed.url == url]
        if results:
            return results
    raise AssertionError(f"{url} never came due again")


def test_an_outage_is_waited_out_with_one_line_each_way(tmp_path, caplog):
    worker, store, service = worker_for(tmp_path, outage=4, feeds=("https://wire.test/rss",))

    async def main():
        task = asyncio.create_task(worker.run())
        for _ in range(400):
            await asyncio.sleep(0.05)
            if service.calls:
                break
        worker.stop()
        await task

    async def no_wait(seconds):
        await asyncio.sleep(0.01)

    worker._pause = no_wait  # the backoff's length is not what this test is about
    with caplog.at_level(logging.WARNING, logger="bot.worker"):
        asyncio.run(main())
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.worker"]
    assert service.calls == [("https://wire.test/rss", "shared")]  # polled once the database was back
    assert len(lines) == 2 and "unavailable" in lines[0] and lines[1].startswith("the database is back")

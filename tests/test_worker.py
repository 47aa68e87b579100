"""`newsdesk worker` on its own, with a real NewsService (SQLite, the fake embedder) and feeds from a
local server: one feed per lease, headlines queued with the articles after a feed's first poll, a
lease kept through a long poll and never ended by a worker that lost it, and a database outage
waited out with one log line when it goes and one when it is back."""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta

import pytest
from crash_worker import story_text
from http_fixture import LocalHTTPServer

from bot.config import FeedSettings
from bot.service import NewsService
from bot.worker import FeedWorker
from index.article import make_article_id
from index.store import Shards, StoreError


def rss(server: LocalHTTPServer, path: str, count: int, *, delay: float = 0.0) -> list[str]:
    """A feed of `count` items at `path`; returns their article ids."""
    links = [f"{server.base_url}{path}/story/{i}" for i in range(count)]
    items = "".join(f"<item><title>Story {i}</title><link>{link}</link><guid>{link}</guid>"
                    f"<description>{story_text(path + str(i), 3)}</description></item>" for i, link in enumerate(links))
    server.add(path, f'<?xml version="1.0"?><rss version="2.0"><channel><title>Wire</title><link>{server.base_url}/'
                     f"</link>{items}</channel></rss>", content_type="application/rss+xml", delay=delay)
    return [make_article_id(url=link) for link in links]


@pytest.fixture
def server():
    with LocalHTTPServer(max_hold_seconds=30) as server:
        yield server


def worker_for(config, fake_embedder, server, *, feeds: int = 1) -> FeedWorker:
    config.feeds.poll_minutes = 0.01  # due again after 0.6 s
    config.discord.post_headlines = True
    config.fetch.fetch_linked_pages = False
    config.feeds.sources = [FeedSettings(server.url(f"/feed/{n}.xml"), channel=10 + n, guild=(n + 1) << 22)
                            for n in range(feeds)]
    return FeedWorker(config, NewsService(config, embedder=fake_embedder), holder="worker-1")


async def until_polled(worker: FeedWorker, url: str, *, rounds: int = 100):
    for _ in range(rounds):
        results = [r for r in await worker.run_round() if r.feed.url == url]
        if results:
            return results[0]
        await asyncio.sleep(0.05)
    raise AssertionError(f"{url} was never polled")


def test_a_worker_leases_one_feed_a_round_and_queues_headlines_after_the_first_poll(config, fake_embedder, server):
    first = {n: rss(server, f"/feed/{n}.xml", 2) for n in range(2)}
    worker = worker_for(config, fake_embedder, server, feeds=2)
    outbox = worker.service.store.outbox

    rounds = [asyncio.run(worker.run_round()) for _ in range(3)]
    assert [len(r) for r in rounds] == [1, 1, 0]  # one feed per lease; then nothing is due
    assert sorted(rounds[0][0].added + rounds[1][0].added) == sorted(first[0] + first[1])
    assert outbox.unsent() == 0  # a first poll is the feed's backlog, not news

    fresh = rss(server, "/feed/0.xml", 4)[2:]
    result = asyncio.run(until_polled(worker, server.url("/feed/0.xml")))
    assert result.added == fresh
    (queued,) = outbox.take(holder="serve", shards=Shards(), lease=timedelta(minutes=1))
    assert (queued.guild_id, queued.channel_id, set(queued.article_ids)) == (1 << 22, 10, set(fresh))
    assert all(worker.service.store.has_article(i) for i in fresh)


def test_a_long_poll_keeps_its_lease_and_a_lost_lease_is_not_ended(config, fake_embedder, server, caplog):
    rss(server, "/feed/0.xml", 2, delay=1.2)
    config.feeds.lease_minutes = 0.01  # 0.6 s: shorter than the poll, which renews it meanwhile
    worker = worker_for(config, fake_embedder, server)
    registry = worker.registry

    async def poll_while_another_worker_tries():
        polling = asyncio.create_task(worker.run_round())
        await asyncio.sleep(0.9)  # past the first lease: renewed, so no one else may take the feed
        taken = await asyncio.to_thread(registry.claim_due, every=worker.every, holder="worker-2",
                                        lease=timedelta(minutes=5))
        return await polling, taken

    results, taken = asyncio.run(poll_while_another_worker_tries())
    assert len(results) == 1 and results[0].error is None and taken == []

    # A worker whose lease was taken over ends the new holder's lease no more.
    rss(server, "/feed/0.xml", 3)
    (feed,) = registry.claim_due(every=timedelta(0), holder="worker-2", lease=timedelta(minutes=5))
    registry.mark_polled(feed, when=feed.added_at, holder="worker-1")
    assert registry.claim_due(every=timedelta(0), holder="worker-3", lease=timedelta(minutes=5)) == []
    assert not registry.renew(feed, holder="worker-1", lease=timedelta(minutes=5))
    assert registry.renew(feed, holder="worker-2", lease=timedelta(minutes=5))


class Flaky:
    """A registry whose database is away for its first `calls` calls."""

    def __init__(self, registry, calls: int) -> None:
        self.registry, self.calls = registry, calls

    def __getattr__(self, name):
        method = getattr(self.registry, name)

        def call(*args, **kwargs):
            if self.calls:
                self.calls -= 1
                raise StoreError("PostgreSQL is unavailable: connection refused")
            return method(*args, **kwargs)

        return call


def test_an_outage_is_waited_out_with_backoff_and_one_line_each_way(config, fake_embedder, server, caplog):
    rss(server, "/feed/0.xml", 2)
    worker = worker_for(config, fake_embedder, server)
    worker.registry = worker.poller.registry = Flaky(worker.registry, calls=4)
    pauses: list[float] = []

    async def pause(seconds: float) -> None:
        pauses.append(seconds)
        await asyncio.sleep(0)

    worker._pause = pause  # the backoff is recorded rather than slept

    async def main():
        running = asyncio.create_task(worker.run())
        while not worker.service.store.feeds.feeds() or worker.service.store.feeds.feeds()[0].last_polled is None:
            await asyncio.sleep(0.05)
        worker.stop()
        await running

    with caplog.at_level(logging.WARNING, logger="bot.worker"):
        asyncio.run(asyncio.wait_for(main(), 30))
    lines = [r.getMessage() for r in caplog.records if r.name == "bot.worker"]
    assert len(lines) == 2 and "unavailable" in lines[0] and lines[1].startswith("the database is back")
    assert pauses[:4] == [1.0, 2.0, 4.0, 8.0]  # doubling while the database is away

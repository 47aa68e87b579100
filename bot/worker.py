"""`newsdesk worker`: polls the feeds that are due and ingests them, beside any number of other workers.

Workers share the feeds through leases in the store (FeedRegistry.claim_due): a feed is polled by
one worker at a time, and the feeds of a worker that dies go to the others when its leases run out.
New headlines are not posted from here: they are queued in the store's outbox with the articles
(one transaction on PostgreSQL), and the bot process that holds the shard of the channel's server
posts them. A database that goes away is waited for,
with a backoff and one log line when it goes and one when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from datetime import timedelta
from typing import TYPE_CHECKING

from bot.feeds import FeedPoller, OutboxPruning, PollResult, config_feeds, this_process
from index.store import StoreError
from index.urls import redact_url

if TYPE_CHECKING:
    from bot.config import Config
    from bot.service import NewsService

log = logging.getLogger(__name__)

CHECK_SECONDS = 30.0  # how often a worker with nothing due looks again
FEEDS_PER_CLAIM = 1  # one at a time: a lease then need only outlast one poll, and the others get theirs
MAX_BACKOFF_SECONDS = 60.0


class FeedWorker:
    def __init__(self, config: Config, service: NewsService, *, holder: str | None = None,
                 check_seconds: float = CHECK_SECONDS) -> None:
        self.config, self.service = config, service
        self.registry, self.outbox = service.store.feeds, service.store.outbox
        self.every = timedelta(minutes=config.feeds.poll_minutes)
        self.lease = timedelta(minutes=config.feeds.lease_minutes)
        self.holder = holder or this_process()
        # Nothing due: look again before the next feed can fall due.
        self.check_seconds = min(check_seconds, self.every.total_seconds() / 3)
        self.poller = FeedPoller(self.registry, service, every=self.every, holder=self.holder,
                                 announce=config.discord.post_headlines)
        self._stop = asyncio.Event()
        self._synced = False
        self.pruning = OutboxPruning(self.outbox)

    def stop(self) -> None:
        self._stop.set()

    async def run_round(self) -> list[PollResult]:
        """Lease a due feed and poll it (its headlines are queued with its articles); [] when none is due."""
        if not self._synced:  # the config's feeds, once the database answers
            await asyncio.to_thread(self.registry.sync_config, config_feeds(self.config.feeds.sources))
            self._synced = True
        await self.pruning.run()
        feeds = await asyncio.to_thread(self.registry.claim_due, every=self.every, holder=self.holder,
                                        lease=self.lease, limit=FEEDS_PER_CLAIM)
        results = []
        for feed in feeds:
            renewing = asyncio.create_task(self._renew(feed))
            try:
                results += await self.poller.run(feeds=[feed])
            finally:
                renewing.cancel()
        return results

    async def _renew(self, feed) -> None:
        """Keep the lease while a long poll runs (a feed of 500 items, each page fetched): another
        worker must not take the feed meanwhile."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                held = await asyncio.to_thread(self.registry.renew, feed, holder=self.holder, lease=self.lease)
            except StoreError:
                continue  # the poll meets the outage too; the worker's loop reports it
            if not held:
                log.warning("worker %s lost its lease on %s while polling it", self.holder, redact_url(feed.url))
                return

    async def run(self) -> None:
        """Rounds until `stop`: at once while feeds are due, every `check_seconds` when none is."""
        log.info("worker %s polling feeds every %s", self.holder, self.every)
        outage_since: float | None = None
        backoff = 1.0
        while not self._stop.is_set():
            try:
                results = await self.run_round()
            except StoreError as exc:
                if outage_since is None:  # one line per outage, not one per attempt
                    outage_since = asyncio.get_running_loop().time()
                    log.warning("the database is unavailable (%s); waiting for it", exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
                continue
            if outage_since is not None:
                log.warning("the database is back after %.0f s", asyncio.get_running_loop().time() - outage_since)
                outage_since, backoff = None, 1.0
            if not results:
                await self._pause(self.check_seconds)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), seconds)
        except TimeoutError:
            pass


def run_worker(config: Config, service: NewsService) -> None:
    """Run a worker until SIGINT or SIGTERM; the feed it polls then is finished first."""

    async def main() -> None:
        worker = FeedWorker(config, service)
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, worker.stop)
        await worker.run()

    asyncio.run(main())

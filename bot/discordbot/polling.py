"""Background feed polling, and posting new headlines to a feed's channel.

Every minute the registry is asked which feeds are due (each feed is read every
`[feeds] poll_minutes` after its own last poll, which survives restarts). Ingesting runs in a
worker thread (bot.feeds.FeedPoller), so polling never holds up answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from bot.discordbot.replies import send_to
from bot.feeds import FeedPoller, PollResult, announcement_for
from bot.render import render_headlines
from index.store import Announcement, Feed, StoreError
from index.urls import redact_url

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

log = logging.getLogger(__name__)

CHECK_SECONDS = 60


class FeedPolling(commands.Cog):
    def __init__(self, bot: NewsBot) -> None:
        self.bot = bot
        self.poller = FeedPoller(bot.feeds, bot.service, every=timedelta(minutes=bot.config.feeds.poll_minutes))
        self.check = tasks.loop(seconds=CHECK_SECONDS)(self.poll_due)
        self.check.before_loop(self.bot.wait_until_ready)
        self._pending: set[asyncio.Task] = set()

    async def cog_load(self) -> None:
        self.check.start()

    async def cog_unload(self) -> None:
        self.check.cancel()
        for task in self._pending:
            task.cancel()

    async def poll_due(self) -> None:
        try:
            results = await self.poller.run()
        except StoreError as exc:
            # The database is away: an exception would end this loop for good; the next round retries.
            log.warning("feed polling skipped a round: %s", exc)
            return
        await self.post_headlines(results)

    def poll_soon(self, feed: Feed) -> None:
        """Read a newly added feed now rather than at the next check."""
        self._spawn(self._poll_now(feed))

    async def _poll_now(self, feed: Feed) -> None:
        await self.post_headlines(await self.poller.run(feeds=[feed]))

    def _spawn(self, work: Coroutine) -> None:
        task = asyncio.create_task(work)
        self._pending.add(task)  # the loop keeps only weak references to tasks
        task.add_done_callback(self._pending.discard)

    async def post_headlines(self, results: Sequence[PollResult]) -> None:
        """New articles of feeds that have a channel, unless it was the feed's first poll (its backlog)."""
        if not self.bot.config.discord.post_headlines:
            return
        for result in results:
            announcement = announcement_for(result)
            if announcement is None:
                continue
            channel = self.bot.get_channel(announcement.channel_id)
            if not isinstance(channel, discord.abc.Messageable):
                log.warning("feed %s: headline channel %s not found", redact_url(result.feed.url),
                            announcement.channel_id)
                continue
            items = await asyncio.to_thread(headline_items, self.bot.service, announcement)
            try:
                await send_to(channel, render_headlines(items))
            except discord.HTTPException:
                log.warning(
                    "could not post headlines of %s in %s", redact_url(result.feed.url), channel.id, exc_info=True
                )


def headline_items(service, announcement: Announcement) -> list[tuple[str, str | None, str | None]]:
    """(title, url, outlet) of the announcement's articles that the store holds."""
    items = []
    for article_id in announcement.article_ids:
        found = service.article(article_id)
        if found is not None:
            meta, _ = found
            items.append((meta.title, meta.url, meta.outlet))
    return items

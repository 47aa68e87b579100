"""Posting the headlines that feed workers announce ([feeds] poll_in_bot = false).

Workers queue announcements in the store's outbox; each bot process takes those of the servers on
its own shards, under a lease, posts them and marks them sent. A process killed after taking some
leaves them to the next holder of those shards once the lease runs out: it posts them again with
the same nonce, which Discord matches within a few minutes (enforce_nonce) to the message the dead
process may have sent already. So a kill lands on the "at least once" side, and the nonce turns
that into once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from bot.discordbot.polling import headline_items
from bot.discordbot.replies import send_to
from bot.feeds import this_process
from bot.render import render_headlines
from index.store import Announcement, StoreError

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
# An article missing from the store is waited for this long (a read replica catching up), then left out.
REPLICA_PATIENCE = timedelta(minutes=5)


class AnnouncementDelivery(commands.Cog):
    def __init__(self, bot: NewsBot, *, every: float = CHECK_SECONDS) -> None:
        self.bot = bot
        self.outbox = bot.service.store.outbox
        self.holder = this_process()
        self.lease = timedelta(seconds=bot.config.discord.delivery_lease_seconds)
        self.check = tasks.loop(seconds=every)(self.deliver)
        self.check.before_loop(self.bot.wait_until_ready)
        self._unavailable = False

    async def cog_load(self) -> None:
        self.check.start()

    async def cog_unload(self) -> None:
        self.check.cancel()

    async def deliver(self) -> int:
        """Post what is due on this process's shards; returns how many announcements were posted."""
        try:
            taken = await asyncio.to_thread(self.outbox.take, holder=self.holder, shards=self.bot.shards_held,
                                            lease=self.lease)
        except StoreError as exc:
            # The database is away: an exception would end this loop for good; the next round retries.
            self._report_outage(exc)
            return 0
        self._unavailable = False
        posted = 0
        for announcement in taken:
            posted += await self._post(announcement)
        return posted

    async def _post(self, announcement: Announcement) -> bool:
        channel = self.bot.get_channel(announcement.channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            # Not in this process's cache (a config feed whose server is not known): REST still reaches it.
            channel = self.bot.get_partial_messageable(announcement.channel_id)
        try:
            items = await asyncio.to_thread(headline_items, self.bot.service, announcement)
            if len(items) < len(announcement.article_ids) and _age(announcement) < REPLICA_PATIENCE:
                return False  # a read replica that has not caught up yet: the lease runs out, it is tried again
            if items:
                await send_to(channel, render_headlines(items), nonce=f"nd{announcement.id}")
        except discord.HTTPException as exc:
            if exc.status == 429 or exc.status >= 500:
                return False  # Discord's trouble: the lease runs out and it is tried again
            # A channel that is gone or closed to the bot: posting again would not help.
            log.warning("could not post announcement %s in channel %s: %s", announcement.id,
                        announcement.channel_id, exc)
        except StoreError as exc:
            self._report_outage(exc)
            return False
        try:
            await asyncio.to_thread(self.outbox.mark_sent, announcement.id)
        except StoreError as exc:  # posted; the nonce keeps the retry from posting it twice
            self._report_outage(exc)
            return False
        return True

    def _report_outage(self, exc: StoreError) -> None:
        """One line per outage: the next round that reaches the database ends it."""
        if not self._unavailable:
            log.warning("announcements wait: %s", exc)
        self._unavailable = True


def _age(announcement: Announcement) -> timedelta:
    created = announcement.created_at
    return datetime.now(timezone.utc) - created if created else timedelta(0)

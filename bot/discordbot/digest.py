"""The daily digest, posted to `[discord] digest_channel` at `digest_time` (UTC), once a day.

The digest covers what the channel's server may read: the shared feeds and its own.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, time, timezone
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from bot.discordbot.replies import send_to
from bot.discordbot.scope import filters_for
from bot.render import render_answer
from index.store import StoreError

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

log = logging.getLogger(__name__)


def parse_clock(text: str) -> time:
    """'07:30' -> 07:30 UTC; ValueError otherwise."""
    return datetime.strptime(text.strip(), "%H:%M").time().replace(tzinfo=timezone.utc)


class DailyDigest(commands.Cog):
    def __init__(self, bot: NewsBot, *, at: time, channel_id: int) -> None:
        self.bot, self.channel_id = bot, channel_id
        self.daily = tasks.loop(time=at)(self.post)
        self.daily.before_loop(self.bot.wait_until_ready)

    async def cog_load(self) -> None:
        self.daily.start()

    async def cog_unload(self) -> None:
        self.daily.cancel()

    async def post(self) -> None:
        channel = self.bot.get_channel(self.channel_id)
        if not isinstance(channel, discord.TextChannel):
            if len(self.bot.shards_held.ids) == self.bot.shards_held.count:  # else: another process's server
                log.warning("digest channel %s not found or not a text channel", self.channel_id)
            return
        filters = filters_for(channel.guild.id)
        try:
            answer = await asyncio.to_thread(self.bot.service.digest, filters=filters)
        except Exception:
            # An error escaping a tasks.loop ends the loop for good: log it and try again tomorrow.
            log.error("could not write the digest for channel %s", channel.id, exc_info=True)
            return
        # One digest per channel and day, however many processes share the store, and after a
        # restart: the claim is made last, so a digest that could not be written is not claimed.
        today = datetime.now(timezone.utc).date()
        try:
            claimed = await asyncio.to_thread(self.bot.feeds.claim_digest, channel.id, today)
        except StoreError as exc:
            log.warning("could not claim the digest for channel %s: %s", channel.id, exc)
            return
        if not claimed:
            log.info("the digest for channel %s on %s is posted already", channel.id, today)
            return
        try:
            await send_to(channel, render_answer(answer))
        except discord.HTTPException:
            log.warning("could not post the digest in %s", channel.id, exc_info=True)

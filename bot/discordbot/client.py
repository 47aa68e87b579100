"""The bot itself: intents, cogs, command sync, and the two ways to start it.

`create_bot` builds a bot around an existing NewsService (the tests use it with a local
Discord emulator); `run_bot` is what `newsdesk serve` calls and blocks until the bot stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.config import Config, ConfigError
from bot.discordbot.admin import AdminCommands
from bot.discordbot.ask import ChannelQuestions
from bot.discordbot.delivery import AnnouncementDelivery
from bot.discordbot.commands import MemberCommands
from bot.discordbot.digest import DailyDigest, parse_clock
from bot.discordbot.follows import FollowCommands
from bot.discordbot.endpoints import point_at
from bot.discordbot.polling import FeedPolling
from bot.discordbot.ratelimit import RequestLimits
from bot.discordbot.tree import NewsTree
from bot.feeds import config_feeds
from index.store import Feed, FeedRegistry, Shards

if TYPE_CHECKING:
    from bot.service import NewsService

log = logging.getLogger(__name__)


class NewsBot:
    """A discord.py bot that answers from a NewsService (the parts its sharded and unsharded kinds share).

    Slash commands and channel questions only: prefix commands are switched off (see on_message),
    so a mention is read as a question, never as a command name.
    """

    def __init__(
        self, config: Config, service: NewsService, *, feeds: FeedRegistry, guild_ready_timeout: float = 2.0,
        **gateway,
    ) -> None:
        intents = discord.Intents.default()
        # Needed to read questions in ask-channels and follow-ups in the bot's threads, which
        # do not mention the bot. Enable "Message Content Intent" for the bot in Discord's portal.
        intents.message_content = True
        super().__init__(
            command_prefix=commands.when_mentioned, intents=intents, help_command=None, tree_cls=NewsTree,
            allowed_mentions=discord.AllowedMentions.none(), guild_ready_timeout=guild_ready_timeout, **gateway,
        )
        self.config, self.service, self.feeds = config, service, feeds
        self.limits = RequestLimits.from_settings(config.discord)
        settings = config.discord
        self.shards_held = Shards(settings.shards, settings.shard_count)

    async def setup_hook(self) -> None:
        await self.add_cog(MemberCommands(self))
        await self.add_cog(AdminCommands(self))
        await self.add_cog(ChannelQuestions(self))
        await self.add_cog(FollowCommands(self))
        # One process polls the feeds and posts their headlines itself; with workers polling, they
        # queue headlines in the outbox. Either way each bot process posts what the outbox holds for
        # the servers on its shards: follows' matches, and the workers' headlines.
        if self.config.feeds.poll_in_bot:
            await self.add_cog(FeedPolling(self))
        await self.add_cog(AnnouncementDelivery(self))
        settings = self.config.discord
        if settings.digest_time and settings.digest_channel:
            digest = DailyDigest(self, at=parse_clock(settings.digest_time), channel_id=settings.digest_channel)
            await self.add_cog(digest)
        if 0 in self.shards_held.ids:  # one process registers the commands: the one holding shard 0
            await self.sync_commands()

    async def sync_commands(self) -> None:
        """Register the slash commands: in the dev guilds (instant) if any are set, else globally."""
        guild_ids = self.config.discord.dev_guild_ids
        if not guild_ids:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))
            return
        for guild_id in guild_ids:
            guild = discord.Object(id=guild_id)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to guild %s", len(synced), guild_id)

    async def on_message(self, message: discord.Message, /) -> None:
        """No prefix commands: channel questions are handled by the ChannelQuestions cog."""

    async def on_ready(self) -> None:
        log.info("logged in as %s (%s) in %d servers on shards %s of %d", self.user,
                 self.user.id if self.user else "?", len(self.guilds), list(self.shards_held.ids),
                 self.shards_held.count)

    def poll_soon(self, feed: Feed) -> None:
        """Read a feed now (after /feeds add) instead of at the next scheduled check; with workers
        polling, the first of them to look takes it (a new feed is due at once)."""
        polling = self.get_cog(FeedPolling.__cog_name__)
        if isinstance(polling, FeedPolling):
            polling.poll_soon(feed)


class WholeGatewayBot(NewsBot, commands.Bot):
    """The bot of one process that holds the whole gateway."""


class ShardedBot(NewsBot, commands.AutoShardedBot):
    """The bot of a process that holds some of the gateway's shards ([discord] shard_count, shard_ids)."""


async def create_bot(config: Config, service: NewsService, *, guild_ready_timeout: float = 2.0) -> NewsBot:
    """A bot for `service`, pointed at the configured Discord endpoints, with the config feeds registered.

    Not started: use `async with bot: await bot.start(token)`. Async because the feed registry
    is opened off the event loop.
    """
    point_at(config.discord)
    feeds = await asyncio.to_thread(lambda: service.store.feeds)
    await asyncio.to_thread(feeds.sync_config, config_feeds(config.feeds.sources))
    settings = config.discord
    if len(settings.shards) < settings.shard_count and config.feeds.poll_in_bot:
        # It would poll every feed beside the other processes, and drop headlines for their servers.
        raise ConfigError(f"this process holds shards {list(settings.shards)} of {settings.shard_count}: leave the "
                          "feeds to `newsdesk worker` processes with [feeds] poll_in_bot = false")
    if settings.shard_count == 1:
        return WholeGatewayBot(config, service, feeds=feeds, guild_ready_timeout=guild_ready_timeout)
    return ShardedBot(config, service, feeds=feeds, guild_ready_timeout=guild_ready_timeout,
                          shard_count=settings.shard_count, shard_ids=list(settings.shards))


def run_bot(config: Config, token: str, *, service: NewsService | None = None) -> None:
    """Run the bot until it is stopped (Ctrl-C). The token comes from DISCORD_TOKEN and is never logged.

    Pass `service` to reuse a NewsService already loaded (the model loads once); else one is built.
    """
    if not token.strip():
        raise ValueError("a Discord bot token is needed (set DISCORD_TOKEN)")
    if not logging.getLogger().handlers:
        discord.utils.setup_logging(root=True)
    try:
        asyncio.run(_serve(config, token.strip(), service))
    except KeyboardInterrupt:
        log.info("stopped")


async def _serve(config: Config, token: str, service: NewsService | None) -> None:
    if service is None:
        from bot.service import NewsService  # loads the embedding model: only when serving

        service = await asyncio.to_thread(NewsService, config)
    bot = await create_bot(config, service)
    async with bot:
        await bot.start(token)

"""Topic follows: /follow, /follows and /unfollow (admins only).

A follow belongs to its server: it sees the shared news and the server's own, and its matches are
posted in the channel it names (bot.discordbot.delivery). Every command here is for admins; the
cog-wide check says so once.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discordbot.errors import NotAdmin, UserError
from bot.discordbot.permissions import member_is_admin
from bot.discordbot.replies import send_followups
from bot.discordbot.scope import filters_for
from bot.follows import Topic
from bot.render import clip, render_follows, render_note, safe_text
from index.store import FOLLOW_LEVELS
from index.urls import redact_url

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

# Discord allows 6,000 characters in an option: a longer topic than MAX_TOPIC_CHARS gets our own message.
TopicText = app_commands.Range[str, 1, 6000]
LEVELS = [app_commands.Choice(name=f"{level}: {about}", value=level) for level, about in zip(
    FOLLOW_LEVELS, ("only close matches", "a story or a subject",
                    "a whole section: politics, sport, technology…"))]
# How a reply names a level chosen for the admin, a topic that names a section (Topic.section).
NAMES_A_SECTION = "broad: it names a whole section of the news"
# What a story's message needs in its channel: to see it, to post there, and to show the embed.
NEEDED = discord.Permissions(view_channel=True, send_messages=True, embed_links=True)


def check_postable(channel: discord.TextChannel) -> None:
    """UserError unless the bot may post a story's message in `channel`."""
    me = channel.guild.me
    if me is not None and not NEEDED.is_subset(channel.permissions_for(me)):
        raise UserError(f"I can't post in {channel.mention}: I need View Channel, Send Messages and Embed Links there.")


def topic_from(text: str) -> Topic:
    try:
        return Topic.parse(text)
    except ValueError as exc:
        raise UserError(safe_text(str(exc))) from None


class FollowCommands(commands.Cog):
    def __init__(self, bot: NewsBot) -> None:
        self.bot = bot

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if not member_is_admin(interaction):
            raise NotAdmin("not an admin")
        return True

    @app_commands.command(name="follow", description="Post new stories on a topic in a channel (admins only).")
    @app_commands.describe(
        topic='What to follow, e.g. Iran nuclear talks; "quoted words" must appear, -word must not',
        channel="Where to post them (default: here)",
        level="How close a story must be (default: broad for a section such as sport or climate, else normal)",
        since="Also post matching stories already indexed since then, e.g. 24h, 3d, monday",
    )
    @app_commands.choices(level=LEVELS)
    @app_commands.guild_only()
    async def follow(self, interaction: discord.Interaction, *, topic: TopicText,
                     channel: discord.TextChannel | None = None, level: str | None = None,
                     since: app_commands.Range[str, 1, 40] | None = None) -> None:
        """The options are checked before deferring, so a mistake gets its answer at once."""
        parsed = topic_from(topic)
        start = filters_for(interaction.guild_id, since=since).since
        target = channel or interaction.channel
        if not isinstance(target, discord.TextChannel):
            raise UserError("Name a text channel to post the stories in.")
        check_postable(target)
        await interaction.response.defer(ephemeral=True, thinking=True)
        try:
            follow, backfilled = await asyncio.to_thread(
                self.bot.service.follow, parsed, guild_id=interaction.guild_id, channel_id=target.id, level=level,
                created_by=interaction.user.id, limit=self.bot.config.follows.max_per_server, since=start,
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
        how = follow.level
        if level is None and how == "broad":
            how = NAMES_A_SECTION
        text = (f"Following *{safe_text(clip(follow.topic, 200))}* ({how}): new stories on it will be "
                f"posted in {target.mention}, at most {self.bot.config.follows.max_posts_per_hour} an hour.")
        if start is not None:
            text += f" {backfilled} already indexed since {safe_text(since.strip())} matched: they come first."
        await send_followups(interaction, [render_note(text)], ephemeral=True)

    @app_commands.command(name="follows", description="The topics this server follows (admins only).")
    @app_commands.guild_only()
    async def follows(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        found = await asyncio.to_thread(self.bot.service.store.follows.follows, guild_id=interaction.guild_id)
        await send_followups(interaction, render_follows(found), ephemeral=True)

    @app_commands.command(name="unfollow", description="Stop following a topic (admins only).")
    @app_commands.describe(follow="The follow to remove (start typing its topic)")
    @app_commands.guild_only()
    async def unfollow(self, interaction: discord.Interaction, *, follow: app_commands.Range[str, 1, 100]) -> None:
        """The option's value is a follow's id, as its autocomplete offers; a topic typed out is looked up."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        service = self.bot.service
        mine = await asyncio.to_thread(service.store.follows.follows, guild_id=interaction.guild_id)
        wanted = follow.strip()
        chosen = next((f for f in mine if str(f.id) == wanted), None) or next(
            (f for f in mine if f.topic.casefold() == wanted.casefold()), None)
        if chosen is None or not await asyncio.to_thread(service.unfollow, chosen.id, guild_id=interaction.guild_id):
            raise UserError("This server has no such follow: `/follows` lists them.")
        what = f"*{safe_text(clip(chosen.topic, 200))}*" if chosen.topic else "that feed's new items"
        text = f"Stopped following {what} in <#{chosen.channel_id}>."
        await send_followups(interaction, [render_note(text)], ephemeral=True)

    @unfollow.autocomplete("follow")
    async def _own_follows(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if not member_is_admin(interaction):
            return []  # discord.py runs no checks for autocomplete
        mine = await asyncio.to_thread(self.bot.service.store.follows.follows, guild_id=interaction.guild_id)
        channels = {c.id: c.name for c in interaction.guild.channels} if interaction.guild else {}
        named = [(f"{f.topic or 'every item'}{' of ' + redact_url(f.feed_url) if f.feed_url else ''}", f) for f in mine]
        return [
            app_commands.Choice(name=clip(f"{name} (#{channels.get(f.channel_id, f.channel_id)})", 100), value=str(f.id))
            for name, f in named if current.casefold() in name.casefold()
        ][:25]

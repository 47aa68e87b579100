"""Admin commands: /feeds add|remove|list, /ingest, /expire and /remove.

What a server's admins add goes into that server's own collection ("guild:<id>"): it feeds that
server's answers and no other's. Feeds from config.toml are shared and can only be changed there.
URLs must be http(s): an admin must not be able to make the bot read its own files. Likewise
/expire and /remove take articles out of the server's own collection only: the shared articles
are the operator's (`newsdesk expire`), and other servers' are none of this server's business.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discordbot import autocomplete
from bot.discordbot.autocomplete import pick_article
from bot.discordbot.errors import UserError
from bot.discordbot.follows import NAMES_A_SECTION, check_postable, topic_from
from bot.discordbot.permissions import admin_only, member_is_admin
from bot.discordbot.replies import send_followups
from bot.discordbot.scope import collections_for
from bot.feeds import guild_collection
from bot.follows import Topic
from bot.render import clip, render_feeds, render_note, safe_text
from index.ingest import IngestReport
from index.store import FOLLOW_FORMATS, StoreError
from index.timefilter import parse_duration
from index.urls import check_feed_url, redact_url

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

Url = app_commands.Range[str, 10, 2000]


def checked_url(url: str) -> str:
    try:
        return check_feed_url(url)
    except ValueError as exc:
        raise UserError(str(exc)) from None


def describe_ingest(report: IngestReport) -> str:
    """An /ingest outcome in one or two lines."""
    if report.added:
        line = f"Added {len(report.added)} article{'s' if len(report.added) != 1 else ''}; /ask can use it now."
    elif report.duplicates:
        line = "Nothing new: that is already in the index."
    else:
        line = "Nothing was added."
    if report.failed:
        line += f"\nCouldn't read it: {safe_text(clip(report.failed[0].reason, 300))}"
    return line


def describe_removal(removed: int, nothing: str) -> str:
    """An /expire or /remove outcome: the count, or `nothing` saying why there was none."""
    if not removed:
        return f"Nothing was removed: {nothing}"
    return f"Removed {removed} article{'s' if removed != 1 else ''} from this server's news."


class AdminCommands(commands.Cog):
    feeds = app_commands.Group(
        name="feeds", description="The news feeds this server reads (admins only).", guild_only=True,
        allowed_contexts=app_commands.AppCommandContext(guild=True),
    )

    def __init__(self, bot: NewsBot) -> None:
        self.bot = bot

    @feeds.command(name="add", description="Read a feed (RSS or Atom) for this server's answers.")
    @app_commands.describe(
        url="The feed's address (http or https)", channel="Post its new items here (optional)",
        filter='Post only items on this topic, as /follow reads it: "phrases" must appear, -word must not',
        format="Each item as a headline link (default), or as a summary that quotes and cites it",
    )
    @app_commands.choices(format=[app_commands.Choice(name=f, value=f) for f in FOLLOW_FORMATS])
    @admin_only()
    async def feeds_add(
        self, interaction: discord.Interaction, *, url: Url, channel: discord.TextChannel | None = None,
        filter: app_commands.Range[str, 1, 6000] | None = None, format: str = "headline",
    ) -> None:
        """Registers the feed and polls it at once in the background, so the admin need not wait for
        the next round. With a filter or the summary format, its items are announced as a follow of
        that feed alone (matched at ingest, capped per hour like any follow); else as headlines."""
        url = checked_url(url)
        announced = bool(filter) or format == "summary"
        topic = (topic_from(filter) if filter else Topic.every_story()) if announced else None
        if announced and channel is None:
            raise UserError("Name the channel to post the feed's items in: a filter or a format needs one.")
        if topic is not None:
            check_postable(channel)  # its stories are embeds
        await interaction.response.defer(ephemeral=True, thinking=True)
        collection = guild_collection(interaction.guild_id)
        try:
            feed = await asyncio.to_thread(
                self.bot.feeds.add, url, collection=collection, channel_id=0 if announced else channel.id if channel else 0,
                added_by=interaction.user.id, guild_id=interaction.guild_id,
            )
        except ValueError as exc:
            raise UserError(str(exc)) from None
        if topic is not None:
            try:
                follow, _ = await asyncio.to_thread(
                    self.bot.service.follow, topic, guild_id=interaction.guild_id, channel_id=channel.id,
                    created_by=interaction.user.id, limit=self.bot.config.follows.max_per_server, feed_url=url,
                    format=format,
                )
            except (ValueError, StoreError) as exc:
                # The feed without its announcements is not what was asked for: it goes too.
                await asyncio.to_thread(self.bot.feeds.remove, url, collection=collection)
                if isinstance(exc, StoreError):
                    raise
                raise UserError(str(exc)) from None
        self.bot.poll_soon(feed)
        where = f" New headlines will be posted in {channel.mention}." if channel else ""
        if topic is not None:
            what = f"items on *{safe_text(clip(filter.strip(), 200))}*" if filter else "new items"
            if follow.level == "broad":
                what += f" ({NAMES_A_SECTION})"
            where = f" Its {what} will be posted in {channel.mention} as {'summaries' if format == 'summary' else 'headlines'}."
        text = f"Added {safe_text(redact_url(url))}. I'm reading it now; `/feeds list` shows how that went.{where}"
        await send_followups(interaction, [render_note(text)], ephemeral=True)

    @feeds.command(name="remove", description="Stop reading a feed this server added.")
    @app_commands.describe(url="The feed's address, as /feeds list shows it")
    @admin_only()
    async def feeds_remove(self, interaction: discord.Interaction, *, url: str) -> None:
        """Only this server's own feeds: a server must not switch off what other servers share."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed = await asyncio.to_thread(
            self.bot.feeds.remove, url, collection=guild_collection(interaction.guild_id)
        )
        service = self.bot.service
        for follow in await asyncio.to_thread(service.store.follows.follows, guild_id=interaction.guild_id):
            if follow.feed_url == url.strip():  # the feed's announcements go with it
                await asyncio.to_thread(service.unfollow, follow.id, guild_id=interaction.guild_id)
        if not removed:
            raise UserError("That feed is not one this server added (feeds from config.toml are changed there).")
        text = f"Removed {safe_text(redact_url(url.strip()))}. Articles already read stay searchable."
        await send_followups(interaction, [render_note(text)], ephemeral=True)

    @feeds_remove.autocomplete("url")
    async def _removable(self, interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
        if not member_is_admin(interaction):
            return []  # the server's feed addresses are for its admins
        feeds = await asyncio.to_thread(
            self.bot.feeds.feeds, collections=[guild_collection(interaction.guild_id)]
        )
        shown = [(redact_url(feed.url), feed.url) for feed in feeds if len(feed.url) <= 100]
        return [
            app_commands.Choice(name=clip(name, 100), value=url)
            for name, url in shown if current.lower() in name.lower()
        ][:25]

    @feeds.command(name="list", description="The feeds this server reads, and how their last poll went.")
    @admin_only()
    async def feeds_list(self, interaction: discord.Interaction) -> None:
        await interaction.response.defer(ephemeral=True, thinking=True)
        feeds = await asyncio.to_thread(self.bot.feeds.feeds, collections=collections_for(interaction.guild_id))
        await send_followups(interaction, render_feeds(feeds), ephemeral=True)

    @app_commands.command(name="ingest", description="Add one article (a web page) to this server's news.")
    @app_commands.describe(url="The article's address (http or https)")
    @app_commands.guild_only()
    @admin_only()
    async def ingest(self, interaction: discord.Interaction, *, url: Url) -> None:
        """One page into this server's collection, for a story no feed carries."""
        url = checked_url(url)
        await interaction.response.defer(ephemeral=True, thinking=True)
        report = await asyncio.to_thread(
            self.bot.service.ingest, [url], collection=guild_collection(interaction.guild_id), untrusted=True
        )
        await send_followups(interaction, [render_note(describe_ingest(report))], ephemeral=True)

    @app_commands.command(name="expire", description="Remove articles this server added that are older than a period.")
    @app_commands.describe(older_than="How old, e.g. 30d, 2w, 12h")
    @app_commands.guild_only()
    @admin_only()
    async def expire(self, interaction: discord.Interaction, *, older_than: app_commands.Range[str, 1, 20]) -> None:
        """`older_than` is read before deferring, so a typo gets a hint at once."""
        try:
            age = parse_duration(older_than.strip())
        except ValueError as exc:
            raise UserError(safe_text(str(exc).capitalize())) from None
        await interaction.response.defer(ephemeral=True, thinking=True)
        removed = await asyncio.to_thread(
            self.bot.service.expire, age, collections=(guild_collection(interaction.guild_id),)
        )
        nothing = f"no article this server added is older than {safe_text(older_than.strip())}."
        await send_followups(interaction, [render_note(describe_removal(len(removed), nothing))], ephemeral=True)

    @app_commands.command(name="remove", description="Remove one article this server added.")
    @app_commands.describe(article="The article (start typing its title), or its id")
    @app_commands.autocomplete(article=autocomplete.own_article)
    @app_commands.guild_only()
    @admin_only()
    async def remove(self, interaction: discord.Interaction, *, article: app_commands.Range[str, 1, 2000]) -> None:
        """The option names a title, as its autocomplete offers, or else an article id."""
        if not article.strip():
            raise UserError("Name the article to remove: start typing its title.")
        await interaction.response.defer(ephemeral=True, thinking=True)
        own = (guild_collection(interaction.guild_id),)
        service = self.bot.service
        rows = await asyncio.to_thread(service.titles, article.strip(), collections=own, limit=autocomplete.MAX_CHOICES)
        article_id = pick_article(rows, article, exact=True) or article.strip()
        removed = await asyncio.to_thread(service.remove, article_id, collections=own)
        nothing = "that is not an article this server added (shared articles are removed by the bot's operator)."
        await send_followups(interaction, [render_note(describe_removal(len(removed), nothing))], ephemeral=True)

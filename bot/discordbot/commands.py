"""Member commands: /ask, /summary, /search and /status.

Handlers stay thin: check the options, defer at once (Discord wants a response within 3 s), do
the work in a worker thread so the event loop keeps serving everyone else, then send the
rendered reply as follow-ups. With a language model, answers and topic summaries show in the
deferred message while they are written, and the checked answer takes their place there.
Failures go to the tree's error handler (bot.discordbot.tree).
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.discordbot import autocomplete
from bot.discordbot.ratelimit import rate_limited
from bot.discordbot.replies import edit_original, send_followups
from bot.discordbot.scope import collections_for, filters_for
from bot.discordbot.streaming import StreamingDraft
from bot.discordbot.summary import summarize
from bot.render import render_answer, render_search, render_status

if TYPE_CHECKING:
    from bot.answer_types import Answer
    from bot.discordbot.client import NewsBot

Question = app_commands.Range[str, 2, 500]


class MemberCommands(commands.Cog):
    def __init__(self, bot: NewsBot) -> None:
        self.bot = bot

    @app_commands.command(name="ask", description="Ask the news a question; the answer cites its sources.")
    @app_commands.describe(question="What you want to know, e.g. “What did NATO decide about Iraq?”")
    @app_commands.guild_only()
    @rate_limited()
    async def ask(self, interaction: discord.Interaction, *, question: Question) -> None:
        """A public answer: others in the channel can read it and check its sources."""
        filters = filters_for(interaction.guild_id)
        await interaction.response.defer(thinking=True)
        await self._answer(interaction, functools.partial(self.bot.service.ask, question, filters=filters))

    @app_commands.command(name="summary", description="A digest of the news, or a summary of a topic or an article.")
    @app_commands.describe(
        topic="Summarize what the news says about this (leave empty for a digest)",
        since="Only news from this period, e.g. 24h, 7d, this week, 2026-01-04",
        article="Summarize this one article (start typing its title)",
    )
    @app_commands.autocomplete(since=autocomplete.since, article=autocomplete.article)
    @app_commands.guild_only()
    @rate_limited()
    async def summary(
        self, interaction: discord.Interaction, *, topic: Question | None = None, since: str | None = None,
        article: str | None = None,
    ) -> None:
        """`since` is read before deferring, so a date typo gets an ephemeral hint, not a public failure."""
        filters = filters_for(interaction.guild_id, since=since)
        await interaction.response.defer(thinking=True)
        await self._answer(
            interaction, functools.partial(summarize, self.bot.service, filters=filters, topic=topic, article=article)
        )

    @app_commands.command(name="search", description="Find articles in the index; shows them as links.")
    @app_commands.describe(
        query="Words to look for", since="Only news from this period, e.g. 24h, 7d, this week",
        source="Only this outlet",
    )
    @app_commands.autocomplete(since=autocomplete.since, source=autocomplete.source)
    @app_commands.guild_only()
    @rate_limited()
    async def search(
        self, interaction: discord.Interaction, *, query: Question, since: str | None = None, source: str | None = None
    ) -> None:
        """Links rather than an answer, for readers who want the articles themselves."""
        filters = filters_for(interaction.guild_id, since=since, source=source)
        await interaction.response.defer(thinking=True)
        results = await asyncio.to_thread(self.bot.service.search, query, filters=filters, k=10)
        await send_followups(interaction, render_search(results, query=query))

    @app_commands.command(name="status", description="What is indexed, and when each feed was last read.")
    @app_commands.guild_only()
    async def status(self, interaction: discord.Interaction) -> None:
        """Ephemeral: it is a check for the one who asks, not news for the channel."""
        collections = collections_for(interaction.guild_id)
        await interaction.response.defer(ephemeral=True, thinking=True)
        stats = await asyncio.to_thread(self.bot.service.stats, collections=collections)
        feeds = await asyncio.to_thread(self.bot.feeds.feeds, collections=collections)
        await send_followups(interaction, render_status(stats, feeds), ephemeral=True)

    async def _answer(self, interaction: discord.Interaction, work: Callable[..., Answer]) -> None:
        """Runs `work` (which takes `on_text`) in a worker thread and sends the answer.

        Extractive answers are instant and arrive as follow-ups. A language model's text shows in the
        deferred message as it grows, and the checked answer (or the extractive one with a note saying
        why) then replaces it there, so no unchecked draft is left standing.
        """
        if self.bot.service.llm is None:
            answer = await asyncio.to_thread(work)
            await send_followups(interaction, render_answer(answer))
            return
        show = functools.partial(edit_original, interaction)
        async with StreamingDraft(show, interval=self.bot.config.discord.draft_edit_seconds) as draft:
            answer = await asyncio.to_thread(work, on_text=draft.push)
        await show(render_answer(answer))

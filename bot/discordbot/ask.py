"""Questions asked in channels: by mentioning the bot, in an ask-channel, or in the bot's threads.

An answer to a channel question goes into a thread the bot opens on the question, so the
conversation has a place. A message in such a thread is a follow-up: it is answered with the
thread's earlier questions in mind (read back from Discord, so this survives a restart). With a
language model, the answer's message shows the text as it is written, then the checked answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from typing import TYPE_CHECKING

import discord
from discord.ext import commands

from bot.discordbot.errors import GENERIC_FAILURE, STORE_UNAVAILABLE
from bot.discordbot.replies import MessageSlot, send_to
from bot.discordbot.scope import filters_for
from bot.discordbot.streaming import StreamingDraft
from bot.render import clip, render_answer, render_note
from index.store import StoreError

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 20  # how far back in a thread to look for earlier questions
HISTORY_QUESTIONS = 5
RATE_LIMITED_REACTION = "⏳"  # over the member's or the server's limit: shown, not spoken, to keep the channel quiet


def question_text(content: str, bot_id: int) -> str:
    """The message with the bot's mentions taken out and whitespace tidied."""
    return " ".join(re.sub(rf"<@!?{bot_id}>", " ", content).split())


def is_for_bot(*, mentioned: bool, channel_id: int, ask_channels: list[int], in_own_thread: bool) -> bool:
    """Whether a member's message in a server is a question for the bot."""
    return mentioned or in_own_thread or channel_id in ask_channels


# Discord's markup for mentions, slash commands, custom emoji and timestamps: ids and codes that
# read as noise in a thread's title, which Discord shows as plain text.
_MENTION_MARKUP = re.compile(
    r"<@[!&]?\d+>"  # member or role
    r"|<#\d+>"  # channel
    r"|</[^<>:]+:\d+>"  # slash command
    r"|<t:-?\d+(?::[a-zA-Z])?>"  # timestamp
    r"|(?<!\w)@(?:everyone|here)\b"
)
_CUSTOM_EMOJI = re.compile(r"<a?:(\w+):\d+>")
# Left behind by a removed mention ("<@&1>, what…"); a leading ":name:" emoji is kept, and a
# dash only before a space, so "-5 degrees" keeps its minus sign.
_LEADING_PUNCTUATION = re.compile(r"^(?:[\s,.;!?|/\\]|[-–—](?!\S)|:(?!\w+:))+")


def without_discord_markup(text: str) -> str:
    """Text with mentions, slash-command links and timestamps removed, custom emoji as ":name:",
    whitespace collapsed and punctuation a removed mention left at the start dropped."""
    text = _CUSTOM_EMOJI.sub(r":\1:", _MENTION_MARKUP.sub(" ", text))
    return _LEADING_PUNCTUATION.sub("", " ".join(text.split()))


def thread_name(question: str) -> str:
    """A thread's title from the question: its text without Discord markup, within Discord's 100 characters."""
    return clip(without_discord_markup(question), 90) or "question"


class ChannelQuestions(commands.Cog):
    def __init__(self, bot: NewsBot) -> None:
        self.bot = bot

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        me = self.bot.user
        if message.author.bot or message.guild is None or me is None:
            return
        own_thread = isinstance(message.channel, discord.Thread) and message.channel.owner_id == me.id
        if not is_for_bot(mentioned=me in message.mentions, channel_id=message.channel.id,
                          ask_channels=self.bot.config.discord.ask_channels, in_own_thread=own_thread):
            return
        question = question_text(message.content, me.id)
        if not question:
            return
        if self.bot.limits.try_acquire(message.author.id, message.guild.id):
            await self._react(message, RATE_LIMITED_REACTION)
            return
        try:
            await self._answer(message, question, follow_up=own_thread)
        except StoreError as exc:
            log.warning("answering message %s in channel %s failed: %s", message.id, message.channel.id, exc)
            await send_to(message.channel, [render_note(STORE_UNAVAILABLE)], reference=message)
        except Exception:
            log.error("answering message %s in channel %s failed", message.id, message.channel.id, exc_info=True)
            await send_to(message.channel, [render_note(GENERIC_FAILURE)], reference=message)

    async def _answer(self, message: discord.Message, question: str, *, follow_up: bool) -> None:
        history = await self._earlier_questions(message) if follow_up else []
        work = functools.partial(self.bot.service.ask, question, filters=filters_for(message.guild.id), history=history)
        slot = await self._slot(message, question, follow_up=follow_up)
        try:
            async with slot.channel.typing():
                if self.bot.service.llm is None:  # extractive answers are instant: nothing to show before
                    answer = await asyncio.to_thread(work)
                else:
                    async with StreamingDraft(slot.run, interval=self.bot.config.discord.draft_edit_seconds) as draft:
                        answer = await asyncio.to_thread(work, on_text=draft.push)
        except Exception:
            if slot.message is not None:  # an unchecked draft must not stand as the answer
                await slot.message.delete()
            raise
        await slot.run(render_answer(answer))

    async def _slot(self, message: discord.Message, question: str, *, follow_up: bool) -> MessageSlot:
        """Where the answer goes: the thread the question is in, else a thread opened on it, else beside it."""
        if isinstance(message.channel, discord.Thread):
            return MessageSlot(message.channel, reference=None if follow_up else message)
        try:
            thread = await message.create_thread(name=thread_name(question))
        except discord.HTTPException:
            log.warning("could not open a thread on message %s; answering in the channel", message.id, exc_info=True)
            return MessageSlot(message.channel, reference=message)
        return MessageSlot(thread)

    async def _earlier_questions(self, message: discord.Message) -> list[str]:
        """The thread's opening question and members' later messages before this one, oldest first."""
        thread = message.channel
        assert isinstance(thread, discord.Thread)
        me = self.bot.user.id
        earlier = [
            question_text(m.content, me)
            async for m in thread.history(limit=HISTORY_MESSAGES, before=message)
            if not m.author.bot
        ]
        earlier.reverse()
        starter = thread.starter_message
        if starter is None and thread.parent is not None:
            try:
                starter = await thread.parent.fetch_message(thread.id)  # a thread opened on a message shares its id
            except discord.HTTPException:
                starter = None
        if starter is not None:
            earlier.insert(0, question_text(starter.content, me))
        return [q for q in earlier if q][-HISTORY_QUESTIONS:]

    async def _react(self, message: discord.Message, emoji: str) -> None:
        try:
            await message.add_reaction(emoji)
        except discord.HTTPException:
            log.info("could not react to message %s", message.id)

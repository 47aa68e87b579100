"""Sending rendered replies: every message the bot sends or edits goes through here.

One place that passes `AllowedMentions.none()` on every send and edit (besides the bot-wide
default), so a question or an article that says @everyone can never ping anyone.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import discord

from bot.render import Reply, render_note

log = logging.getLogger(__name__)

NO_MENTIONS = discord.AllowedMentions.none()


async def send_followups(
    interaction: discord.Interaction, replies: Sequence[Reply], *, ephemeral: bool = False
) -> None:
    """The answer after a defer: the first follow-up replaces "thinking…", the rest follow it."""
    for reply in replies:
        await interaction.followup.send(
            content=reply.content or None, embed=reply.embed if reply.embed is not None else discord.utils.MISSING,
            ephemeral=ephemeral, allowed_mentions=NO_MENTIONS, wait=True,
        )


async def edit_original(interaction: discord.Interaction, replies: Sequence[Reply]) -> None:
    """Replies in place of the deferred "thinking…" or of a draft shown there: the first edits it, the rest follow."""
    first = replies[0]
    await interaction.edit_original_response(content=first.content or None, embed=first.embed,
                                             allowed_mentions=NO_MENTIONS)
    await send_followups(interaction, replies[1:])


async def send_note(interaction: discord.Interaction, text: str) -> None:
    """A short ephemeral line, whether or not the interaction was answered or deferred already.

    After a public defer, the "thinking…" message is deleted first: the follow-up that replaces
    it would otherwise be public, and an error is nobody's business but the asker's.
    """
    note = render_note(text)
    if not interaction.response.is_done():
        await interaction.response.send_message(note.content, ephemeral=True, allowed_mentions=NO_MENTIONS)
        return
    if interaction.response.type == discord.InteractionResponseType.deferred_channel_message:
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            log.warning("could not delete the deferred response of interaction %s", interaction.id, exc_info=True)
    await interaction.followup.send(note.content, ephemeral=True, allowed_mentions=NO_MENTIONS)


async def send_to(
    channel: discord.abc.Messageable, replies: Sequence[Reply], *, reference: discord.Message | None = None,
    nonce: str | None = None,
) -> list[discord.Message]:
    """Replies posted in a channel or thread; the first one answers `reference` if given.

    With `nonce`, each reply is sent with `nonce-<n>` and Discord's enforce_nonce: sent again within
    a few minutes (a retry after a crash), Discord returns the first message instead of a second.
    """
    sent = []
    for index, reply in enumerate(replies):
        sent.append(
            await channel.send(
                content=reply.content or None, embed=reply.embed, allowed_mentions=NO_MENTIONS,
                reference=reference if index == 0 else None, nonce=f"{nonce}-{index}" if nonce else None,
            )
        )
    return sent


class MessageSlot:
    """Where the answer to a channel question goes: posted on first use, edited in place after.

    A draft of a language model's answer takes the slot first; the checked answer then replaces it
    instead of arriving as a second message.
    """

    def __init__(self, channel: discord.abc.Messageable, *, reference: discord.Message | None = None) -> None:
        self.channel = channel
        self.reference = reference
        self.message: discord.Message | None = None

    async def run(self, replies: Sequence[Reply]) -> None:
        """The first reply posted in the slot (answering `reference`) or edited into it; the rest after it."""
        first = replies[0]
        if self.message is None:
            (self.message,) = await send_to(self.channel, [first], reference=self.reference)
        else:
            await self.message.edit(content=first.content or None, embed=first.embed, allowed_mentions=NO_MENTIONS)
        await send_to(self.channel, replies[1:])

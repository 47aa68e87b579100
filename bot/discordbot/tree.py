"""The command tree: how a failed command reaches the user and the log.

discord.py only logs errors raised in app commands; here the user always hears back, briefly and
ephemerally, and the traceback goes to the log only when the failure is a bug.
"""

from __future__ import annotations

import logging

import discord
from discord import app_commands

from bot.discordbot.errors import GENERIC_FAILURE, STORE_UNAVAILABLE, user_message
from bot.discordbot.replies import send_note

log = logging.getLogger(__name__)


class NewsTree(app_commands.CommandTree):
    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        name = interaction.command.qualified_name if interaction.command else "?"
        message = user_message(error)
        if message is None:
            log.error("/%s failed for user %s in guild %s", name, interaction.user.id, interaction.guild_id,
                      exc_info=error)
        elif message == STORE_UNAVAILABLE:
            log.warning("/%s failed: %s", name, getattr(error, "original", error))
        else:
            log.info("/%s refused for user %s: %s", name, interaction.user.id, message)
        if interaction.type is discord.InteractionType.autocomplete:
            return  # nothing can be shown for a failed autocomplete; Discord shows no choices
        try:
            await send_note(interaction, message or GENERIC_FAILURE)
        except discord.HTTPException:
            log.warning("could not tell user %s that /%s failed", interaction.user.id, name, exc_info=True)

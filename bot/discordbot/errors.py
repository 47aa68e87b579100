"""The failures a user is told about, as opposed to the ones only the log hears of.

Anything raised from a command is either one of these (shown to the user as a short ephemeral
line, logged at INFO) or a bug (the user gets a generic apology, the log gets the traceback).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from discord import app_commands

from index.store import StoreError

if TYPE_CHECKING:
    from bot.discordbot.ratelimit import Refusal


class UserError(Exception):
    """Something the user can fix: a bad date, an unknown article, a URL that is not a feed."""


class NotAdmin(app_commands.CheckFailure):
    """The command is for server managers and the configured admin role only."""


class RateLimited(app_commands.CheckFailure):
    """Over the member's own rate limit or the server's, as `refusal` says."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(f"{refusal.scope} rate limit: retry in {refusal.retry_after:.1f} s")
        self.refusal = refusal


GENERIC_FAILURE = "Sorry, that didn't work: something went wrong on my side. The details are in the bot's log."
STORE_UNAVAILABLE = "The news index is busy or out of reach right now. Please try again in a minute."


def user_message(error: BaseException) -> str | None:
    """What to tell the user about `error`, or None if it is a bug (only the log gets the details)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, StoreError):  # a database restarting: not a bug, and not the user's to fix
        return STORE_UNAVAILABLE
    if isinstance(error, NotAdmin):
        return "Only members with **Manage Server** (or the bot's admin role) can do that."
    if isinstance(error, RateLimited):
        seconds = max(1, round(error.refusal.retry_after))
        if error.refusal.scope == "server":
            return f"Lots of questions in this server right now: please ask again in {seconds} s."
        return f"Slow down a little: you can ask again in {seconds} s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works in servers only."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    if isinstance(error, app_commands.TransformerError):
        return f"I couldn't read the value {error.value!r} for that option."
    return None

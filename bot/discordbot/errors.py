"""The failures a user is told about, as opposed to the ones only the log hears of.

Anything raised from a command is either one of these (shown to the user as a short ephemeral
line, logged at INFO) or a bug (the user gets a generic apology, the log gets the traceback).
"""

from __future__ import annotations

from discord import app_commands


class UserError(Exception):
    """Something the user can fix: a bad date, an unknown article, a URL that is not a feed."""


class NotAdmin(app_commands.CheckFailure):
    """The command is for server managers and the configured admin role only."""


class OnCooldown(app_commands.CheckFailure):
    """The user asked again before their cooldown ran out."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"on cooldown for {retry_after:.1f} s")
        self.retry_after = retry_after


GENERIC_FAILURE = "Sorry, that didn't work: something went wrong on my side. The details are in the bot's log."


def user_message(error: BaseException) -> str | None:
    """What to tell the user about `error`, or None if it is a bug (only the log gets the details)."""
    if isinstance(error, app_commands.CommandInvokeError):
        error = error.original
    if isinstance(error, UserError):
        return str(error)
    if isinstance(error, NotAdmin):
        return "Only members with **Manage Server** (or the bot's admin role) can do that."
    if isinstance(error, OnCooldown):
        return f"Slow down a little: you can ask again in {max(1, round(error.retry_after))} s."
    if isinstance(error, app_commands.NoPrivateMessage):
        return "This command works in servers only."
    if isinstance(error, app_commands.CheckFailure):
        return "You can't use this command here."
    if isinstance(error, app_commands.TransformerError):
        return f"I couldn't read the value {error.value!r} for that option."
    return None

"""A per-user cooldown, so one member cannot keep the answerer busy for everyone else.

Plain logic with an injectable clock (testable without Discord); the app command check that
uses it raises OnCooldown, which the command tree turns into an ephemeral note.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import discord
from discord import app_commands

from bot.discordbot.errors import OnCooldown

_PRUNE_AT = 10_000  # users remembered before expired entries are dropped, to bound memory


class Cooldown:
    """At most one request per user every `seconds`; 0 turns the cooldown off."""

    def __init__(self, seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if seconds < 0:
            raise ValueError("cooldown seconds must not be negative")
        self.seconds, self.clock = seconds, clock
        self._last: dict[int, float] = {}

    def try_acquire(self, user_id: int) -> float:
        """0.0 and the request is counted, or the seconds the user still has to wait."""
        if not self.seconds:
            return 0.0
        now = self.clock()
        last = self._last.get(user_id)
        if last is not None and now - last < self.seconds:
            return self.seconds - (now - last)
        if len(self._last) >= _PRUNE_AT:
            self._last = {user: at for user, at in self._last.items() if now - at < self.seconds}
        self._last[user_id] = now
        return 0.0


def cooldown_check():
    """App command check: counts the call against the bot's cooldown or raises OnCooldown."""

    async def predicate(interaction: discord.Interaction) -> bool:
        retry_after = interaction.client.cooldown.try_acquire(interaction.user.id)  # type: ignore[attr-defined]
        if retry_after:
            raise OnCooldown(retry_after)
        return True

    return app_commands.check(predicate)

"""Rate limits per member and per server, so nobody can keep the answerer busy for everyone else.

A member's burst is held back by their own limit, and a server's (many members at once, or one
member with many accounts) by the server's, so one busy server cannot starve the others. Plain
logic with an injectable clock, testable without Discord: `RequestLimits.try_acquire` says yes or
how long to wait. Slash commands apply it through the `rate_limited` check, which raises
RateLimited for the command tree to turn into an ephemeral note; channel questions call it directly.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import discord
from discord import app_commands

from bot.config import DiscordSettings
from bot.discordbot.errors import RateLimited

_PRUNE_AT = 10_000  # keys remembered before full buckets are dropped, to bound memory
_SLACK = 1e-9  # float rounding forgiven when a bucket refills to exactly one request's worth


class RateLimiter:
    """A token bucket per key: a burst of up to `requests`, then `requests` more per `window_seconds`.

    A bucket rather than a fixed window, so there is no double burst across a window's edge, and
    one who waits gets requests back steadily (one every window/requests seconds). 0 requests
    means no limit.
    """

    def __init__(self, requests: int, window_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        if requests < 0:
            raise ValueError("requests must be 0 (no limit) or more")
        if window_seconds <= 0:
            raise ValueError("window_seconds must be positive")
        self.requests, self.clock = requests, clock
        self._rate = requests / window_seconds  # tokens per second
        self._buckets: dict[Hashable, tuple[float, float]] = {}  # key -> (tokens, when counted)

    def wait(self, key: Hashable) -> float:
        """Seconds until `key` may make a request, 0.0 if it may now; counts nothing."""
        if not self.requests:
            return 0.0
        missing = 1.0 - self._tokens(key, self.clock())
        return 0.0 if missing <= _SLACK else missing / self._rate

    def take(self, key: Hashable) -> None:
        """Counts a request against `key`; call it once `wait(key)` said 0."""
        if not self.requests:
            return
        now = self.clock()
        if len(self._buckets) >= _PRUNE_AT:
            # A full bucket is the same as no bucket: forgetting it changes nothing.
            self._buckets = {k: b for k, b in self._buckets.items() if self._tokens(k, now) < self.requests}
        self._buckets[key] = (self._tokens(key, now) - 1.0, now)

    def _tokens(self, key: Hashable, now: float) -> float:
        tokens, at = self._buckets.get(key, (float(self.requests), now))
        return min(float(self.requests), tokens + (now - at) * self._rate)


@dataclass(frozen=True)
class Refusal:
    """Why a request was refused: the member's own limit ("user") or the server's ("server")."""

    scope: str
    retry_after: float

    def __post_init__(self) -> None:
        if self.scope not in ("user", "server"):
            raise ValueError(f"unknown rate limit scope {self.scope!r}")


class RequestLimits:
    """The member's and the server's limits together: a request counts against both or neither.

    So a member refused for the server's sake keeps their own allowance, and a member over their
    own limit does not use up the server's.
    """

    def __init__(self, *, user: RateLimiter, server: RateLimiter) -> None:
        self.user, self.server = user, server

    @classmethod
    def from_settings(cls, settings: DiscordSettings, *, clock: Callable[[], float] = time.monotonic) -> RequestLimits:
        return cls(
            user=RateLimiter(settings.user_requests, settings.user_window_seconds, clock=clock),
            server=RateLimiter(settings.server_requests, settings.server_window_seconds, clock=clock),
        )

    def try_acquire(self, user_id: int, guild_id: int | None) -> Refusal | None:
        """None and the request is counted, or the Refusal with the longer of the two waits."""
        user_wait, server_wait = self.user.wait(user_id), self.server.wait(guild_id)
        if user_wait or server_wait:
            return Refusal("user", user_wait) if user_wait >= server_wait else Refusal("server", server_wait)
        self.user.take(user_id)
        self.server.take(guild_id)
        return None


def rate_limited():
    """App command check: counts the call against the member's and the server's limits, or raises RateLimited."""

    async def predicate(interaction: discord.Interaction) -> bool:
        limits: RequestLimits = interaction.client.limits  # type: ignore[attr-defined]
        refusal = limits.try_acquire(interaction.user.id, interaction.guild_id)
        if refusal is not None:
            raise RateLimited(refusal)
        return True

    return app_commands.check(predicate)

"""Tenancy: which articles a server's questions may see.

Every server reads the shared collection (feeds from config.toml) and its own collection (feeds
and pages its admins added); never another server's. Every query from Discord gets its filters
here, so there is one place to get this right.
"""

from __future__ import annotations

from datetime import datetime

from bot.discordbot.errors import UserError
from bot.feeds import collections_for
from bot.render import safe_text
from index.store import SearchFilters
from index.timefilter import parse_since


def filters_for(
    guild_id: int, *, since: str | None = None, source: str | None = None, now: datetime | None = None
) -> SearchFilters:
    """Filters for a server's query; a `since` that cannot be read is the user's to fix."""
    start = None
    if since and since.strip():
        try:
            start = parse_since(since, now=now)
        except ValueError as exc:
            # The message quotes what the member typed: made inert like any text the bot did not write.
            raise UserError(safe_text(str(exc).capitalize())) from None
    outlets = (source.strip(),) if source and source.strip() else ()
    return SearchFilters(since=start, outlets=outlets, collections=collections_for(guild_id))

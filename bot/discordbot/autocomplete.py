"""Autocomplete for `since`, `source` and `article`: at most 25 choices, as Discord allows.

An article is offered by its title, and the title (cut to Discord's 100-character limit) is also
the value sent back: article ids are URLs that may exceed that limit, and looking the title up
again within the server's own collections keeps other servers' articles out of reach.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import discord
from discord import app_commands

from bot.discordbot.permissions import member_is_admin
from bot.discordbot.scope import collections_for
from bot.feeds import guild_collection
from bot.render import clip
from index.timefilter import SINCE_CHOICES, parse_since

MAX_CHOICES = 25
CHOICE_LIMIT = 100  # characters in a choice's name and in its value


def since_choices(current: str) -> list[app_commands.Choice[str]]:
    """The usual periods that contain what was typed; what was typed first if it already parses."""
    typed = " ".join(current.lower().split())
    options = [choice for choice in SINCE_CHOICES if typed in choice]
    if typed and typed not in options and len(typed) <= CHOICE_LIMIT:
        try:
            parse_since(typed)
        except ValueError:
            pass
        else:
            options.insert(0, typed)
    return [app_commands.Choice(name=option, value=option) for option in options[:MAX_CHOICES]]


def outlet_choices(outlets: Sequence[str]) -> list[app_commands.Choice[str]]:
    return [
        app_commands.Choice(name=clip(outlet, CHOICE_LIMIT), value=outlet)
        for outlet in outlets[:MAX_CHOICES] if len(outlet) <= CHOICE_LIMIT
    ]


def title_choices(rows: Sequence[tuple[str, str]]) -> list[app_commands.Choice[str]]:
    """(id, title) rows as choices named and valued by title, without repeats."""
    seen: dict[str, app_commands.Choice[str]] = {}
    for _, title in rows:
        value = title[:CHOICE_LIMIT]
        seen.setdefault(value, app_commands.Choice(name=clip(title, CHOICE_LIMIT), value=value))
    return list(seen.values())[:MAX_CHOICES]


def pick_article(rows: Sequence[tuple[str, str]], value: str, *, exact: bool = False) -> str | None:
    """The id of the article a title option names: an exact title, else one it begins, else the first match.

    With `exact` (for removal, where a guess would delete the wrong article) only a whole title
    counts, or a choice's value: a title cut at Discord's limit.
    """
    wanted = " ".join(value.split()).lower()
    predicates = [lambda title: title == wanted, lambda title: title[:CHOICE_LIMIT] == wanted[:CHOICE_LIMIT]]
    if not exact:
        predicates.append(lambda title: title.startswith(wanted))
    for predicate in predicates:
        for article_id, title in rows:
            if predicate(" ".join(title.split()).lower()):
                return article_id
    return rows[0][0] if rows and not exact else None


async def since(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return since_choices(current)


async def source(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    service = interaction.client.service  # type: ignore[attr-defined]
    outlets = await asyncio.to_thread(
        service.outlets, collections=collections_for(interaction.guild_id or 0), prefix=current.strip(),
        limit=MAX_CHOICES,
    )
    return outlet_choices(outlets)


async def article(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    return await _titles(interaction, current, collections_for(interaction.guild_id or 0))


async def own_article(interaction: discord.Interaction, current: str) -> list[app_commands.Choice[str]]:
    """Titles from the server's own collection only: what its admins may remove; none for others."""
    if not member_is_admin(interaction):
        return []
    return await _titles(interaction, current, (guild_collection(interaction.guild_id or 0),))


async def _titles(
    interaction: discord.Interaction, current: str, collections: tuple[str, ...]
) -> list[app_commands.Choice[str]]:
    service = interaction.client.service  # type: ignore[attr-defined]
    rows = await asyncio.to_thread(service.titles, current.strip(), collections=collections, limit=MAX_CHOICES)
    return title_choices(rows)

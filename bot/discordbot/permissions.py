"""Who may change what the bot reads: members with Manage Server, or the configured admin role.

The rule is a plain function so it can be tested without Discord; `admin_only` applies it to
app commands. Commands keep their default visibility (no `default_permissions`), so members of
the admin role who lack Manage Server still see them, and everyone else gets a clear refusal.
"""

from __future__ import annotations

from collections.abc import Iterable

import discord
from discord import app_commands

from bot.discordbot.errors import NotAdmin


def is_admin(*, manage_guild: bool, roles: Iterable[tuple[int, str]], admin_role: str) -> bool:
    """True for Manage Server (or Administrator, passed in as manage_guild), or the admin role by name or id."""
    if manage_guild:
        return True
    wanted = admin_role.strip()
    if not wanted:
        return False
    return any(wanted == name or wanted == str(role_id) for role_id, name in roles)


def member_is_admin(interaction: discord.Interaction) -> bool:
    """The rule applied to an interaction, with the permissions Discord resolved for it.

    Admin commands' autocompletes ask it too: discord.py runs no checks for autocomplete, and a
    client can send one for a command its member cannot use.
    """
    permissions = interaction.permissions
    roles = getattr(interaction.user, "roles", [])  # a User (not a Member) has none
    return is_admin(
        manage_guild=permissions.manage_guild or permissions.administrator,
        roles=[(role.id, role.name) for role in roles],
        admin_role=interaction.client.config.discord.admin_role,  # type: ignore[attr-defined]
    )


def admin_only():
    """App command check: raises NotAdmin for anyone who is not an admin."""

    async def predicate(interaction: discord.Interaction) -> bool:
        if member_is_admin(interaction):
            return True
        raise NotAdmin("not an admin")

    return app_commands.check(predicate)

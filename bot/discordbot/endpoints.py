"""Where discord.py connects: the REST base and the gateway, from config.

Both are process-global class attributes in discord.py, read on every request and connection.
Deployments behind a Discord API proxy (nirn-proxy and the like) change them, and so do the
tests, which point them at a local emulator.
"""

from __future__ import annotations

import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bot.config import DiscordSettings


def point_at(settings: DiscordSettings) -> None:
    """Send REST calls to `api_base` and open the gateway at `gateway_url`."""
    Route.BASE = settings.api_base.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.gateway_url)

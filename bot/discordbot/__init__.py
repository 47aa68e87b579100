"""newsdesk on Discord: slash commands, channel questions, and background feed polling.

One module per concern: `client` (the bot, `create_bot`, `run_bot`), `commands` and `admin`
(slash commands), `ask` (questions in channels and threads), `autocomplete`, `permissions`,
`ratelimit`, `scope` (tenancy), `polling` and `digest` (background work), `replies` and `tree`
(how replies and errors are sent), `streaming` (an LLM answer shown while it is written),
`endpoints` (API base and gateway from config).
"""

from bot.discordbot.client import NewsBot, create_bot, run_bot

__all__ = ["NewsBot", "create_bot", "run_bot"]

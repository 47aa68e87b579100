"""What `/summary` means with each combination of options, as one call to run in a worker thread.

With `article`, that article's summary; with `topic`, what the news says about it; with neither,
the digest of the period (the last 24 hours unless `since` says otherwise).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from bot.answer_types import Answer
from bot.discordbot.autocomplete import pick_article
from bot.discordbot.errors import UserError
from index.store import SearchFilters

if TYPE_CHECKING:
    from bot.service import NewsService


def summarize(
    service: NewsService, *, filters: SearchFilters, topic: str | None = None, article: str | None = None,
    on_text: Callable[[str], None] | None = None,
) -> Answer:
    """Blocking: call it through asyncio.to_thread. `filters` carry the server's collections.

    `on_text` sees a language model's topic summary grow; the other two are extractive and instant.
    """
    if article and article.strip():
        rows = service.titles(article.strip(), collections=filters.collections, limit=25)
        article_id = pick_article(rows, article)
        if article_id is None:
            raise UserError("No article with that title here; pick one from the list as you type.")
        return service.summarize_article(article_id, collections=filters.collections)
    if topic and topic.strip():
        return service.summarize_topic(topic, filters=filters, on_text=on_text)
    return service.digest(filters=filters)

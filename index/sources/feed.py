"""News feeds -> Articles: RSS 0.9x/1.0/2.0 and Atom through feedparser, JSON Feed read here.

An item whose text is only a teaser but which links to its page comes back as a `Teaser`: the
loader fetches the page for the full story and keeps the teaser if that fails.

Documents that declare XML entities are refused before parsing: no real feed needs them, and
they are how entity-expansion bombs (billion laughs) work.
"""

from __future__ import annotations

import html as html_entities
import io
import json
import re
import time
from dataclasses import dataclass
from datetime import datetime, timezone

import feedparser

from index.article import Article, Failure
from index.sources.common import SourceError, as_text, build_article, one_line, parse_datetime
from index.sources.decode import TextDecoder
from index.sources.html import html_to_text
from index.urls import absolute_http_url, outlet_from_url

_XML_DECLARATION = re.compile(r"^\s*<\?xml[^>]*\?>", re.IGNORECASE)
_ROOT_START = re.compile(r"<[A-Za-z_]")
_ENTITY = re.compile(r"<!ENTITY", re.IGNORECASE)
_BOZO_POSITION = re.compile(r"^<unknown>:(\d+):(\d+):\s*")


@dataclass(frozen=True)
class Teaser:
    """A feed item with only a teaser: the story is on `link`.

    `article` is the item as the feed gives it (the teaser, else its title as text), with the
    feed's id, title, date and outlet; it is kept when the page cannot be read.
    """

    link: str
    article: Article


FeedItem = Article | Teaser | Failure


@dataclass(frozen=True)
class _Entry:
    """A feed item in the terms both formats share."""

    title: str
    link: str | None
    guid: str | None
    bodies: tuple[str, ...]  # HTML or text of the content and the summary
    published: datetime | None
    author: str | None
    section: str | None


class FeedReader:
    """Feed bytes -> one Article, Teaser or Failure per item, at most `max_items` of them.

    Raises SourceError when the bytes are not a feed at all.
    """

    def __init__(self, *, max_items: int = 500, teaser_chars: int = 300) -> None:
        if max_items < 1:
            raise ValueError("max_items must be at least 1")
        if teaser_chars < 0:
            raise ValueError("teaser_chars cannot be negative")
        self._max_items = max_items
        self._teaser_chars = teaser_chars
        self._decoder = TextDecoder()

    def run(self, data: bytes, *, source: str, url: str | None = None, charset: str | None = None) -> list[FeedItem]:
        text = self._decoder.run(data, declared=charset).text.lstrip("\ufeff \t\r\n")
        if text.startswith("{"):
            feed_title, language, entries = _read_json_feed(text, url)
        else:
            feed_title, language, entries = _read_xml_feed(text, url)
        outlet = feed_title or outlet_from_url(url)
        return [
            self._item(entry, source=source, outlet=outlet, language=language, number=number)
            for number, entry in enumerate(entries[: self._max_items], start=1)
        ]

    def _item(self, entry: _Entry, *, source: str, outlet: str | None, language: str | None, number: int) -> FeedItem:
        texts = [html_to_text(body) for body in entry.bodies if body and body.strip()]
        text = max(texts, key=lambda t: len(t.strip()), default="")
        title = one_line(html_to_text(entry.title))
        if not text.strip() and not title:
            return Failure(source, f"item {number}: no title, no text")
        article = build_article(
            text=text if text.strip() else title,
            source=source,
            title=title,
            url=entry.link,
            guid=entry.guid,
            outlet=outlet,
            published=entry.published,
            language=language,
            author=entry.author,
            section=entry.section,
        )
        if entry.link and len(text.strip()) < self._teaser_chars:
            return Teaser(entry.link, article)
        return article


def _read_xml_feed(text: str, url: str | None) -> tuple[str, str | None, list[_Entry]]:
    root = _ROOT_START.search(text)
    if _ENTITY.search(text, 0, root.start() if root else len(text)):
        raise SourceError("refused: the feed declares XML entities (an entity-expansion attack?)")
    # The text is decoded already: tell feedparser it is UTF-8, in the declaration and the header.
    utf8 = _XML_DECLARATION.sub('<?xml version="1.0" encoding="utf-8"?>', text, count=1).encode("utf-8")
    headers = {"content-type": "application/xml; charset=utf-8"}
    if url:
        headers["content-location"] = url  # the base for relative links
    # A stream, never a str: feedparser treats a str as a URL or a file name to open.
    parsed = feedparser.parse(io.BytesIO(utf8), response_headers=headers)
    if not parsed.entries:
        if parsed.bozo:
            raise SourceError(f"not a readable feed: {_bozo_reason(parsed.bozo_exception)}")
        if not parsed.version:
            raise SourceError("not a feed")
        raise SourceError("feed has no items")
    feed = parsed.feed
    title = one_line(html_to_text(feed.get("title", "")))
    # Relative links resolve against the feed's URL; a saved file has none, but names itself.
    own = [link.get("href") for link in feed.get("links", ()) if link.get("rel") == "self"]
    base = url or next((href for href in own if href), None) or feed.get("link")
    entries = [
        _Entry(
            title=entry.get("title", ""),
            link=absolute_http_url(entry.get("link"), base),
            guid=entry.get("id"),
            bodies=(*(part.get("value", "") for part in entry.get("content", ())), entry.get("summary", "")),
            # dict.get: feedparser's own get() warns when it maps updated_parsed to published_parsed
            published=_struct_time(dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")),
            author=entry.get("author"),
            section=_first_term(entry.get("tags")),
        )
        for entry in parsed.entries
    ]
    return title, feed.get("language"), entries


def _read_json_feed(text: str, url: str | None) -> tuple[str, str | None, list[_Entry]]:
    try:
        feed = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise SourceError(f"not valid JSON: {exc}") from None
    if not isinstance(feed, dict) or "jsonfeed.org/version/" not in str(feed.get("version", "")):
        raise SourceError("not a JSON Feed")
    items = feed.get("items")
    if not isinstance(items, list) or not items:
        raise SourceError("feed has no items")
    base = as_text(feed.get("home_page_url")) or as_text(feed.get("feed_url")) or url
    entries = []
    for item in items:
        if not isinstance(item, dict):
            continue
        authors = item.get("authors")
        author = item.get("author") or (authors[0] if isinstance(authors, list) and authors else None)
        tags = item.get("tags")
        entries.append(
            _Entry(
                title=as_text(item.get("title")),
                link=absolute_http_url(as_text(item.get("url")) or as_text(item.get("external_url")), base),
                guid=as_text(item.get("id")) or None,
                bodies=tuple(as_text(item.get(key)) for key in ("content_html", "content_text", "summary")),
                published=parse_datetime(item.get("date_published")) or parse_datetime(item.get("date_modified")),
                author=as_text(author.get("name")) if isinstance(author, dict) else None,
                section=as_text(tags[0]) if isinstance(tags, list) and tags else None,
            )
        )
    if not entries:
        raise SourceError("feed has no items")
    return one_line(html_entities.unescape(as_text(feed.get("title")))), as_text(feed.get("language")) or None, entries


def _struct_time(value: time.struct_time | None) -> datetime | None:
    """feedparser's dates are struct_time in UTC."""
    if not value:
        return None
    try:
        return datetime(*value[:6], tzinfo=timezone.utc)
    except (TypeError, ValueError):
        return None


def _first_term(tags: list[dict] | None) -> str | None:
    for tag in tags or ():
        term = (tag.get("term") or tag.get("label") or "").strip()
        if term:
            return term
    return None


def _bozo_reason(exc: BaseException | None) -> str:
    """'<unknown>:19:84: no element found' -> 'no element found (line 19, column 84)'."""
    message = str(exc or "unknown error")
    position = _BOZO_POSITION.match(message)
    if position:
        return f"{message[position.end() :]} (line {position.group(1)}, column {position.group(2)})"
    return message

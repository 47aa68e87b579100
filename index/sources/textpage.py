"""Plain-text article pages: a page's text as a scraper saved it.

    NATO suspends training activities in Iraq after Soleimani killing      <- headline
    NATO has suspended its training missions in Iraq, ...                  <- lede
    - World                                                                <- section
    - Agencies and A News                                                  <- outlet
    - Published Date: 05:46 | 04 January 2020                              <- metadata lines
    - Modified Date: 05:46 | 04 January 2020
    NATO has suspended a training mission ...                              <- body
    - SOLEIMANI'S KILLING                                                  <- a subheading
    ...
    - 14 civilians killed in bus explosion in north Burkina Faso           <- related stories: dropped

Every line is a paragraph. A run of "- " lines right after the headline (or after the lede) is
metadata; the run of "- " lines at the very end is a block of unrelated headlines; "- " lines in
between are subheadings and stay in the text as heading lines. A file whose first line is a whole
paragraph has no headline; its title is taken from its first sentence.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from index.article import Article
from index.sources.common import SourceError, build_article, parse_datetime

_MAX_HEADLINE = 200
_KEYED = re.compile(r"^([A-Za-z][A-Za-z ]{0,30}?)\s*:\s*(.+)$")
_BYLINE = re.compile(r"^by\s+(.+)$", re.IGNORECASE)
_PUBLISHED_KEYS = {"published date", "published", "date", "posted", "posted on", "publication date"}
_MODIFIED_KEYS = {"modified date", "modified", "updated", "last updated", "update date"}
_AUTHOR_KEYS = {"author", "authors", "by", "writer", "reporter"}
_OUTLET_KEYS = {"source", "outlet", "publisher"}
_SECTION_KEYS = {"section", "category", "topic"}


@dataclass(frozen=True)
class _Metadata:
    published: str | None = None
    modified: str | None = None
    author: str | None = None
    outlet: str | None = None
    section: str | None = None


class TextPageReader:
    """Text of a saved article page -> Article; its id is a hash of the text (a file has no URL)."""

    def run(self, text: str, *, source: str) -> Article:
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if not lines:
            raise SourceError("empty file")
        # A first line as long as a paragraph is prose: the text has no headline of its own.
        headline, rest = (lines[0], lines[1:]) if len(lines[0]) <= _MAX_HEADLINE else (None, lines)
        start = 1 if rest and not _is_item(rest[0]) else 0  # the lede, when there is one
        end = start
        while end < len(rest) and _is_item(rest[end]):
            end += 1
        metadata = _read_metadata([_item(line) for line in rest[start:end]])
        body = rest[:start] + rest[end:]
        while body and _is_item(body[-1]):
            body.pop()  # related-story headlines, not part of this story
        paragraphs = [_item(line) if _is_item(line) else line for line in body]
        if not paragraphs:
            raise SourceError("no article text found")
        return build_article(
            text="\n\n".join(paragraphs),
            source=source,
            title=headline,
            outlet=metadata.outlet,
            published=parse_datetime(metadata.published) or parse_datetime(metadata.modified),
            author=metadata.author,
            section=metadata.section,
        )


def _is_item(line: str) -> bool:
    return line.startswith(("- ", "• ", "* ")) and len(line) > 2


def _item(line: str) -> str:
    return line[2:].strip()


def _read_metadata(items: list[str]) -> _Metadata:
    """Keyed lines ("Published Date: ...") by key; bare ones are the section, then the outlet."""
    found: dict[str, str] = {}
    bare: list[str] = []
    for item in items:
        keyed = _KEYED.match(item)
        byline = _BYLINE.match(item)
        key = keyed.group(1).strip().lower() if keyed else ""
        if key in _PUBLISHED_KEYS:
            found.setdefault("published", keyed.group(2))
        elif key in _MODIFIED_KEYS:
            found.setdefault("modified", keyed.group(2))
        elif key in _AUTHOR_KEYS:
            found.setdefault("author", keyed.group(2))
        elif key in _OUTLET_KEYS:
            found.setdefault("outlet", keyed.group(2))
        elif key in _SECTION_KEYS:
            found.setdefault("section", keyed.group(2))
        elif byline:
            found.setdefault("author", byline.group(1))
        elif not keyed:
            bare.append(item)
    for field, value in zip(("section", "outlet"), bare, strict=False):  # extra bare lines are ignored
        found.setdefault(field, value)
    return _Metadata(**found)

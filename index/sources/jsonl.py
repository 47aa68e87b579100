"""JSON Lines corpora (one story per line: title, text, url, published, source) -> Articles.

Read as a stream, line by line, so a corpus of any length costs the memory of one line; a bad line
becomes one Failure with its line number and the rest are still read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import IO

from index.article import Article, Failure
from index.sources.common import SourceError, as_text, build_article, format_size, parse_datetime


class JsonlReader:
    """A binary stream of JSON Lines -> one Article or Failure per non-blank line.

    `source` is the outlet; `id` (or `article_id`) is the id when there is no URL. Lines longer
    than `max_line_bytes` are skipped with a Failure instead of being held in memory.
    """

    def __init__(self, *, max_line_bytes: int = 10_000_000) -> None:
        if max_line_bytes < 1024:
            raise ValueError("max_line_bytes must be at least 1024")
        self._max_line_bytes = max_line_bytes

    def run(self, stream: IO[bytes], *, source: str) -> Iterator[Article | Failure]:
        number = 0
        while line := stream.readline(self._max_line_bytes + 1):
            number += 1
            if len(line) > self._max_line_bytes and not line.endswith(b"\n"):
                while (rest := stream.readline(self._max_line_bytes)) and not rest.endswith(b"\n"):
                    pass  # skip the rest of the overlong line without keeping it
                yield Failure(source, f"line {number}: longer than {format_size(self._max_line_bytes)}")
                continue
            if not line.strip():
                continue
            try:
                yield self._article(line, source=source)
            except SourceError as exc:
                yield Failure(source, f"line {number}: {exc.reason}")

    def _article(self, line: bytes, *, source: str) -> Article:
        try:
            record = json.loads(line.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise SourceError("not UTF-8") from None
        except (ValueError, RecursionError) as exc:
            raise SourceError(f"not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise SourceError("not a JSON object")
        text = as_text(record.get("text"))
        if not text.strip():
            raise SourceError("no text")
        return build_article(
            text=text,
            source=source,
            title=as_text(record.get("title")),
            url=as_text(record.get("url")) or None,
            guid=as_text(record.get("article_id")) or as_text(record.get("id")) or None,
            outlet=as_text(record.get("source")) or as_text(record.get("outlet")) or None,
            published=parse_datetime(record.get("published")),
            language=as_text(record.get("language")) or None,
            author=as_text(record.get("author")) or None,
            section=as_text(record.get("section")) or as_text(record.get("category")) or None,
        )

"""From source strings (paths, folders, URLs) to Articles and Failures: the one entry point of sources/.

Each source is read by the reader its content calls for (see sniff.py). Nothing a reader raises
escapes: it becomes a Failure with a short reason, and the next source is read.
"""

from __future__ import annotations

import io
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlsplit

from index.article import Article, Failure
from index.sources.common import SourceError, format_size
from index.sources.decode import TextDecoder, refuse_binary
from index.sources.feed import FeedReader, Teaser
from index.sources.fetch import FetchedPage, Fetcher
from index.sources.html import HtmlReader
from index.sources.jsonl import JsonlReader
from index.sources.sniff import EXTENSIONS, SourceKind, sniff_kind
from index.sources.textpage import TextPageReader
from index.urls import public_url, redact_url

log = logging.getLogger(__name__)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_HEAD_BYTES = 65_536


class SourceLoader:
    """`run(sources)` yields an Article or a Failure for every story in every source, in order.

    A source is a URL (fetched with `fetcher`, then read as whatever it turns out to be), a file
    (.txt page, .html, .xml/.rss/.atom/.json feed, .jsonl corpus; the content decides when the name
    is wrong) or a folder (its files of those kinds, recursively, sorted, hidden ones skipped).

    Feed items with only a teaser have their page fetched when `fetch_linked_pages`, up to
    `page_workers` at a time; `is_known` (an id -> bool check against the store) skips that fetch for
    stories already held. With `local_files=False` only URLs are read: for sources that untrusted
    users supply.
    """

    def __init__(
        self,
        fetcher: Fetcher,
        *,
        max_feed_items: int = 500,
        fetch_linked_pages: bool = True,
        max_file_bytes: int = 50_000_000,
        is_known: Callable[[str], bool] | None = None,
        local_files: bool = True,
        page_workers: int = 4,
    ) -> None:
        if max_file_bytes < 1:
            raise ValueError("max_file_bytes must be at least 1")
        if page_workers < 1:
            raise ValueError("page_workers must be at least 1")
        self._fetcher = fetcher
        self._fetch_linked_pages = fetch_linked_pages
        self._max_file_bytes = max_file_bytes
        self._is_known = is_known
        self._local_files = local_files
        self._page_workers = page_workers
        self._decoder = TextDecoder()
        self._text_pages = TextPageReader()
        self._html = HtmlReader()
        self._feeds = FeedReader(max_items=max_feed_items)
        self._jsonl = JsonlReader()

    def run(self, sources: Iterable[str]) -> Iterator[Article | Failure]:
        for source in sources:
            # What a failure or an article says it came from is shown and stored: no credentials in it.
            yield from _guarded(redact_url(source), self._load(source))

    # -- dispatch --------------------------------------------------------------------------
    def _load(self, source: str) -> Iterator[Article | Failure]:
        location = source.strip()
        if not location:
            raise SourceError("empty source")
        scheme = _SCHEME.match(location)
        if scheme:
            if scheme.group(1).lower() not in ("http", "https"):
                raise SourceError("not http(s)")
            yield from self._load_url(location)
            return
        if not self._local_files:
            raise SourceError("only http(s) URLs can be read here")
        path = Path(location).expanduser()
        if path.is_dir():
            yield from self._load_folder(path)
        elif path.is_file():
            yield from self._load_file(path)
        elif path.exists():
            raise SourceError("not a regular file")
        else:
            raise SourceError("no such file")

    def _load_folder(self, folder: Path) -> Iterator[Article | Failure]:
        paths: list[Path] = []
        for root, dirs, files in os.walk(folder):  # symlinked folders are not followed: no cycles
            dirs[:] = [name for name in dirs if not name.startswith(".")]
            paths += [
                Path(root) / name
                for name in files
                if not name.startswith(".") and Path(name).suffix.lower() in EXTENSIONS
            ]
        for path in sorted(paths):
            yield from _guarded(str(path), self._load_file(path))

    def _load_file(self, path: Path) -> Iterator[Article | Failure]:
        source = str(path)
        size = path.stat().st_size
        if size == 0:
            raise SourceError("empty file")
        with path.open("rb") as stream:
            head = stream.read(_HEAD_BYTES)
            refuse_binary(head)
            kind = sniff_kind(head, name=path.name)
            if kind is SourceKind.JSONL:
                stream.seek(0)
                yield from self._jsonl.run(stream, source=source)
                return
            if size > self._max_file_bytes:
                raise SourceError(f"file larger than {format_size(self._max_file_bytes)}")
            data = head + stream.read()
        yield from self._read(data, kind, source=source)

    def _load_url(self, url: str) -> Iterator[Article | Failure]:
        page = self._fetcher.run(url)
        refuse_binary(page.body[:_HEAD_BYTES])
        kind = sniff_kind(page.body[:_HEAD_BYTES], name=urlsplit(page.final_url).path, content_type=page.content_type)
        # The readers see the link as readers get it: trafilatura logs it and names the site from it.
        yield from self._read(page.body, kind, source=redact_url(url), url=public_url(page.final_url),
                              charset=page.charset)

    def _read(
        self, data: bytes, kind: SourceKind, *, source: str, url: str | None = None, charset: str | None = None
    ) -> Iterator[Article | Failure]:
        if not data.strip():
            raise SourceError("empty file" if url is None else "empty page")
        if kind is SourceKind.FEED:
            yield from self._feed_items(self._feeds.run(data, source=source, url=url, charset=charset))
        elif kind is SourceKind.JSONL:
            yield from self._jsonl.run(io.BytesIO(data), source=source)
        else:
            text = self._decoder.run(data, declared=charset).text
            if not text.strip():
                raise SourceError("empty file" if url is None else "empty page")
            if kind is SourceKind.HTML:
                yield self._html.run(text, source=source, url=url)
            else:
                yield self._text_pages.run(text, source=source)

    # -- feed items whose story is on their page --------------------------------------------
    def _feed_items(self, items: list[Article | Teaser | Failure]) -> Iterator[Article | Failure]:
        """The items in feed order; teasers' pages are fetched in parallel (only the network wait:
        the pages are read here, in this thread)."""
        teasers = {n: item for n, item in enumerate(items) if isinstance(item, Teaser) and self._wants_page(item)}
        if not teasers:
            yield from (item.article if isinstance(item, Teaser) else item for item in items)
            return
        pool = ThreadPoolExecutor(max_workers=min(self._page_workers, len(teasers)), thread_name_prefix="page")
        try:
            pages = {n: pool.submit(self._fetcher.run, teaser.link) for n, teaser in teasers.items()}
            for n, item in enumerate(items):
                if n in teasers:
                    yield from self._with_page(teasers[n], pages[n])
                else:
                    yield item.article if isinstance(item, Teaser) else item
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # when the consumer stops early

    def _wants_page(self, teaser: Teaser) -> bool:
        known = self._is_known is not None and self._is_known(teaser.article.id)
        return self._fetch_linked_pages and not known

    def _with_page(self, teaser: Teaser, page: Future[FetchedPage]) -> Iterator[Article | Failure]:
        try:
            fetched = page.result()
            text = self._decoder.run(fetched.body, declared=fetched.charset).text
            story = self._html.run(text, source=teaser.article.source, url=public_url(fetched.final_url))
        except Exception as exc:  # noqa: BLE001 - one page must not cost the rest of the feed
            yield teaser.article
            yield Failure(redact_url(teaser.link), f"kept the feed's teaser; the page could not be read: {_reason(exc)}")
            return
        yield _merge(teaser.article, story)


def _merge(teaser: Article, story: Article) -> Article:
    """The feed's id, title, date and outlet (stable across polls) with the page's text."""
    return replace(
        teaser,
        text=story.text if len(story.text) > len(teaser.text) else teaser.text,
        published=teaser.published or story.published,
        author=teaser.author or story.author,
        language=teaser.language or story.language,
    )


def _guarded(source: str, items: Iterator[Article | Failure]) -> Iterator[Article | Failure]:
    """The items of one source; an exception while reading it becomes a Failure, the last item."""
    try:
        yield from items
    except Exception as exc:  # noqa: BLE001 - a reader's bug must not stop the other sources
        yield Failure(source, _reason(exc))


def _reason(exc: Exception) -> str:
    if isinstance(exc, SourceError):
        return exc.reason
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, OSError):
        return f"could not read: {exc.strerror or exc}"
    log.debug("reader failed", exc_info=exc)
    message = " ".join(str(exc).split())
    return f"could not read ({type(exc).__name__}{': ' + message[:150] if message else ''})"

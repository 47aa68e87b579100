"""SourceLoader end to end: files, folders and URLs (a real local server) to Articles and Failures."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SEED, SHARED_DATA
from http_fixture import LocalHTTPServer, http_server  # noqa: F401 - the fixture

from index.article import Article, Failure
from index.sources.fetch import Fetcher, FetchLimits
from index.sources.html import HtmlReader
from index.sources.loader import SourceLoader

DATA = SHARED_DATA / "feeds_and_html"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")

PARAGRAPH = (
    "<p>The harbour authority said on Monday that the new ferry terminal would open in spring, "
    "after two years of delays caused by storms and a shortage of steel. Passengers will be able to "
    "board from a covered hall, and the old pier will become a public park.</p>"
)
STORY_PAGE = (
    '<html lang="en"><head><title>Ferry terminal to open in spring</title></head><body><article>'
    "<h1>Ferry terminal to open in spring</h1>" + PARAGRAPH * 4 + "</article></body></html>"
)
PNG = b"\x89PNG\r\n\x1a\n" + bytes(200)


def loader(**kwargs) -> SourceLoader:
    limits = kwargs.pop("limits", FetchLimits(timeout_seconds=2))
    return SourceLoader(Fetcher(limits), **kwargs)


def load(sources: list[str], **kwargs) -> list[Article | Failure]:
    return list(loader(**kwargs).run(sources))


def failures(items: list) -> list[tuple[str, str]]:
    return [(item.source, item.reason) for item in items if isinstance(item, Failure)]


def rss(items: list[tuple[str, str, str]], title: str = "Harbour News") -> str:
    entries = "".join(
        f"<item><title>{t}</title><link>{link}</link><description>{d}</description>"
        "<pubDate>Mon, 06 May 2024 08:00:00 +0200</pubDate></item>"
        for t, link, d in items
    )
    channel = f"<channel><title>{title}</title>{entries}</channel>"
    return f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0">{channel}</rss>'


# -- files ---------------------------------------------------------------------------------
def test_a_text_page_file() -> None:
    (story,) = load([str(SEED)])
    assert story.title == "NATO suspends training activities in Iraq after Soleimani killing"
    assert story.source == str(SEED)


@needs_data
def test_an_html_file_and_a_feed_file() -> None:
    page = DATA / "html" / "readability" / "test-pages" / "bbc-1" / "source.html"
    feed = DATA / "rss" / "rss-parser" / "input" / "guardian.rss"
    items = load([str(page), str(feed)], fetch_linked_pages=False)
    assert len(items) == 56 and not failures(items)
    assert items[0].title == "Obama admits US gun laws are his 'biggest frustration'"
    assert {item.source for item in items[1:]} == {str(feed)}


@needs_data
def test_broken_and_hostile_feed_files(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.xml"
    bomb.write_text('<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><rss>&b;</rss>')
    broken = DATA / "rss" / "feed-rs" / "rss2" / "rss_2.0_invalid_1.xml"
    items = load([str(broken), str(bomb)])
    assert failures(items) == [
        (str(broken), "not a readable feed: no element found (line 19, column 84)"),
        (str(bomb), "refused: the feed declares XML entities (an entity-expansion attack?)"),
    ]


def test_a_jsonl_file(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus.jsonl"
    rows = [{"id": "s1", "title": "One", "text": "First story."}, {"id": "s2", "title": "Two", "text": "Second."}]
    corpus.write_text("\n".join(json.dumps(row) for row in rows) + "\n{bad\n")
    items = load([str(corpus)])
    assert [item.id for item in items[:2]] == ["s1", "s2"]
    assert failures(items)[0][1].startswith("line 3: not valid JSON")


def test_missing_empty_and_binary_files(tmp_path: Path) -> None:
    (tmp_path / "empty.txt").write_bytes(b"")
    (tmp_path / "blank.html").write_text("  \n\n ")
    (tmp_path / "image.txt").write_bytes(PNG)
    (tmp_path / "report.html").write_bytes(b"%PDF-1.4\n" + bytes(100))
    names = ["nothing-here.txt", "empty.txt", "blank.html", "image.txt", "report.html"]
    items = load([str(tmp_path / name) for name in names])
    assert [reason for _, reason in failures(items)] == [
        "no such file",
        "empty file",
        "empty file",
        "binary file (looks like PNG)",
        "binary file (looks like PDF)",
    ]


def test_files_are_read_by_their_content_when_misnamed(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text(rss([("Ferry news", "https://harbour.example/ferry", "x" * 400)]))
    (tmp_path / "page.xml").write_text(STORY_PAGE)
    feed_item, page = load([str(tmp_path / "feed.txt"), str(tmp_path / "page.xml")])
    assert feed_item.outlet == "Harbour News" and feed_item.id == "https://harbour.example/ferry"
    assert page.title == "Ferry terminal to open in spring"


def test_a_folder_is_read_recursively_in_order_skipping_hidden_and_unknown_files(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("Second headline\nSecond body.")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "z.txt").write_text("First headline\nFirst body.")
    (tmp_path / "a" / "empty.txt").write_text("")
    (tmp_path / ".hidden.txt").write_text("Hidden\nNot read.")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "c.txt").write_text("Git\nNot read.")
    (tmp_path / "notes.md").write_text("# not a source kind\nNot read.")
    items = load([str(tmp_path)])
    assert [(type(item).__name__, item.source) for item in items] == [
        ("Failure", str(tmp_path / "a" / "empty.txt")),
        ("Article", str(tmp_path / "a" / "z.txt")),
        ("Article", str(tmp_path / "b.txt")),
    ]


def test_local_files_can_be_refused() -> None:
    assert failures(load([str(SEED), "~/.ssh/id_rsa"], local_files=False)) == [
        (str(SEED), "only http(s) URLs can be read here"),
        ("~/.ssh/id_rsa", "only http(s) URLs can be read here"),
    ]


def test_not_http_and_empty_sources() -> None:
    assert failures(load(["ftp://example.com/feed.xml", "  "])) == [
        ("ftp://example.com/feed.xml", "not http(s)"),
        ("  ", "empty source"),
    ]


def test_a_reader_bug_becomes_a_failure_and_the_next_source_is_read(tmp_path: Path, monkeypatch) -> None:
    def broken(self, page, *, source, url=None):
        raise RuntimeError("boom\nwith a second line")

    monkeypatch.setattr(HtmlReader, "run", broken)
    (tmp_path / "page.html").write_text(STORY_PAGE)
    items = load([str(tmp_path / "page.html"), str(SEED)])
    assert failures(items) == [(str(tmp_path / "page.html"), "could not read (RuntimeError: boom with a second line)")]
    assert isinstance(items[1], Article)


# -- URLs ----------------------------------------------------------------------------------
def test_an_html_page_by_url(http_server: LocalHTTPServer) -> None:
    http_server.add("/story", STORY_PAGE)
    http_server.add_redirect("/s", "/story")
    (story,) = load([http_server.url("/s")])
    assert story.title == "Ferry terminal to open in spring"
    assert story.url == http_server.url("/story")
    assert story.id == "https://127.0.0.1:" + str(http_server.port) + "/story"
    assert story.outlet == "127.0.0.1"
    assert story.source == http_server.url("/s")


def test_a_feed_by_url_fetches_the_pages_of_teaser_items(http_server: LocalHTTPServer) -> None:
    http_server.add("/story", STORY_PAGE)
    feed = rss(
        [
            ("Ferry terminal to open in spring", http_server.url("/story"), "The terminal opens in spring."),
            ("Gone story", http_server.url("/gone"), "A teaser for a page that no longer exists."),
            ("Full story", http_server.url("/full"), "Complete text of the story. " * 20),
        ]
    )
    http_server.add("/feed", feed, content_type="application/rss+xml")
    items = load([http_server.url("/feed")])
    fetched, kept, failure, full = items
    assert fetched.title == "Ferry terminal to open in spring"
    assert fetched.text.startswith("The harbour authority said on Monday")  # the page's text, not the teaser
    assert fetched.outlet == "Harbour News"
    assert fetched.id == f"https://127.0.0.1:{http_server.port}/story"
    assert fetched.published is not None and fetched.published.utcoffset().total_seconds() == 0
    assert fetched.source == http_server.url("/feed")
    assert kept.text == "A teaser for a page that no longer exists."
    assert (failure.source, failure.reason) == (
        http_server.url("/gone"),
        "kept the feed's teaser; the page could not be read: HTTP 404",
    )
    assert full.text.startswith("Complete text of the story.")
    assert sorted(http_server.requests) == ["/feed", "/gone", "/story"]  # the full item needed no fetch


def test_teaser_pages_are_not_fetched_when_disabled_or_already_known(http_server: LocalHTTPServer) -> None:
    http_server.add("/story", STORY_PAGE)
    http_server.add("/feed", rss([("Ferry", http_server.url("/story"), "Teaser.")]), content_type="text/xml")
    (teaser,) = load([http_server.url("/feed")], fetch_linked_pages=False)
    assert teaser.text == "Teaser."
    (known,) = load([http_server.url("/feed")], is_known=lambda article_id: article_id == teaser.id)
    assert known.text == "Teaser."
    assert "/story" not in http_server.requests


def test_a_json_feed_and_a_text_page_by_url(http_server: LocalHTTPServer) -> None:
    feed = {
        "version": "https://jsonfeed.org/version/1.1",
        "title": "Harbour JSON",
        "items": [{"id": "1", "url": http_server.url("/j1"), "title": "JSON story", "content_text": "Body. " * 80}],
    }
    http_server.add("/feed.json", json.dumps(feed), content_type="application/feed+json")
    http_server.add_file("/page.txt", SEED, content_type="text/plain; charset=utf-8")
    json_story, text_page = load([http_server.url("/feed.json"), http_server.url("/page.txt")])
    assert (json_story.title, json_story.outlet) == ("JSON story", "Harbour JSON")
    assert text_page.title == "NATO suspends training activities in Iraq after Soleimani killing"


def test_a_wrong_declared_encoding_by_url(http_server: LocalHTTPServer) -> None:
    page = STORY_PAGE.replace("Ferry terminal", "Fähre und Café")
    http_server.add("/page", page.encode("utf-8"), content_type="text/html; charset=iso-8859-1")
    (story,) = load([http_server.url("/page")])
    assert story.title == "Fähre und Café to open in spring"


def test_url_failures(http_server: LocalHTTPServer) -> None:
    http_server.add_generated("/huge", 50_000_000)
    http_server.add_never_answer("/silent")
    http_server.add_redirect("/loop", "/loop")
    http_server.add("/image", PNG, content_type="text/html")
    http_server.add("/blank", b"   ")
    paths = ["/huge", "/missing", "/silent", "/loop", "/image", "/blank"]
    items = load([http_server.url(path) for path in paths], limits=FetchLimits(timeout_seconds=1))
    assert failures(items) == [
        (http_server.url("/huge"), "page larger than 5 MB"),
        (http_server.url("/missing"), "HTTP 404"),
        (http_server.url("/silent"), "timed out after 1 s"),
        (http_server.url("/loop"), "redirect loop"),
        (http_server.url("/image"), "binary file (looks like PNG)"),
        (http_server.url("/blank"), "empty page"),
    ]


def test_private_addresses_are_refused_when_asked(http_server: LocalHTTPServer) -> None:
    http_server.add("/story", STORY_PAGE)
    items = load([http_server.url("/story")], limits=FetchLimits(refuse_private=True))
    assert failures(items) == [(http_server.url("/story"), "refused: private address 127.0.0.1")]
    assert http_server.requests == []

"""FeedReader on the real feed fixtures (checked against their parsers' expected outputs) and on
broken, hostile and mislabelled feeds."""

from __future__ import annotations

import html
import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from index.article import Article, Failure
from index.sources.common import SourceError
from index.sources.feed import FeedReader, Teaser

DATA = SHARED_DATA / "feeds_and_html"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")
RSS_PARSER = DATA / "rss" / "rss-parser" / "input"
FEED_RS = DATA / "rss" / "feed-rs"


def manifest_feeds() -> list[dict]:
    if not DATA.is_dir():
        return []
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    return [row for row in rows if row["kind"] != "html" and row.get("expected")]


def expected_items(path: Path) -> list[tuple[str | None, str | None]]:
    """(title, link) of each item in an rss-parser or feed-rs expected output."""
    expected = json.loads(path.read_bytes().decode("utf-8", errors="replace"))
    if "feed" in expected:
        return [(item.get("title"), item.get("link")) for item in expected["feed"].get("items", [])]
    return [
        ((entry.get("title") or {}).get("content"), next((link["href"] for link in entry.get("links", [])), None))
        for entry in expected["entries"]
    ]


def read(path: Path, **kwargs) -> list:
    return FeedReader(max_items=1000).run(path.read_bytes(), source=str(path), **kwargs)


def article(item: Article | Teaser | Failure) -> Article | Failure:
    return item.article if isinstance(item, Teaser) else item


def plain(title: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", title)).split())


@needs_data
@pytest.mark.parametrize("row", manifest_feeds(), ids=lambda row: row["path"].rsplit("/", 1)[-1])
def test_fixture_matches_the_expected_output(row: dict) -> None:
    items = read(DATA / row["path"])
    expected = expected_items(DATA / row["expected"])
    assert len(items) == len(expected)
    for item, (title, link) in zip(items, expected, strict=True):
        if isinstance(item, Failure):  # an item with neither title nor text
            assert not title
            continue
        story = article(item)
        if title and "\ufffd" not in title:  # some expected outputs were written in the wrong encoding
            assert story.title == plain(title)
        link = (link or "").strip()
        if re.match(r"https?://", link):
            assert (story.url or "").lower().rstrip("/") == link.lower().rstrip("/")


@needs_data
def test_the_guardian_feed() -> None:
    items = read(RSS_PARSER / "guardian.rss")
    stories = [article(item) for item in items]
    assert len(stories) == 55
    first = stories[0]
    assert first.title == "Trump State of the Union address promised unity but emphasized discord"
    assert (
        first.id == "https://theguardian.com/us-news/2018/jan/31/donald-trump-state-of-the-union-address-unity-discord"
    )
    assert first.published == datetime(2018, 1, 31, 7, 26, 5, tzinfo=timezone.utc)
    assert first.author == "David Smith in Washington"
    assert first.language == "en"
    assert {story.outlet for story in stories} == {"The Guardian"}
    assert all("<" not in story.text for story in stories)
    assert sum(isinstance(item, Teaser) for item in items) == 4  # photo galleries with a line of text


@needs_data
def test_json_feed() -> None:
    (item,) = read(FEED_RS / "jsonfeed" / "jsonfeed_spec_1.json")
    assert isinstance(item, Article)
    assert item.title == "Announcing JSON Feed"
    assert item.url == "https://jsonfeed.org/2017/05/17/announcing_json_feed"
    assert item.published == datetime(2017, 5, 17, 15, 2, 12, tzinfo=timezone.utc)
    assert item.outlet == "JSON Feed"
    assert item.text.startswith("We — Manton Reece and Brent Simmons — have noticed")


@needs_data
def test_json_feed_titles_are_unescaped_and_ids_fall_back_to_the_item_id() -> None:
    items = [article(item) for item in read(FEED_RS / "jsonfeed" / "jsonfeed_elastic_1.1.json")]
    assert items[0].outlet == "Blog – InfluxData"
    assert items[0].language == "en"
    assert items[0].title == "InfluxDB vs. Graphite for Time Series Data & Metrics Benchmark"


@needs_data
def test_feeds_in_legacy_encodings() -> None:
    uol = [article(item) for item in read(RSS_PARSER / "uolNoticias.rss")]  # undeclared Windows-1252
    assert uol[0].outlet == "UOL Noticias"
    assert any("inquérito" in story.title for story in uol)
    assert all("\ufffd" not in story.title + story.text for story in uol)
    (iso,) = read(FEED_RS / "rss1" / "rss_1.0_iso8859.xml")
    assert "\ufffd" not in article(iso).title + article(iso).text


def test_a_wrong_declared_encoding_is_overruled() -> None:
    feed = (
        '<?xml version="1.0" encoding="ISO-8859-1"?><rss version="2.0"><channel><title>Zeitung</title>'
        "<item><title>Förderung für Glasfaser</title><link>https://zeitung.example/a</link>"
        "<description>Größere Projekte zuerst.</description></item></channel></rss>"
    ).encode()
    (item,) = FeedReader().run(feed, source="feed.xml")
    assert article(item).title == "Förderung für Glasfaser"
    assert article(item).text == "Größere Projekte zuerst."


@needs_data
def test_teasers_carry_their_link_and_the_feed_metadata() -> None:
    items = read(RSS_PARSER / "craigslist.rss")
    assert all(isinstance(item, Teaser) for item in items)
    assert all(item.link == item.article.url for item in items)
    assert all(item.article.id == item.article.url.replace("http://", "https://") for item in items)


@needs_data
def test_full_text_items_are_articles_in_plain_text() -> None:
    items = read(RSS_PARSER / "content-encoded.rss")
    assert all(isinstance(item, Article) for item in items)
    assert all(len(item.text) > 300 and "<p>" not in item.text for item in items)
    assert items[0].title == "THE CREATIVE FORAGER"
    assert items[0].section == "plants"


@needs_data
def test_relative_links_resolve_against_the_feed_url_or_its_own_self_link() -> None:
    gulp = [article(item) for item in read(RSS_PARSER / "gulp-atom.atom")]
    assert gulp[0].url == "https://github.com/gulpjs/gulp/releases/tag/v3.9.0"
    (relative,) = read(FEED_RS / "atom" / "atom_relative.xml", url="https://example.org/feed.atom")
    assert article(relative).url == "https://example.org/blog/2003/12/13/atom03"


@needs_data
def test_items_are_capped() -> None:
    items = FeedReader(max_items=10).run((RSS_PARSER / "giantbomb-podcast.rss").read_bytes(), source="gb")
    assert len(items) == 10


@needs_data
def test_an_empty_item_is_a_failure_not_an_exception() -> None:
    (item,) = read(RSS_PARSER / "missing-fields.atom")
    assert isinstance(item, Failure)
    assert item.reason == "item 1: no title, no text"


@needs_data
def test_broken_xml_keeps_the_items_read_before_the_break() -> None:
    data = (RSS_PARSER / "guardian.rss").read_bytes()
    cut = data[: data.index(b"<item>", len(data) // 2) + 200]  # ends inside an item
    items = FeedReader().run(cut, source="cut.rss")
    assert 20 < len(items) < 55
    assert article(items[0]).title == "Trump State of the Union address promised unity but emphasized discord"


@needs_data
@pytest.mark.parametrize(
    ("path", "reason"),
    [
        (FEED_RS / "rss2" / "rss_2.0_invalid_1.xml", "not a readable feed: no element found (line 19, column 84)"),
        (RSS_PARSER / "unrecognized.rss", "not a readable feed: junk after document element (line 3, column 0)"),
        (FEED_RS / "xml" / "xml_sample_1.xml", "not a feed"),
        (FEED_RS / "jsonfeed" / "jsonfeed_spec_1.serde.json", "not a JSON Feed"),
    ],
)
def test_documents_that_are_not_feeds(path: Path, reason: str) -> None:
    with pytest.raises(SourceError) as caught:
        read(path)
    assert caught.value.reason == reason


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"{not json", "not valid JSON"),
        (b'{"version": "https://jsonfeed.org/version/1.1", "title": "t", "items": []}', "feed has no items"),
        (b'<rss version="2.0"><channel><title>Empty</title></channel></rss>', "feed has no items"),
    ],
)
def test_empty_and_invalid_feeds(data: bytes, reason: str) -> None:
    with pytest.raises(SourceError, match=f"^{reason}"):
        FeedReader().run(data, source="x")


BILLION_LAUGHS = (
    '<?xml version="1.0"?>\n<!DOCTYPE rss [\n<!ENTITY lol "lol">\n'
    + "".join(f'<!ENTITY lol{n} "{("&lol" + (str(n - 1) if n > 1 else "") + ";") * 10}">\n' for n in range(1, 10))
    + ']>\n<rss version="2.0"><channel><title>t</title><item><title>&lol9;</title>'
    "<description>boom</description></item></channel></rss>"
)


@pytest.mark.parametrize(
    "document",
    [
        BILLION_LAUGHS,
        # quadratic blow-up: one big entity used many times, no nesting
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY a "' + "x" * 50_000 + '">]><rss version="2.0"><channel>'
        "<title>t</title><item><title>t</title><description>" + "&a;" * 5000 + "</description></item></channel></rss>",
        # external entity: a file read
        '<?xml version="1.0"?><!DOCTYPE rss [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><rss version="2.0">'
        "<channel><title>t</title><item><title>&xxe;</title><description>d</description></item></channel></rss>",
    ],
    ids=["billion-laughs", "quadratic-blowup", "external-entity"],
)
def test_entity_declarations_are_refused(document: str) -> None:
    with pytest.raises(SourceError, match=r"^refused: the feed declares XML entities"):
        FeedReader().run(document.encode(), source="bomb.xml")


def test_entity_text_inside_an_item_is_only_text() -> None:
    feed = (
        '<rss version="2.0"><channel><title>XML Weekly</title><item><title>About DTDs</title>'
        "<link>https://xml.example/dtd</link><description><![CDATA[<p>Write <!ENTITY x> in a DTD.</p>]]>"
        "</description></item></channel></rss>"
    )
    (item,) = FeedReader(teaser_chars=0).run(feed.encode(), source="x")
    assert item.title == "About DTDs"

"""HtmlReader on real saved pages (mozilla/readability and newspaper fixtures) and on bad pages."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from functools import cache
from pathlib import Path

import pytest
from conftest import SHARED_DATA

from index.sources.common import SourceError
from index.sources.decode import TextDecoder
from index.sources.html import HtmlReader, html_to_text

# htmldate passes dateutil zone names like "EST" on some pages (html.py silences this outside pytest).
pytestmark = pytest.mark.filterwarnings("ignore:tzname")
DATA = SHARED_DATA / "feeds_and_html"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")
READABILITY = DATA / "html" / "readability" / "test-pages"
NEWSPAPER = DATA / "html" / "newspaper"


@cache
def read_page(path: Path, url: str | None = None):
    return HtmlReader().run(TextDecoder().run(path.read_bytes()).text, source=str(path), url=url)


def expected_metadata(name: str) -> dict:
    return json.loads((READABILITY / name / "expected-metadata.json").read_text(encoding="utf-8"))


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


@needs_data
@pytest.mark.parametrize(
    "name",
    ["bbc-1", "nytimes-1", "guardian-1", "wapo-1", "telegraph", "seattletimes-1", "folha", "lemonde-1", "heise", "cnn"],
)
def test_news_page_titles_match_readability(name: str) -> None:
    article = read_page(READABILITY / name / "source.html")
    assert article.title == " ".join(expected_metadata(name)["title"].split())


@needs_data
def test_most_news_like_pages_get_the_expected_title() -> None:
    rows = [json.loads(line) for line in (DATA / "manifest.jsonl").read_text(encoding="utf-8").splitlines()]
    news = [row for row in rows if row.get("news_like")]
    matched = 0
    for row in news:
        title = read_page(DATA / row["path"]).title.lower()
        expected = " ".join(row["title"].split()).lower()
        matched += title == expected or title in expected
    assert matched >= 0.85 * len(news)


@needs_data
@pytest.mark.parametrize(
    ("name", "exact"),
    [
        ("bbc-1", True),
        ("iab-1", True),
        ("seattletimes-1", True),
        ("theverge", False),
        ("guardian-1", False),
        ("liberation-1", False),
        ("breitbart", False),
        ("aclu", False),
    ],
)
def test_published_dates_match_readability(name: str, exact: bool) -> None:
    published = read_page(READABILITY / name / "source.html").published
    expected = datetime.fromisoformat(expected_metadata(name)["publishedTime"])
    expected = expected if expected.tzinfo else expected.replace(tzinfo=timezone.utc)
    assert published is not None and published.tzinfo is not None
    if exact:
        assert published == expected.replace(microsecond=0)
    else:  # some pages give the day only
        assert abs(published - expected) < timedelta(days=1)


@needs_data
def test_metadata_of_a_news_page() -> None:
    article = read_page(READABILITY / "guardian-1" / "source.html")
    assert article.outlet == "The Guardian"
    assert article.author == "Eleanor Ainge Roy"
    assert article.language == "en"
    story = "environment/2019/jan/03/what-is-the-sea-telling-us-maori-tribes-fearful-over-whale-strandings"
    assert article.url == f"https://www.theguardian.com/{story}"  # the page's canonical link
    assert article.id == f"https://theguardian.com/{story}"
    assert article.text.startswith("Whale whisperer Hori Parata was just seven years old")


@needs_data
def test_the_fetched_url_is_used_when_the_page_names_none() -> None:
    article = read_page(READABILITY / "bbc-1" / "source.html", url="https://www.bbc.co.uk/news/world-33646225")
    assert article.url == "https://www.bbc.co.uk/news/world-33646225"
    assert article.id == "https://bbc.co.uk/news/world-33646225"


@needs_data
@pytest.mark.parametrize(
    "name",
    [
        "bloomberg.com1",
        "businessinsider.com1",
        "foxnews.com2",
        "huffingtonpost.com1",
        "nj.com1",
        "nypost.com1",
        "nypost.com2",
        "telegraph.co.uk2",
        "usnews.com1",
        "theglobeandmail.com1",
        "dallasnews.com1",
        "wired.com1",
    ],
)
def test_newspaper_bodies_overlap_the_expected_text(name: str) -> None:
    expected = (NEWSPAPER / "text" / f"{name}.txt").read_bytes().decode("utf-8", errors="replace")
    text = read_page(NEWSPAPER / "html" / f"{name}.html").text
    first_line = " ".join(expected.strip().split("\n", 1)[0].split())[:80]
    assert first_line in " ".join(text.split())
    found = set(words(text))
    expected_words = words(expected)
    assert sum(word in found for word in expected_words) >= 0.9 * len(expected_words)


@needs_data
@pytest.mark.parametrize(
    ("name", "language"),
    [
        ("chinese_article", "zh"),
        ("arabic_article", "ar"),
        ("japanese_article2", "ja"),
        ("spanish_article", "es"),
        ("vogue.de1", "de"),
    ],
)
def test_foreign_language_pages(name: str, language: str) -> None:
    article = read_page(NEWSPAPER / "html" / f"{name}.html")
    assert article.language == language
    assert len(article.text) > 200


@pytest.mark.parametrize(
    "page",
    [
        "",
        "<html><body></body></html>",
        "<html><head><script>var tracking = 1;</script></head><body><script>render()</script></body></html>",
        "<html><head><style>p { color: red }</style></head><body><div></div></body></html>",
    ],
)
def test_pages_without_article_text(page: str) -> None:
    with pytest.raises(SourceError, match=r"^no article text found$"):
        HtmlReader().run(page, source="empty.html")


@needs_data
def test_a_fragment_without_html_and_body_tags() -> None:
    article = read_page(READABILITY / "bbc-1" / "expected.html")
    assert article.text.startswith('President Barack Obama has admitted that his failure to pass "common sense gun')


def test_a_huge_page_is_refused_quickly() -> None:
    page = "<html><body>" + "<div><span>x</span><a href='/a'>link</a></div>" * 20_000 + "</body></html>"
    with pytest.raises(SourceError, match=r"page too large to extract \(\d+ HTML elements\)"):
        HtmlReader().run(page, source="huge.html")


def test_a_small_article_page() -> None:
    body = "".join(
        f"<p>The council voted on Tuesday to extend the tram line by {n} kilometres, officials said after "
        "a long debate about the cost of the project and its delays.</p>"
        for n in range(2, 8)
    )
    page = (
        '<html lang="en-GB"><head><title>Tram line extended | City Post</title>'
        '<meta property="og:site_name" content="City Post">'
        '<meta property="article:published_time" content="2024-05-02T09:15:00+02:00">'
        '<link rel="canonical" href="/news/tram-line?utm_source=rss"></head>'
        f"<body><article><h1>Tram line extended</h1>{body}</article></body></html>"
    )
    article = HtmlReader().run(page, source="x", url="https://citypost.example/story?id=1")
    assert article.title == "Tram line extended"
    assert article.outlet == "City Post"
    assert article.language == "en"
    assert article.published == datetime(2024, 5, 2, 7, 15, tzinfo=timezone.utc)
    assert article.url == "https://citypost.example/news/tram-line?utm_source=rss"
    assert article.id == "https://citypost.example/news/tram-line"
    assert article.text.startswith("The council voted on Tuesday to extend the tram line by 2 kilometres")
    assert "\n\n" in article.text


def test_a_canonical_url_on_another_site_is_not_believed() -> None:
    page = (
        '<html><head><title>Exclusive</title><link rel="canonical" href="https://www.reuters.com/world/story">'
        "</head><body><article>"
        + "<p>Claims that are not from Reuters at all, written elsewhere.</p>" * 8
        + "</article></body></html>"
    )
    article = HtmlReader().run(page, source="x", url="https://blog.example/post")
    assert article.url == "https://blog.example/post"
    same_site = HtmlReader().run(
        page.replace("www.reuters.com", "news.blog.example"), source="x", url="https://blog.example/p"
    )
    assert same_site.url == "https://news.blog.example/world/story"


def test_html_to_text_keeps_paragraphs_and_drops_scripts() -> None:
    fragment = "<p>First &amp; foremost.</p><script>alert(1)</script><p>Second<br>line</p><ul><li>one</li></ul>"
    text = html_to_text(fragment)
    assert "alert" not in text
    assert [part.strip() for part in text.split("\n") if part.strip()] == ["First & foremost.", "Second", "line", "one"]
    assert html_to_text("Fish &amp; chips") == "Fish & chips"

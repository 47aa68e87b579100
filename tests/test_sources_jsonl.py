"""JsonlReader on the shared corpora (streamed) and on bad lines."""

from __future__ import annotations

import io
import json
from datetime import datetime, timezone
from itertools import islice

import pytest
from conftest import SHARED_DATA

from index.article import Article, Failure
from index.sources.jsonl import JsonlReader

DATA = SHARED_DATA
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason="shared data not available")


def read(data: bytes, **kwargs) -> list[Article | Failure]:
    return list(JsonlReader(**kwargs).run(io.BytesIO(data), source="corpus.jsonl"))


@needs_data
def test_reuters_is_streamed() -> None:
    with (DATA / "reuters" / "corpus.jsonl").open("rb") as stream:
        first = list(islice(JsonlReader().run(stream, source="reuters"), 200))
        assert stream.tell() < 1_000_000  # it stopped reading with the consumer, far from the end
    assert all(isinstance(item, Article) for item in first)
    cocoa = first[0]
    assert cocoa.id == "reuters21578-1"
    assert cocoa.title == "BAHIA COCOA REVIEW"
    assert cocoa.outlet == "Reuters (1987 newswire)"
    assert cocoa.published == datetime(1987, 2, 26, 15, 1, 1, tzinfo=timezone.utc)
    assert cocoa.text.startswith("Showers continued throughout the week in the Bahia cocoa zone")
    assert cocoa.language == "en"
    assert cocoa.source == "reuters"


@needs_data
def test_bbc_category_is_the_section() -> None:
    with (DATA / "bbc" / "corpus.jsonl").open("rb") as stream:
        first = next(iter(JsonlReader().run(stream, source="bbc")))
    assert first.id == "bbc-business-001"
    assert first.section == "business"
    assert first.outlet == "BBC News"
    assert first.published is None


@needs_data
def test_stories_without_titles_get_one_from_their_text() -> None:
    with (DATA / "cnndm" / "dev.jsonl").open("rb") as stream:
        story = next(iter(JsonlReader().run(stream, source="cnndm")))
    assert story.title and story.text.startswith(story.title.rstrip("…"))
    assert len(story.title) <= 101


def test_bad_lines_become_failures_and_the_rest_is_read() -> None:
    lines = [
        json.dumps({"id": "a", "title": "First", "text": "The first story."}),
        "{not json",
        "",
        json.dumps(["a", "list"]),
        json.dumps({"id": "b", "title": "No text"}),
        b"\xff\xfe bad bytes".decode("latin-1"),
        json.dumps({"title": "Linked", "text": "Has a URL.", "url": "https://news.example/x?utm_source=a", "id": 7}),
    ]
    data = "\n".join(lines).encode("latin-1")
    items = read(data)
    assert [type(item).__name__ for item in items] == ["Article", "Failure", "Failure", "Failure", "Failure", "Article"]
    assert items[1].reason.startswith("line 2: not valid JSON")
    assert items[2].reason == "line 4: not a JSON object"
    assert items[3].reason == "line 5: no text"
    assert items[4].reason == "line 6: not UTF-8"
    assert all(item.source == "corpus.jsonl" for item in items)
    assert items[0].id == "a"
    assert items[5].id == "https://news.example/x"  # the URL beats the record id
    assert items[5].url == "https://news.example/x?utm_source=a"


def test_an_overlong_line_is_skipped_without_holding_it() -> None:
    long_line = json.dumps({"title": "Huge", "text": "x" * 50_000})
    data = (long_line + "\n" + json.dumps({"title": "Next", "text": "Still read."}) + "\n").encode()
    items = read(data, max_line_bytes=10_000)
    assert isinstance(items[0], Failure) and items[0].reason == "line 1: longer than 10 kB"
    assert isinstance(items[1], Article) and items[1].title == "Next"


def test_a_bom_numbers_and_odd_types_are_tolerated() -> None:
    data = (
        "\ufeff".encode()
        + json.dumps(
            {"id": 12, "title": None, "text": "Story text here.", "published": "not a date", "source": ["x"]}
        ).encode()
    )
    (item,) = read(data)
    assert item.id == "12"
    assert item.title == "Story text here."
    assert item.published is None
    assert item.outlet is None

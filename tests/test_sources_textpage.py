"""TextPageReader on the bundled sample page and on variations of its layout."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from conftest import SEED

from index.sources.common import SourceError
from index.sources.textpage import TextPageReader



@pytest.fixture
def sample_text() -> str:
    return SEED.read_text(encoding="utf-8")


def test_the_sample_page(sample_text: str) -> None:
    article = TextPageReader().run(sample_text, source=str(SEED))
    assert article.title == "NATO suspends training activities in Iraq after Soleimani killing"
    assert article.text.startswith("NATO has suspended its training missions in Iraq, a spokesman")  # the lede
    assert article.published == datetime(2020, 1, 4, 5, 46, tzinfo=timezone.utc)
    assert article.section == "World"
    assert article.outlet == "Agencies and A News"
    assert article.language == "en"
    assert article.url is None
    assert article.source == str(SEED)
    assert article.id.startswith("sha256:")


def test_the_sample_keeps_the_prose_and_drops_metadata_and_related_headlines(sample_text: str) -> None:
    text = TextPageReader().run(sample_text, source="sample").text
    assert '"The safety of our personnel in Iraq is paramount," acting NATO spokesman' in text
    assert text.endswith("The group is estimated to have 20,000 members.")
    assert "\nSOLEIMANI'S KILLING\n" in text  # the subheading, as a heading line
    for gone in ("Published Date", "Modified Date", "Agencies and A News", "Burkina Faso", "Erdoğan", "\n- "):
        assert gone not in text


def test_the_id_is_a_content_hash(sample_text: str) -> None:
    reader = TextPageReader()
    first = reader.run(sample_text, source="a.txt")
    assert reader.run(sample_text.replace("\n", "\r\n") + "\n\n", source="b.txt").id == first.id
    assert reader.run(sample_text.replace("paramount", "vital"), source="a.txt").id != first.id


def test_metadata_before_the_lede_and_keyed_fields() -> None:
    page = "\n".join(
        [
            "Storm closes schools",
            "- By Jane Doe",
            "- Section: Weather",
            "- Source: Daily Planet",
            "- Updated: 2024-03-01T08:30:00+01:00",
            "- Reading time: 2 min",
            "Schools across the county closed on Friday as the storm arrived.",
            "Officials said they would reopen on Monday.",
        ]
    )
    article = TextPageReader().run(page, source="storm.txt")
    assert article.author == "Jane Doe"
    assert article.section == "Weather"
    assert article.outlet == "Daily Planet"
    assert article.published == datetime(2024, 3, 1, 7, 30, tzinfo=timezone.utc)
    assert article.text == (
        "Schools across the county closed on Friday as the storm arrived.\n\n"
        "Officials said they would reopen on Monday."
    )


def test_a_page_without_metadata() -> None:
    article = TextPageReader().run("Headline only story\nThe body is a single paragraph.\n", source="x.txt")
    assert article.title == "Headline only story"
    assert article.text == "The body is a single paragraph."
    assert article.published is None and article.outlet is None and article.section is None


def test_a_text_without_a_headline() -> None:
    paragraph = "The river rose overnight and flooded the lower town, " * 6
    article = TextPageReader().run(paragraph + "\nA second paragraph.", source="x.txt")
    assert article.text.startswith("The river rose overnight")
    assert article.text.endswith("A second paragraph.")
    assert article.title.endswith("…") and paragraph.startswith(article.title[:-1])


@pytest.mark.parametrize(
    "page",
    ["", "   \n\n", "Just a headline", "Headline\n- World\n- Published Date: 05:46 | 04 January 2020\n- Related story"],
)
def test_pages_without_a_body_are_refused(page: str) -> None:
    with pytest.raises(SourceError):
        TextPageReader().run(page, source="x.txt")

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from fakes import FakeEmbedder

from bot.citecheck import CitationChecker
from bot.config import LLMSettings
from index.article import ArticleMeta
from index.retrieve import Hit

NATO = (
    "NATO has suspended its training missions in Iraq, a spokesman for the alliance said Saturday. "
    "The mission consists of several hundred personnel who train Iraqi security forces."
)
OIL = "Oil prices rose by 4 percent on Friday after the strike. Brent crude reached 69 dollars a barrel."
CASINO = "The casino opened a new hotel tower in Las Vegas. It has 3000 rooms and a rooftop pool."


def make_hit(article_id: str, text: str, *, score: float = 1.0, published: datetime | None = None) -> Hit:
    meta = ArticleMeta(
        id=article_id,
        title=f"Title of {article_id}",
        outlet="Example News",
        url=f"https://example.com/{article_id}",
        published=published or datetime(2020, 1, 4, tzinfo=timezone.utc),
        fetched=None,
        language="en",
        also_reported_by=("Other Wire",),
    )
    return Hit(chunk_id=0, article=meta, text=text, start=0, end=len(text), score=score)


@pytest.fixture
def checker() -> CitationChecker:
    return CitationChecker(LLMSettings(), FakeEmbedder())


def test_supported_claims_keep_their_citations_and_quote_the_best_sentence(checker):
    sources = [make_hit("nato", NATO), make_hit("oil", OIL)]
    answer = "NATO has suspended its training missions in Iraq [1]. Oil prices rose by 4 percent on Friday [2]."

    checked = checker.run(answer, sources)

    assert checked.text == answer
    assert (checked.supported, checked.unsupported, checked.removed_citations) == (2, 0, 0)
    assert [c.n for c in checked.citations] == [1, 2]
    first = checked.citations[0]
    assert first.article_id == "nato" and first.url == "https://example.com/nato"
    assert first.quote.startswith("NATO has suspended its training missions in Iraq")
    assert first.also_reported_by == ("Other Wire",)
    assert checked.citations[1].quote == "Oil prices rose by 4 percent on Friday after the strike."


def test_every_marker_form_is_parsed_and_renumbered_to_the_sources_used(checker):
    sources = [make_hit("casino", CASINO), make_hit("oil", OIL), make_hit("nato", NATO)]
    answer = (
        "NATO has suspended its training missions in Iraq [3]. "
        "Brent crude reached 69 dollars a barrel [2, 3]. "
        "Oil prices rose by 4 percent on Friday [2][2]."
    )

    checked = checker.run(answer, sources)

    # Source 3 becomes [1] (first used), source 2 becomes [2]; the casino article is never cited,
    # and [3] is dropped from the Brent sentence because the NATO passage does not support it.
    assert checked.text == (
        "NATO has suspended its training missions in Iraq [1]. "
        "Brent crude reached 69 dollars a barrel [2]. "
        "Oil prices rose by 4 percent on Friday [2]."
    )
    assert [(c.n, c.article_id) for c in checked.citations] == [(1, "nato"), (2, "oil")]


def test_citations_to_missing_sources_are_removed_and_counted(checker):
    checked = checker.run("NATO has suspended its training missions in Iraq [1][7, 0].", [make_hit("nato", NATO)])

    assert checked.removed_citations == 2
    assert checked.text == "NATO has suspended its training missions in Iraq [1]."


def test_a_citation_after_the_full_stop_belongs_to_the_sentence_before(checker):
    checked = checker.run("NATO has suspended its training missions in Iraq. [1]", [make_hit("nato", NATO)])

    assert checked.supported == 1
    assert checked.text == "NATO has suspended its training missions in Iraq [1]."


def test_unsupported_and_uncited_claims_are_dropped_and_counted(checker):
    sources = [make_hit("nato", NATO), make_hit("casino", CASINO)]
    answer = (
        "NATO has suspended its training missions in Iraq [1].\n"
        "The casino tower has a rooftop pool and a new hotel [1].\n"  # true, but not in the cited passage
        "Once upon a time a little girl named Lily loved the park [2].\n"  # nonsense
        "Iran promised a harsh response."  # no citation at all
    )

    checked = checker.run(answer, sources)

    assert (checked.supported, checked.unsupported) == (1, 3)
    assert checked.text == "NATO has suspended its training missions in Iraq [1]."
    assert [c.article_id for c in checked.citations] == ["nato"]


def test_a_number_missing_from_the_passage_makes_a_claim_unsupported(checker):
    checked = checker.run("Oil prices rose by 14 percent on Friday after the strike [1].", [make_hit("oil", OIL)])

    assert (checked.supported, checked.unsupported) == (0, 1)
    assert checked.text == "" and checked.citations == []


@pytest.mark.parametrize(
    ("claim", "supported"),
    [
        ("Oil prices rose by 40 percent on Friday after the strike [1].", False),  # the passage says 4
        ("The casino tower has 3 rooms and a rooftop pool [1].", False),  # 3000: one digit is a number too
        ("Brent crude reached 6.9 dollars a barrel [1].", False),  # 69: the decimal point belongs to the number
        ("The tower has 3,000 rooms and a rooftop pool [1].", True),  # 3000, written with a separator
    ],
)
def test_every_number_of_a_claim_is_checked_whole(checker, claim, supported):
    checked = checker.run(claim, [make_hit("oil", OIL + " " + CASINO)])

    assert (checked.supported, checked.unsupported) == ((1, 0) if supported else (0, 1))


def test_paragraph_breaks_between_kept_claims_survive(checker):
    sources = [make_hit("nato", NATO), make_hit("oil", OIL)]
    answer = "NATO has suspended its training missions in Iraq [1].\n\nOil prices rose by 4 percent on Friday [2]."

    assert checker.run(answer, sources).text == answer


def test_thresholds_are_validated():
    with pytest.raises(ValueError, match="min_claim_overlap"):
        CitationChecker(LLMSettings(min_claim_overlap=0), FakeEmbedder())


ELECTION = (
    "Incumbent mayor Maria Lopez won re-election on Sunday with 54 percent of the vote, officials said. "
    "Turnout was lower than four years ago."
)
BLAST = (
    "No one was injured in the blast at the chemical plant, police said. "
    "Firefighters put out the fire within an hour."
)
PROTEST = "The interior ministry denied that police had fired on protesters in the capital on Friday."
RATES = "The central bank didn't raise interest rates on Thursday, holding them at 4.5 percent."
MISSION = "NATO suspended its training mission in Iraq, but the alliance did not withdraw its troops from the country."


@pytest.mark.parametrize(
    ("passage", "agreeing", "negating"),
    [
        (ELECTION, "Maria Lopez won re-election on Sunday [1].", "Maria Lopez never won re-election on Sunday [1]."),
        (BLAST, "Nobody was injured in the blast at the chemical plant [1].",
         "Several people were injured in the blast at the chemical plant [1]."),
        (PROTEST, "The interior ministry denied that police fired on protesters in the capital [1].",
         "Police fired on protesters in the capital on Friday [1]."),
        (RATES, "The central bank did not raise interest rates on Thursday [1].",
         "The central bank raised interest rates on Thursday [1]."),
        (MISSION, "NATO suspended its training mission in Iraq [1].",
         "NATO did not suspend its training mission in Iraq [1]."),
    ],
    ids=["claim adds never", "claim drops no one", "claim drops denied", "claim drops n't", "other clause negated"],
)
def test_a_claim_that_negates_its_source_is_unsupported_however_many_words_they_share(
    checker, passage, agreeing, negating
):
    # The twins differ only in negation: the agreeing one shows that the overlap is enough, and it is
    # negated where the passage is (never / not / n't / denied / no one against nobody) or neither is.
    sources = [make_hit("news", passage)]

    assert checker.run(agreeing, sources).supported == 1
    assert checker.run(negating, sources).supported == 0
    checked = checker.run(f"{agreeing} {negating}", sources)
    assert (checked.text, checked.supported, checked.unsupported) == (agreeing, 1, 1)

"""Hybrid retrieval with filters and diversity, and extractive answers whose every sentence is quoted."""

from __future__ import annotations

import re

import pytest
from conftest import WIRE, article, make_ingestor

from bot.extractive import NOT_FOUND, ExtractiveAnswerer
from bot.summarize import ArticleSummarizer, TopicSummarizer
from index.retrieve import RetrievalMode, RetrievalSettings, Retriever
from index.store import SearchFilters

LONG = " ".join(
    f"Paragraph {i} of the long budget report says the treasury will review spending on roads and schools."
    for i in range(40)
)


@pytest.fixture
def store(new_store, fake_embedder):
    store = new_store(fake_embedder)
    make_ingestor(store, fake_embedder).run(
        [
            article("Floods force thousands from homes", WIRE, outlet="Wire Service", days_ago=2),
            article("Treasury budget report", LONG, outlet="Finance Daily", days_ago=20),
            article(
                "Central bank raises rates",
                "The central bank raised interest rates by half a point on Wednesday because inflation kept rising. "
                "Economists had expected a smaller move. The bank's governor said further increases were possible.",
                outlet="Finance Daily", days_ago=5, collection="guild:7",
            ),
        ]
    )
    return store


def settings(**overrides):
    values = RetrievalSettings(recency_weight=0.0)
    for key, value in overrides.items():
        setattr(values, key, value)
    return values


def test_hybrid_finds_the_passage_and_modes_differ(store, fake_embedder):
    for mode in RetrievalMode.ALL:
        hits = Retriever(store, fake_embedder, settings(), mode=mode).run("Why did the central bank raise rates?", k=3)
        assert hits[0].article.title == "Central bank raises rates", mode
        if mode == RetrievalMode.DENSE:
            assert hits[0].lexical is None and hits[0].dense is not None
        if mode == RetrievalMode.LEXICAL:
            assert hits[0].dense is None and hits[0].lexical is not None


def test_one_long_article_cannot_fill_every_slot(store, fake_embedder):
    hits = Retriever(store, fake_embedder, settings(max_chunks_per_article=2)).run("treasury budget report spending", k=6)
    titles = [h.article.title for h in hits]
    assert titles.count("Treasury budget report") == 2
    assert len(hits) == 3 or len(set(titles)) > 1


def test_filters_by_date_outlet_and_collection(store, fake_embedder):
    from datetime import datetime, timedelta, timezone

    retriever = Retriever(store, fake_embedder, settings())
    week = SearchFilters(since=datetime.now(timezone.utc) - timedelta(days=7))
    assert {h.article.title for h in retriever.run("budget rates floods", filters=week, k=8)} == {
        "Floods force thousands from homes", "Central bank raises rates"
    }
    only = SearchFilters(outlets=("finance daily",))
    assert {h.article.outlet for h in retriever.run("floods budget rates", filters=only)} == {"Finance Daily"}
    shared = SearchFilters(collections=("shared",))
    assert "Central bank raises rates" not in {h.article.title for h in retriever.run("central bank rates", filters=shared)}
    guild = SearchFilters(collections=("shared", "guild:7"))
    assert retriever.run("central bank rates", filters=guild)[0].article.title == "Central bank raises rates"


def test_extractive_answer_quotes_and_cites_its_sources(store, fake_embedder):
    hits = Retriever(store, fake_embedder, settings()).run("Why did the central bank raise interest rates?")
    answer = ExtractiveAnswerer().run("Why did the central bank raise interest rates?", hits)
    assert answer.found and answer.mode == "extractive"
    assert "because inflation kept rising" in answer.text
    sentences = re.findall(r"(.+?) \[(\d+)\]", answer.text)
    assert sentences
    for sentence, n in sentences:
        citation = answer.citations[int(n) - 1]
        _, text = store.article(citation.article_id)
        assert sentence.strip() in text  # every sentence is the cited article's own words
    assert len(answer.text.split()) <= 60 + 3 * 2


def test_a_bracketed_number_in_the_article_cannot_pose_as_a_citation(new_store, fake_embedder):
    store = new_store(fake_embedder)
    make_ingestor(store, fake_embedder).run([article(
        "Glacier survey published",
        "The glacier lost a fifth of its ice since 1990, the survey found [2]. "
        "Researchers measured the ice from aircraft over three summers [3].",
    )])
    question = "How much ice did the glacier lose?"
    answer = ExtractiveAnswerer().run(question, Retriever(store, fake_embedder, settings()).run(question))
    assert "a fifth of its ice since 1990, the survey found (2)." in answer.text
    assert len(answer.citations) == 1
    assert set(re.findall(r"\[(\d+)\]", answer.text)) == {"1"}  # only the answer's own mark


def test_answers_and_summaries_quote_a_wire_story_without_its_dateline(new_store, fake_embedder):
    store = new_store(fake_embedder)
    text = ("MALE, Maldives (CNN) -- The new president of the Maldives wants to move the islands' people to "
            "higher ground. He was sworn in on Tuesday after the country's first multi-party election.")
    make_ingestor(store, fake_embedder).run([article("Maldives president plans move", text)])
    question = "What does the new president of the Maldives want?"

    answer = ExtractiveAnswerer().run(question, Retriever(store, fake_embedder, settings()).run(question))
    summary = ArticleSummarizer().run(*store.article(store.titles("Maldives")[0][0]))

    for quoted in (answer, summary):
        assert quoted.text.startswith("The new president of the Maldives wants to move"), quoted.text
        assert quoted.citations[0].quote.startswith("The new president")


def test_cited_turns_every_citation_shaped_bracket_of_the_quote_into_parentheses():
    from bot.answer_types import cited

    assert cited("Two studies [1, 2] and a third [3] agree.", 4, 5) == "Two studies (1, 2) and a third (3) agree. [4][5]"


def test_nothing_relevant_says_so(store, fake_embedder):
    question = "What is the score of the cricket match in Melbourne?"
    answer = ExtractiveAnswerer().run(question, Retriever(store, fake_embedder, settings()).run(question))
    assert not answer.found and answer.text == NOT_FOUND and answer.citations == []


def test_summaries_cite_every_sentence(store, fake_embedder):
    meta, text = store.article(store.titles("Floods")[0][0])
    summary = ArticleSummarizer(sentences=2).run(meta, text)
    assert summary.text.count("[1]") == 2 and summary.citations[0].article_id == meta.id
    assert summary.text.startswith("Heavy rains flooded the river valley")
    hits = Retriever(store, fake_embedder, settings()).run("interest rates inflation")
    topic = TopicSummarizer().run("interest rates inflation", hits)
    assert topic.found and "[1]" in topic.text

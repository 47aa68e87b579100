"""Extractive answers that hold together, on real BBC stories: a quote attributed to "he" comes with
the sentence that names him or not at all, another story's sentence comes in only when it adds a
word of the question, and each story's sentences are quoted in the order the story tells them."""

from __future__ import annotations

import json
from datetime import datetime, timezone

import pytest
from conftest import shared_data

from bot.evaluate import answer_sentences
from bot.extractive import ExtractiveAnswerer, leans_on_previous
from index.article import ArticleMeta
from index.retrieve import Hit

QUOTE = '"We are not seeing the numbers that we saw in the second half of 2004, but they are still pretty healthy," he added.'
NAMED = 'Steve Gallagher, US chief economist at SG Corporate & Investment Banking, said January\'s figures were "decent numbers".'
QUESTION = "Are US retail numbers still pretty healthy after the second half of 2004?"


@pytest.fixture(scope="module")
def stories() -> dict[str, dict]:
    with shared_data("bbc/corpus.jsonl").open(encoding="utf-8") as handle:
        rows = (json.loads(line) for line in handle)
        return {row["id"]: row for row in rows if row["id"].startswith("bbc-business-")}


def hit(row: dict, start: int, end: int, *, whole_text: bool = True, score: float = 1.0) -> Hit:
    """A passage of a stored story; with `whole_text`, the answerer also sees the rest of the story."""
    meta = ArticleMeta(id=row["id"], title=row["title"], outlet="BBC News", url=f"https://bbc.test/{row['id']}",
                       published=datetime(2005, 2, 15, tzinfo=timezone.utc), fetched=None, language="en")
    text = row["text"]
    return Hit(chunk_id=start, article=meta, text=text[start:end], start=start, end=end, score=score,
               article_text=text if whole_text else "")


def quoted(answer) -> list[str]:
    return [sentence for sentence, _ in answer_sentences(answer)]


def test_which_sentences_lean_on_the_one_before():
    assert leans_on_previous(QUOTE)
    assert leans_on_previous("He said the talks would resume on Monday.")
    assert leans_on_previous("The company said profits rose 76%.")
    assert not leans_on_previous(NAMED)
    assert not leans_on_previous("US retail sales fell 0.3% in January.")


def test_a_quote_attributed_to_he_comes_with_the_sentence_that_names_him(stories):
    row = stories["bbc-business-063"]
    start = row["text"].index(QUOTE)  # the passage starts at the quote: its predecessor is before it
    answer = ExtractiveAnswerer().run(QUESTION, [hit(row, start, start + 600)])

    sentences = quoted(answer)
    assert QUOTE in sentences
    assert sentences[sentences.index(QUOTE) - 1] == NAMED  # quoted right before it, from the same story
    assert [c.article_id for c in answer.citations] == ["bbc-business-063"]


def test_a_quote_whose_antecedent_is_out_of_reach_is_not_quoted(stories):
    row = stories["bbc-business-063"]
    start = row["text"].index(QUOTE)
    answer = ExtractiveAnswerer().run(QUESTION, [hit(row, start, start + 600, whole_text=False)])

    assert QUOTE not in quoted(answer)


def test_another_storys_sentence_comes_in_only_when_it_adds_to_the_answer(stories):
    # December's story has "US retail sales" too, and nothing of the question that January's lacks.
    january, december = stories["bbc-business-063"], stories["bbc-business-450"]
    question = "Did US retail sales fall?"
    answer = ExtractiveAnswerer().run(question, [hit(january, 0, 400), hit(december, 0, 400, score=0.9)])

    assert [c.article_id for c in answer.citations] == ["bbc-business-063"]
    assert quoted(answer)[0].startswith("US retail sales fell 0.3% in January")


def test_a_storys_sentences_are_quoted_in_the_order_it_tells_them(stories):
    row = stories["bbc-business-063"]
    answer = ExtractiveAnswerer().run("What did Steve Gallagher say about the retail sales figures?", [hit(row, 0, 900)])

    sentences = quoted(answer)
    assert len(sentences) >= 2
    positions = [row["text"].index(sentence) for sentence in sentences]
    assert positions == sorted(positions)


def test_a_quote_and_its_antecedent_keep_to_the_sentence_and_word_budgets(stories):
    row = stories["bbc-business-063"]
    start = row["text"].index(QUOTE)
    passage = [hit(row, start, start + 600)]
    one = quoted(ExtractiveAnswerer(max_sentences=1).run(QUESTION, passage))
    assert len(one) == 1 and not leans_on_previous(one[0])
    short = quoted(ExtractiveAnswerer(max_words=30).run(QUESTION, passage))
    assert QUOTE not in short  # with the sentence that names him it would take 47 words
    assert sum(len(s.split()) for s in short) <= 30 or len(short) == 1

"""Whether the retrieved passages answer a question at all, before anyone writes an answer.

A search always returns its best passages, even for a question the indexed news says nothing
about; quoting them then answers "What show is Jon Hamm in?" with a school-district coach. This
step weighs what the retrieval found and says how likely it is that the question's own story is
among the passages. Below `[answer] abstain_below` the answer says that the news does not say,
and offers the closest stories as links.

The signals carry meaning, not the share of question words alone:
- `dense`: the best passage's cosine similarity to the question;
- `lexical`: the best passage's BM25 score per question word (BM25 weighs rare words, names and
  numbers, by their rarity in the whole index);
- `agreement`: whether the dense and the BM25 rankings put the same article first;
- `coverage`: the share of the question's words that one of the top three articles holds
  somewhere;
- `names`: the same share for the question's names and numbers alone (words capitalised past its
  first word, anything with a digit): "the 2018 World Cup" is not answered by a story of 2006. A
  question typed all in lower case has no names to go by: it takes the `coverage` value.

A follow-up in a thread is searched with the question it follows, and its scores are of both; so
that a new question asked in a thread ("What is the capital of Mongolia?" after one on the dollar)
is not answered on the old question's words, at least half of the follow-up's own topic words, and
of its own names and numbers, must be found in one of the top articles (`FOLLOW_UP_COVERAGE`).

Words that only say the question is about the news ("what happened this week?", "the latest on…")
count for nothing here; a question left with no other word is a broad one, which the latest stories
answer, and is never refused.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from bot.extractive import content_stems, stem
from index.retrieve import Hit, query_terms

# Articles whose text is checked for the question's words: beyond the third, a match is as likely
# to be another story that shares a few words.
COVERAGE_ARTICLES = 3
_WORD = re.compile(r"\w+", re.UNICODE)  # as index.retrieve.query_terms splits a question
# The share of a follow-up's own topic words, and of its names and numbers, that one of the top
# articles must hold. Chosen on newsqa dev's abstention split, each question asked as the follow-up
# of a question about an indexed story: 140 follow-ups about the same story, 226 about a story not
# indexed. Answered without the rule: .914 and .500. Topic words alone at 0.3: .914 / .336; at 0.5:
# .879 / .248; past 0.5: .771 / .150 (a two-word follow-up then needs both). With the names too, at
# 0.5: .857 / .204, and the same answer recall on the first group as topic words alone (.521; .543
# without the rule): the follow-ups it refuses more were not answered right.
FOLLOW_UP_COVERAGE = 0.5
# Words that say a question is about the news, and what period the time filter already took.
NEWS_WORDS = frozenset(stem(w) for w in """happen happened happening happens going news latest new update updates
    story stories headline headlines today tonight yesterday week weekend month year morning evening past last recent
    recently""".split())


@dataclass(frozen=True)
class Evidence:
    """What retrieval found for a question, each signal on the scale its docstring gives."""

    dense: float  # best cosine similarity, -1..1 (0 when no passage has one)
    lexical: float  # best BM25 score divided by the question's word count (0 when none)
    agreement: float  # 1.0 when dense and BM25 rank the same article first, else 0.0
    coverage: float  # 0..1, share of the question's words found in one of the top articles
    names: float  # 0..1, the same for its names and numbers (1.0 when it has none, `coverage` in lower case)
    # 0..1, for a follow-up: the lower of the same share for its own topic words and `names` (1.0 for
    # a question asked alone, or a follow-up with no topic words: "Why?"). A gate, not a signal.
    follow_up: float = 1.0

    def as_row(self) -> tuple[float, ...]:
        return (self.dense, self.lexical, self.agreement, self.coverage, self.names)

    @staticmethod
    def of(question: str, hits: Sequence[Hit], *, searched: str | None = None) -> Evidence:
        """`searched`: the question as it was searched (a follow-up with the question it follows),
        which the scores and the coverage are of; the names are the new question's own."""
        names = names_and_numbers(question)
        own = topic_terms(question) if searched and searched != question else set()
        question = searched or question
        terms = topic_terms(question)
        if not hits or not terms:
            return Evidence(0.0, 0.0, 0.0, 0.0, 0.0)
        by_dense = [h for h in hits if h.dense is not None]
        by_lexical = [h for h in hits if h.lexical is not None]
        best_dense = max(by_dense, key=lambda h: h.dense, default=None)
        best_lexical = max(by_lexical, key=lambda h: h.lexical, default=None)
        agreement = float(best_dense is not None and best_lexical is not None
                          and best_dense.article.id == best_lexical.article.id)
        texts: dict[str, str] = {}
        for hit in hits:
            if hit.article.id not in texts:
                if len(texts) == COVERAGE_ARTICLES:
                    break
                texts[hit.article.id] = hit.article_text or hit.text
        found = [content_stems(text) for text in texts.values()]
        coverage = max(len(terms & words) / len(terms) for words in found)
        own_found = max(len(own & words) / len(own) for words in found) if own else 1.0
        names &= terms
        if names:
            names_found = max(len(names & words) / len(names) for words in found)
        else:
            names_found = coverage if question[1:] == question[1:].lower() else 1.0
        return Evidence(
            dense=best_dense.dense if best_dense else 0.0,
            # The BM25 score is of every word searched, so it is shared among all of them.
            lexical=best_lexical.lexical / len(query_terms(question)) if best_lexical else 0.0,
            agreement=agreement, coverage=coverage, names=names_found,
            follow_up=min(own_found, names_found) if own else 1.0,
        )


def topic_terms(question: str) -> set[str]:
    """The stems of what a question asks about: its content words but those that only say "news"."""
    return {stem(t) for t in query_terms(question)} - NEWS_WORDS


def names_and_numbers(question: str) -> set[str]:
    """Stems of the words a question rests on: those capitalised past its first word, and numbers."""
    words = _WORD.findall(question)
    return {stem(w) for i, w in enumerate(words) if any(c.isdigit() for c in w) or (i > 0 and w[0].isupper())}


@dataclass(frozen=True)
class Verdict:
    confidence: float  # 0..1: how likely the passages hold the question's own story
    answerable: bool
    evidence: Evidence


class AnswerabilityCheck:
    """A logistic model over the evidence, fitted on newsqa dev with half of the stories indexed
    (`newsdesk eval qa --abstention` refits it and prints these weights)."""

    WEIGHTS = (4.5, 0.2, 1.35, 2.65, 0.65)  # dense, lexical, agreement, coverage, names
    BIAS = -5.6

    def __init__(self, *, abstain_below: float) -> None:
        if not 0.0 <= abstain_below < 1.0:
            raise ValueError("abstain_below must be in [0, 1): the confidence below which the answer abstains")
        self.abstain_below = abstain_below

    def run(self, question: str, hits: Sequence[Hit], *, searched: str | None = None) -> Verdict:
        """`searched`: the question as it was searched, when that was more (a follow-up)."""
        evidence = Evidence.of(question, hits, searched=searched)
        words = searched or question
        if hits and query_terms(words) and not topic_terms(words):  # a broad question ("what happened today?")
            return Verdict(1.0, True, evidence)
        confidence = self.confidence(evidence)
        answerable = bool(hits) and confidence >= self.abstain_below and evidence.follow_up >= FOLLOW_UP_COVERAGE
        return Verdict(confidence, answerable, evidence)

    @classmethod
    def confidence(cls, evidence: Evidence) -> float:
        z = cls.BIAS + sum(w * x for w, x in zip(cls.WEIGHTS, evidence.as_row()))
        return 1.0 / (1.0 + math.exp(-z))

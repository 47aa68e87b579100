"""Cited summaries: of one article, of what the news says on a topic, and of a period (a digest).

All three are extractive, so each sentence is quoted from the article it cites.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass

import numpy as np

from bot.answer_types import Answer, cited
from bot.extractive import (
    NOT_FOUND, CitationBook, Sentence, candidate_sentences, content_stems, sentence_overlap, stem,
)
from index.article import ArticleMeta
from index.retrieve import Hit, query_terms
from index.sentences import dateline_end, sentence_spans


def article_sentences(meta: ArticleMeta, text: str, *, min_words: int = 6) -> list[Sentence]:
    """The article's sentences, the first without its dateline."""
    spans = [(dateline_end(text) if a == 0 else a, b) for a, b in sentence_spans(text)]
    return [
        Sentence(meta, text[a:b], a, b, rank=i) for i, (a, b) in enumerate(spans) if len(text[a:b].split()) >= min_words
    ]


class ArticleSummarizer:
    """Lead-biased centrality: news puts the gist first, and the gist is what the rest repeats."""

    def __init__(self, *, sentences: int = 3, max_words: int = 75, lead_weight: float = 1.0) -> None:
        if sentences < 1:
            raise ValueError("a summary needs at least one sentence")
        self.sentences, self.max_words, self.lead_weight = sentences, max_words, lead_weight

    def run(self, meta: ArticleMeta, text: str) -> Answer:
        # A feed item's short description may have no sentence of six words: quote what there is.
        candidates = article_sentences(meta, text) or article_sentences(meta, text, min_words=1)
        if not candidates:
            return Answer(text=NOT_FOUND, mode="extractive", citations=[], found=False)
        picked = self.pick(candidates)
        book = CitationBook()
        number = book.cite(meta, picked[0].text)
        return Answer(text=" ".join(cited(s.text, number) for s in picked), mode="extractive", citations=book.citations)

    def pick(self, candidates: list[Sentence]) -> list[Sentence]:
        stems = [Counter(content_stems(s.text)) for s in candidates]
        centroid = Counter()
        for counts in stems:
            centroid.update(counts)
        scores = []
        for i, counts in enumerate(stems):
            centrality = _cosine(counts, centroid - counts)
            position = 1.0 / math.sqrt(1 + i)
            scores.append(centrality + self.lead_weight * position)
        order = sorted(range(len(candidates)), key=lambda i: scores[i], reverse=True)
        chosen: list[int] = []
        words = 0
        for i in order:
            n = len(candidates[i].text.split())
            if chosen and words + n > self.max_words:
                continue
            if any(sentence_overlap(candidates[i].text, candidates[j].text) > 0.6 for j in chosen):
                continue
            chosen.append(i)
            words += n
            if len(chosen) == self.sentences:
                break
        return [candidates[i] for i in sorted(chosen)]


class TopicSummarizer:
    """What the retrieved passages say about a topic: relevant, non-repeating sentences across articles."""

    def __init__(self, *, sentences: int = 5, max_words: int = 140) -> None:
        self.sentences, self.max_words = sentences, max_words

    def run(self, topic: str, hits: list[Hit]) -> Answer:
        terms = {stem(t) for t in query_terms(topic)}
        candidates = candidate_sentences(hits, min_words=6)
        scored = []
        for sentence in candidates:
            stems = content_stems(sentence.text)
            relevance = len(terms & stems) / max(1, len(terms))
            scored.append((relevance + 0.5 / (2 + sentence.rank), relevance, sentence))
        scored.sort(key=lambda item: item[0], reverse=True)
        if not scored or scored[0][1] == 0:
            return Answer(text=NOT_FOUND, mode="extractive", citations=[], found=False)
        picked: list[Sentence] = []
        per_article: Counter = Counter()
        words = 0
        for _, relevance, sentence in scored:
            n = len(sentence.text.split())
            if relevance == 0 or (picked and words + n > self.max_words) or per_article[sentence.article.id] >= 2:
                continue
            if any(sentence_overlap(sentence.text, p.text) > 0.5 for p in picked):
                continue
            picked.append(sentence)
            per_article[sentence.article.id] += 1
            words += n
            if len(picked) == self.sentences:
                break
        book = CitationBook()
        lines = [cited(s.text, book.cite(s.article, s.text)) for s in picked]
        return Answer(text=" ".join(lines), mode="extractive", citations=book.citations)


@dataclass
class Story:
    """Articles about the same event: the freshest one leads."""

    articles: list[tuple[ArticleMeta, str]]
    centroid: np.ndarray


# Two articles whose opening passages' embeddings are this close tell the same story.
SAME_STORY = 0.6


class DigestWriter:
    """Groups a period's articles into stories by vector similarity and writes one cited line each."""

    def __init__(self, *, stories: int = 8, same_story: float = SAME_STORY) -> None:
        if stories < 1:
            raise ValueError("a digest needs at least one story")
        self.stories, self.same_story = stories, same_story

    def run(self, articles: list[tuple[ArticleMeta, str]], vectors: np.ndarray, *, period: str) -> Answer:
        if not articles:
            return Answer(text=f"No news was indexed {period}.", mode="extractive", citations=[], found=False)
        stories: list[Story] = []
        for (meta, text), vector in zip(articles, vectors):
            best = max(stories, key=lambda s: float(s.centroid @ vector), default=None)
            if best is not None and float(best.centroid @ vector) >= self.same_story:
                best.articles.append((meta, text))
                centroid = best.centroid * (len(best.articles) - 1) + vector
                best.centroid = centroid / (np.linalg.norm(centroid) or 1.0)
            else:
                stories.append(Story([(meta, text)], vector.copy()))
        # Stories many outlets carry come first; ties go to the freshest.
        stories.sort(key=lambda s: (len(s.articles), s.articles[0][0].sort_time or 0), reverse=True)
        book = CitationBook()
        lines = []
        for story in stories[: self.stories]:
            lead_meta, lead_text = story.articles[0]
            lead = _lead_sentence(lead_text)
            numbers = [book.cite(lead_meta, lead or lead_meta.title)]
            for meta, text in story.articles[1:4]:
                numbers.append(book.cite(meta, _lead_sentence(text) or meta.title))
            # Plain text: the answer's text is escaped wherever it is shown, so markup would show as symbols.
            lines.append(cited(f"{lead_meta.title}: {lead}" if lead else lead_meta.title, *numbers))
        header = f"{_plural(len(articles), 'article')} {period}, {_plural(len(stories), 'story', 'stories')}:"
        return Answer(text=header + "\n" + "\n".join(f"• {line}" for line in lines), mode="extractive",
                      citations=book.citations)


def _plural(n: int, one: str, many: str | None = None) -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _lead_sentence(text: str) -> str | None:
    for a, b in sentence_spans(text):
        if len(text[a:b].split()) >= 8:
            return text[a:b]
    return None


def _cosine(a: Counter, b: Counter) -> float:
    dot = sum(v * b.get(k, 0) for k, v in a.items())
    if not dot:
        return 0.0
    return dot / (math.sqrt(sum(v * v for v in a.values())) * math.sqrt(sum(v * v for v in b.values())))

"""The offline answerer: picks the sentences that answer the question and cites each one.

Nothing is generated, so nothing can be invented: every sentence of the answer is a sentence of
the article its `[n]` points to.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from bot.answer_types import Answer, Citation, cited
from index.article import ArticleMeta
from index.retrieve import STOPWORDS, Hit, query_terms
from index.sentences import dateline_end, sentence_spans

NOT_FOUND = "I couldn't find anything about that in the indexed news."
_WORD = re.compile(r"\w+", re.UNICODE)
_SUFFIXES = ("ing", "edly", "ed", "ies", "es", "s", "ly")


def stem(word: str) -> str:
    """A light suffix stripper: enough to match 'suspended' with 'suspend', cheap enough for every query."""
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    for suffix in _SUFFIXES:
        if len(word) - len(suffix) >= 4 and word.endswith(suffix):
            return word[: -len(suffix)] + ("y" if suffix == "ies" else "")
    return word


# What an answer to each kind of question tends to contain. A sentence that restates the question
# without this ("NATO suspended training") answers it less well than one that has it ("... after").
_ANSWER_CUES = {
    "why": re.compile(r"\b(because|after|following|due to|amid|in response|as a result|since|so that|to prevent|"
                      r"over|reason|caused|for fear)\b", re.IGNORECASE),
    "when": re.compile(r"\b(\d{4}|monday|tuesday|wednesday|thursday|friday|saturday|sunday|january|february|march|"
                       r"april|may|june|july|august|september|october|november|december|yesterday|today|last|ago|"
                       r"morning|evening|night)\b", re.IGNORECASE),
    "how many": re.compile(r"\d|\b(one|two|three|four|five|six|seven|eight|nine|ten|dozen|hundred|thousand|million|"
                           r"billion)s?\b", re.IGNORECASE),
    "how much": re.compile(r"\d|[$£€%]|\b(million|billion|percent)\b", re.IGNORECASE),
    "who": re.compile(r"(?<!^)(?<![.!?] )\b[A-Z][a-z]+ [A-Z][a-z]+"),
    "where": re.compile(r"\b(in|at|near|from) [A-Z]"),
}


def answer_cue(question: str) -> re.Pattern | None:
    q = question.lower()
    for kind in ("how many", "how much", "why", "when", "who", "where"):
        if re.search(rf"\b{kind}\b", q):
            return _ANSWER_CUES[kind]
    return None


def content_stems(text: str) -> set[str]:
    """The stems of a text's content words; numbers count, as they do in `query_terms`."""
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in STOPWORDS and (len(w) > 1 or w.isdigit())}


@dataclass(frozen=True)
class Sentence:
    """A candidate sentence: where it is, and how it ranked in retrieval."""

    article: ArticleMeta
    text: str
    start: int
    end: int
    rank: int  # rank of the passage it came from, 0 = best
    previous: Sentence | None = None  # the article's sentence before it, for one that leans on it


# A sentence that starts with a pronoun or "the company", or quotes someone named only by a pronoun,
# means little without the sentence before it ("'It will happen,' he said.").
_LEANING_START = re.compile(
    r"^[\"“‘']?(he|she|they|it|this|that|these|those|his|her|their|its|such|the (company|firm|group|move|deal|plan|"
    r"decision|bank|government|report|official|spokesman|spokeswoman|minister|club|team|player))\b",
    re.IGNORECASE,
)
_PRONOUN_ATTRIBUTION = re.compile(
    r"[,\"”’]\s*(he|she|they|it) (said|says|added|adds|told|noted|explained|argued|warned|insisted)\b[^.!?]*[.!?]?[\"”’]?$",
    re.IGNORECASE,
)


def leans_on_previous(text: str) -> bool:
    """Whether a sentence needs its antecedent: "He said…", "The company…", "…, she added."."""
    return bool(_LEANING_START.match(text) or _PRONOUN_ATTRIBUTION.search(text))


def candidate_sentences(hits: Iterable[Hit], *, min_words: int = 4) -> list[Sentence]:
    """The sentences of the retrieved passages, each once, in retrieval order."""
    seen: set[tuple[str, int]] = set()
    out: list[Sentence] = []
    for rank, hit in enumerate(hits):
        source = hit.article_text or hit.text
        offset = 0 if hit.article_text else hit.start
        chunk_start = hit.start - offset
        window = max(0, chunk_start - _LOOK_BACK)
        before = sentence_spans(source, window, chunk_start)
        whole = before[1:] if window > 0 else before  # past the text's start, the window's first span may be cut
        previous = _sentence(hit, source, offset, *whole[-1], rank) if whole else None
        for a, b in sentence_spans(source, chunk_start, hit.end - offset):
            sentence = _sentence(hit, source, offset, a, b, rank, previous)
            previous = sentence
            key = (hit.article.id, sentence.start)
            if key in seen or len(sentence.text.split()) < min_words:
                continue
            seen.add(key)
            out.append(sentence)
    return out


_LOOK_BACK = 600  # characters searched before a passage for its first sentence's predecessor


def _sentence(hit: Hit, source: str, offset: int, a: int, b: int, rank: int, previous: Sentence | None = None) -> Sentence:
    if a + offset == 0:
        a = dateline_end(source)  # the citation names the outlet; the answer needs no "(CNN) --"
    a, b = _balance_quotes(source, a, b)
    return Sentence(hit.article, source[a:b], a + offset, b + offset, rank, previous)


def _balance_quotes(text: str, a: int, b: int) -> tuple[int, int]:
    """Drop the unmatched quotation mark of a sentence split off a longer quote."""
    if text.count('"', a, b) % 2 == 1:
        if text[b - 1] == '"':
            b -= 1
        elif text[a] == '"':
            a += 1
    return a, b


class CitationBook:
    """Numbers sources in order of first use, so `[1]` is the first article the answer cites."""

    def __init__(self) -> None:
        self._numbers: dict[str, int] = {}
        self.citations: list[Citation] = []

    def cite(self, article: ArticleMeta, quote: str) -> int:
        number = self._numbers.get(article.id)
        if number is None:
            number = self._numbers[article.id] = len(self.citations) + 1
            self.citations.append(
                Citation(
                    n=number, article_id=article.id, title=article.title, outlet=article.outlet, url=article.url,
                    published=article.published, quote=quote, also_reported_by=article.also_reported_by,
                )
            )
        return number


class ExtractiveAnswerer:
    """Scores candidate sentences by the question's weighted words, the passage's rank and news position.

    The weights were fitted on newsqa dev (a logistic regression over these features, rounded):
    coverage of the question's rarer words matters most, then the rank of the passage the sentence
    came from; an answer-type cue the question itself lacks ("who" and a name that isn't in the
    question) and a place near the top of the story add a little.
    """

    COVERAGE, RANK, CUE, LEDE, DEPTH = 1.0, 1.6, 0.25, 0.15, 0.15
    # A sentence past the first must share at least this much of the question: a sentence with
    # nothing of it (an article's "ignore previous instructions") is filler, however well placed.
    FILLER_COVERAGE = 0.1

    def __init__(self, *, max_sentences: int = 3, max_words: int = 60, min_coverage: float = 0.3) -> None:
        if max_sentences < 1 or max_words < 10:
            raise ValueError("an answer needs at least one sentence and ten words")
        self.max_sentences, self.max_words, self.min_coverage = max_sentences, max_words, min_coverage

    def run(self, question: str, hits: list[Hit]) -> Answer:
        terms = {stem(t) for t in query_terms(question)}
        sentences = candidate_sentences(hits)
        if not terms or not sentences:
            return Answer(text=NOT_FOUND, mode="extractive", citations=[], found=False)
        scored = self._score(question, terms, sentences)
        best_coverage = max(c for _, c, _ in scored)
        if best_coverage < self.min_coverage:
            return Answer(text=NOT_FOUND, mode="extractive", citations=[], found=False)
        picked = self._pick(terms, scored)
        if not picked:
            return Answer(text=NOT_FOUND, mode="extractive", citations=[], found=False)
        book = CitationBook()
        parts = [cited(s.text, book.cite(s.article, s.text)) for s in _in_story_order(picked)]
        return Answer(text=" ".join(parts), mode="extractive", citations=book.citations)

    def _pick(self, terms: set[str], scored: list[tuple[float, float, Sentence]]) -> list[Sentence]:
        """The best sentences within the word budget. A sentence that leans on the one before it
        comes with it, or not at all; another article's sentence comes in only when it has a word of
        the question that the answer lacks (newsqa dev: the answer's sentences from the question's
        own story .66 to .75, answer recall .544 to .527)."""
        picked: list[Sentence] = []
        covered: set[str] = set()
        words = 0
        for _, coverage, sentence in scored:
            unit = [sentence]
            if leans_on_previous(sentence.text):
                lead = sentence.previous
                if lead is None or leans_on_previous(lead.text):
                    continue
                unit = [lead, sentence]
            unit = [s for s in unit if all((s.article.id, s.start) != (p.article.id, p.start) for p in picked)]
            n = sum(len(s.text.split()) for s in unit)
            if len(picked) + len(unit) > self.max_sentences:
                continue
            # One long sentence may answer alone; a pair, or anything more, keeps to the budget.
            if (picked or len(unit) > 1) and words + n > self.max_words:
                continue
            if picked:
                if coverage < self.FILLER_COVERAGE:
                    continue
                if sentence.article.id != picked[0].article.id and not (content_stems(sentence.text) & terms) - covered:
                    continue  # another story's sentence that adds nothing the answer lacks
            if any(sentence_overlap(s.text, p.text) > 0.6 for s in unit for p in picked):
                continue  # near-repeat of a picked sentence, e.g. the lede restated
            picked += unit
            words += n
            covered |= terms & set().union(*(content_stems(s.text) for s in unit))
            # Filling the budget finds the answer more often than stopping once the question's words
            # and its answer type are all in (newsqa dev: answer recall .527 against .506).
            if len(picked) >= self.max_sentences or words >= self.max_words:
                break
        return picked

    def _score(self, question: str, terms: set[str], sentences: list[Sentence]) -> list[tuple[float, float, Sentence]]:
        """(score, coverage, sentence), best first."""
        stems = [content_stems(s.text) for s in sentences]
        # Rarer words among the candidates carry more of the question's meaning.
        idf = {t: math.log(1 + len(sentences) / (1 + sum(t in st for st in stems))) for t in terms}
        total = sum(idf.values())
        coverages = [sum(w for t, w in idf.items() if t in st) / total for st in stems]
        best = max(coverages) or 1.0
        cue = answer_cue(question)
        scored = []
        for sentence, coverage in zip(sentences, coverages):
            score = (self.COVERAGE * coverage / best + self.RANK / (2 + sentence.rank)
                     + self.CUE * _new_cue(cue, sentence.text, terms)
                     + self.LEDE * (sentence.start < _LEDE_CHARS)
                     - self.DEPTH * math.log1p(sentence.start / 200))
            scored.append((score, coverage, sentence))
        scored.sort(key=lambda item: item[0], reverse=True)
        return scored


_LEDE_CHARS = 250  # a story's first sentence or two


def _in_story_order(picked: list[Sentence]) -> list[Sentence]:
    """Articles in the order the answer first quotes them; each one's sentences as the story runs."""
    first = {}
    for sentence in picked:
        first.setdefault(sentence.article.id, len(first))
    return sorted(picked, key=lambda s: (first[s.article.id], s.start))


def _new_cue(cue: re.Pattern | None, text: str, asked: set[str]) -> bool:
    """Whether the sentence has what the question asks for, beyond the question's own words."""
    if cue is None:
        return False
    return any(not (found := content_stems(m.group(0))) or not found <= asked for m in cue.finditer(text))


def sentence_overlap(a: str, b: str) -> float:
    """Share of the shorter sentence's content words that the other one has too."""
    sa, sb = content_stems(a), content_stems(b)
    return len(sa & sb) / max(1, min(len(sa), len(sb)))

"""The citation check: every claim a language model writes must be backed by the passage it cites.

The answer is split into sentences (claims). Each `[n]` is checked against source n: enough of the
claim's content words must occur in the passage (lexical support), every number in the claim must
occur there whole ("3" is not "30", "6.9" is not "69"), the claim must be close in meaning to some
sentence of the passage (embedding support), and it must not negate that sentence: "X did not win"
shares nearly every word with "X won", so overlap alone cannot tell them apart. Citations to sources
that do not exist are removed; claims no cited source supports are dropped. The kept claims are
renumbered to the articles they rest on, in order of first use.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from bot.answer_types import Citation
from bot.config import LLMSettings
from bot.extractive import CitationBook, content_stems
from index.article import ArticleMeta
from index.embed import Embedder
from index.retrieve import Hit
from index.sentences import sentence_spans, split_sentences

# "[1]", "[1, 2]", "[ 3 ]"; "[1][2]" is two groups.
_MARKERS = re.compile(r"\[\s*(\d+(?:\s*,\s*\d+)*)\s*\]")
_LEADING_MARKERS = re.compile(r"^(?:\s*\[\s*\d+(?:\s*,\s*\d+)*\s*\])+")
_WORD = re.compile(r"\w+")
# A number whole: "3.5" is not "3" and "5", and "3,000" is "3000".
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_THOUSANDS = re.compile(r",(?=\d{3}(?!\d))")
_END_PUNCT = re.compile(r"[.!?…]*$")
_SPACE_BEFORE_PUNCT = re.compile(r"\s+([.!?,;:])")
_SPACE = re.compile(r"\s+")
# Words that turn a clause around. "not only" affirms, and "neither … nor" is one negation, not two.
_NEGATION = re.compile(
    r"\b(?:not(?!\s+only\b)|no|never|none|nobody|nothing|nor|cannot|den(?:y|ies|ied|ying))\b"
    r"|n['’]t\b|\bneither\b(?!.*\bnor\b)",
    re.IGNORECASE,
)
# Where one clause of a sentence ends and another, which may be negated on its own, begins.
_CLAUSE_BREAK = re.compile(r"[,;:()—–]|\s-\s|\b(?:but|although|though|while|whereas|however)\b", re.IGNORECASE)


@dataclass
class _Claim:
    text: str  # without citation markers
    gap: str  # what separated it from the previous claim
    cited: list[int] = field(default_factory=list)  # 0-based source indexes, in order, no repeats


@dataclass(frozen=True)
class _Support:
    article: ArticleMeta
    quote: str  # the passage's sentence closest to the claim
    similarity: float


@dataclass(frozen=True)
class CheckedAnswer:
    """The answer with unsupported claims dropped and citations renumbered, and what was found."""

    text: str
    citations: list[Citation]
    supported: int
    unsupported: int
    removed_citations: int  # markers that named no source


class CitationChecker:
    """Checks a model's answer against the sources it was given (source [n] is `sources[n - 1]`)."""

    def __init__(self, settings: LLMSettings, embedder: Embedder) -> None:
        if not 0 < settings.min_claim_overlap <= 1:
            raise ValueError("llm.min_claim_overlap must be in (0, 1]")
        if not -1 <= settings.min_claim_similarity <= 1:
            raise ValueError("llm.min_claim_similarity must be in [-1, 1]")
        self._min_overlap = settings.min_claim_overlap
        self._min_similarity = settings.min_claim_similarity
        self._embedder = embedder

    def run(self, text: str, sources: Sequence[Hit]) -> CheckedAnswer:
        claims, removed = _parse(text, len(sources))
        supports = self._supports(claims, sources)
        # Each article is quoted by the sentence that supports a claim best.
        best: dict[str, _Support] = {}
        for support in (s for found in supports for s in found):
            current = best.get(support.article.id)
            if current is None or support.similarity > current.similarity:
                best[support.article.id] = support
        book = CitationBook()
        parts: list[str] = []
        for claim, found in zip(claims, supports):
            if found:
                marks = sorted({book.cite(s.article, best[s.article.id].quote) for s in found})
                parts.append((claim.gap if parts else "") + _with_markers(claim.text, marks))
        supported = sum(1 for found in supports if found)
        return CheckedAnswer("".join(parts), book.citations, supported, len(claims) - supported, removed)

    def _supports(self, claims: list[_Claim], sources: Sequence[Hit]) -> list[list[_Support]]:
        """For each claim, the cited sources that support it (empty: unsupported)."""
        checked = [k for k, claim in enumerate(claims) if claim.cited]
        if not checked:
            return [[] for _ in claims]
        cited = sorted({i for claim in claims for i in claim.cited})
        sentences = {i: split_sentences(sources[i].text) or [sources[i].text] for i in cited}
        # One batch for every claim and every sentence of the cited passages.
        vectors = self._embedder.encode([claims[k].text for k in checked] + [s for i in cited for s in sentences[i]])
        claim_vectors = {k: vectors[row] for row, k in enumerate(checked)}
        sentence_vectors: dict[int, np.ndarray] = {}
        row = len(checked)
        for i in cited:
            sentence_vectors[i] = vectors[row : row + len(sentences[i])]
            row += len(sentences[i])
        terms = {i: content_stems(sources[i].text) for i in cited}
        passage_numbers = {i: _numbers(sources[i].text) for i in cited}
        out: list[list[_Support]] = []
        for k, claim in enumerate(claims):
            found = []
            claim_terms, claim_numbers = content_stems(claim.text), _numbers(claim.text)
            for i in claim.cited:
                if not claim_numbers <= passage_numbers[i] or not self._lexical(claim_terms, terms[i]):
                    continue
                scores = sentence_vectors[i] @ claim_vectors[k]
                best = int(np.argmax(scores))
                if scores[best] >= self._min_similarity and not _contradicts(claim.text, sentences[i][best]):
                    found.append(_Support(sources[i].article, sentences[i][best], float(scores[best])))
            out.append(found)
        return out

    def _lexical(self, claim: set[str], passage: set[str]) -> bool:
        return bool(claim) and len(claim & passage) / len(claim) >= self._min_overlap


def _numbers(text: str) -> set[str]:
    return {_THOUSANDS.sub("", m.group(0)) for m in _NUMBER.finditer(text)}


def _contradicts(claim: str, sentence: str) -> bool:
    """Whether the claim negates the sentence it rests on.

    Each clause of the claim is set against the clause(s) of the sentence that share the most content
    words with it; a clause is negated when it holds an odd number of negation words. One negated and
    the other not ("did not win" / "won", "was hurt" / "no one was hurt") is a contradiction; both
    negated agree. Clauses keep a negation where it belongs: "it did not withdraw its troops" in the
    sentence says nothing against a claim about its training mission.
    """
    clauses = [(content_stems(part), _negated(part)) for part in _CLAUSE_BREAK.split(sentence)]
    for part in _CLAUSE_BREAK.split(claim):
        terms = content_stems(part)
        shared = [len(terms & other) for other, _ in clauses]
        most = max(shared)
        # Clauses tied for the most shared words must all agree: the claim may not pick the side it likes.
        if most and any(negated != _negated(part) for (_, negated), n in zip(clauses, shared) if n == most):
            return True
    return False


def _negated(clause: str) -> bool:
    return len(_NEGATION.findall(clause)) % 2 == 1


def _parse(text: str, n_sources: int) -> tuple[list[_Claim], int]:
    """Claims with the valid sources they cite, and how many citation numbers were out of range."""
    claims: list[_Claim] = []
    removed = 0
    previous_end = 0
    for start, end in sentence_spans(text):
        sentence = text[start:end]
        gap = text[previous_end:start]
        previous_end = end
        # "It rained. [1]" splits after the full stop: leading markers belong to the claim before.
        leading = _LEADING_MARKERS.match(sentence)
        if leading and claims:
            removed += _cite(claims[-1], leading.group(), n_sources)
            sentence = sentence[leading.end() :]
        body = _SPACE.sub(" ", _MARKERS.sub("", sentence)).strip()
        body = _SPACE_BEFORE_PUNCT.sub(r"\1", body)
        claim = _Claim(body, "\n" * gap.count("\n") or " ")
        removed += _cite(claim, sentence, n_sources)
        if _WORD.search(body):
            claims.append(claim)
    return claims, removed


def _cite(claim: _Claim, text: str, n_sources: int) -> int:
    """Adds the valid numbers in text's markers to the claim; returns how many were invalid."""
    invalid = 0
    for group in _MARKERS.findall(text):
        for number in (int(x) for x in group.split(",")):
            if not 1 <= number <= n_sources:
                invalid += 1
            elif number - 1 not in claim.cited:
                claim.cited.append(number - 1)
    return invalid


def _with_markers(claim: str, numbers: list[int]) -> str:
    """'It rained.' + [1, 2] -> 'It rained [1][2].'"""
    end = _END_PUNCT.search(claim).start()
    return f"{claim[:end]} {''.join(f'[{n}]' for n in numbers)}{claim[end:]}"


"""`newsdesk eval`: answer and summary quality on labelled data, against baselines in the same run."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import statistics
import string
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bot.answer_types import Answer
from bot.config import Config
from index.article import Article, normalize_text
from index.embed import Embedder
from index.retrieve import RetrievalMode
from index.sentences import split_sentences
from index.sources.common import build_article

_CITATION = re.compile(r"\s*\[(\d+)\]")


_NO_PUNCTUATION = str.maketrans("", "", string.punctuation)


def squad_normalize(text: str) -> str:
    """SQuAD's answer normalization: lower case, no punctuation, no articles, single spaces."""
    text = text.lower().translate(_NO_PUNCTUATION)
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


def contains_answer(text: str, answers: list[str]) -> bool:
    haystack = f" {squad_normalize(text)} "
    needles = (squad_normalize(a) for a in answers)
    return any(f" {needle} " in haystack for needle in needles if needle)


def answer_sentences(answer: Answer) -> list[tuple[str, list[int]]]:
    """(sentence, cited numbers) for each cited sentence of an answer's text."""
    out = []
    for part in re.split(r"(?<=\])\s+", answer.text):
        numbers = [int(n) for n in _CITATION.findall(part)]
        out.append((_CITATION.sub("", part).strip(), numbers))
    return out


def percentile(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


def read_jsonl(path: str | Path) -> Iterator[dict]:
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"{path}:{number}: not JSON ({exc.msg})") from None


@dataclass
class QAScores:
    n: int
    hit_at_1: float
    hit_at_5: float
    hit_at_10: float
    answer_recall: float
    citation_precision: float
    answer_words: float
    p50_ms: float
    p95_ms: float
    answered: float  # share of questions that got an answer rather than "the news does not say"
    purity: float  # of the answered questions' sentences, the share quoted from the question's own story

    def to_json(self) -> dict:
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in self.__dict__.items()}


def indexed_half(article_id: str) -> bool:
    """The stories the abstention split indexes: a hash-chosen half, the same on every run."""
    return hashlib.sha256(article_id.encode()).digest()[0] % 2 == 0


def _fold(article_id: str, folds: int) -> int:
    return hashlib.sha256(article_id.encode()).digest()[1] % folds


def fit_logistic(features: np.ndarray, labels: np.ndarray, *, ridge: float = 1e-2, steps: int = 50) -> np.ndarray:
    """Logistic regression by Newton's method (a small ridge keeps it finite when a signal
    separates the classes); returns the weights with the bias last."""
    x = np.hstack([features, np.ones((len(features), 1))])
    w = np.zeros(x.shape[1])
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-x @ w))
        gradient = x.T @ (p - labels) + ridge * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + ridge * np.eye(len(w))
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return w


@dataclass(frozen=True)
class AskedQuestion:
    """One question of the abstention split, answered without the abstention step."""

    present: bool  # its story is indexed
    article_id: str
    evidence: tuple[float, ...]
    confidence: float
    answered: bool  # the answerer found sentences to quote
    recalled: bool
    own_sentences: int
    sentences: int

    @staticmethod
    def ask(service, question: str, *, article_id: str, present: bool, answers: Sequence[str] = ()) -> AskedQuestion:
        """Asks with the abstention step left out, keeping its confidence; `recalled` is whether the
        answer holds one of `answers` or, with none given, cites the question's own article."""
        hits = service.retrieve(question)
        verdict = service.answerability.run(question, hits)
        answer = service.answer_from(question, hits, abstain=False)
        own, total = _own_sentences(answer, article_id)
        plain = " ".join(s for s, _ in answer_sentences(answer))
        recalled = contains_answer(plain, list(answers)) if answers else any(
            c.article_id == article_id for c in answer.citations)
        return AskedQuestion(present=present, article_id=article_id, evidence=verdict.evidence.as_row(),
                             confidence=verdict.confidence, answered=answer.found, recalled=recalled,
                             own_sentences=own, sentences=total)


CURVE_THRESHOLDS = tuple(step / 20 for step in range(20))


def abstention_curve(asked: Sequence[AskedQuestion], confidences: Sequence[float],
                     thresholds: Sequence[float] = CURVE_THRESHOLDS) -> list[dict]:
    """answered_absent, found_present and recall_present for each threshold on the confidences."""
    present = [q for q in asked if q.present]
    absent = [q for q in asked if not q.present]
    by_question = dict(zip(map(id, asked), confidences))
    curve = []
    for threshold in thresholds:
        answers = {id(q): q.answered and by_question[id(q)] >= threshold for q in asked}
        curve.append({
            "abstain_below": threshold,
            "answered_absent": round(sum(answers[id(q)] for q in absent) / max(1, len(absent)), 4),
            "found_present": round(sum(answers[id(q)] for q in present) / max(1, len(present)), 4),
            "recall_present": round(sum(answers[id(q)] and q.recalled for q in present) / max(1, len(present)), 4),
        })
    return curve


def abstention_report(asked: Sequence[AskedQuestion], *, abstain_below: float, folds: int = 5) -> dict:
    """The split's figures at `abstain_below` with the answerer's weights, the curve across
    thresholds, and the weights refitted here with a curve cross-validated by story."""
    confidences = [q.confidence for q in asked]
    (at_threshold,) = abstention_curve(asked, confidences, thresholds=[abstain_below])
    kept = [q for q in asked if q.present and q.answered and q.confidence >= abstain_below]
    features = np.array([q.evidence for q in asked])
    labels = np.array([q.present for q in asked], dtype=float)
    out_of_fold = np.zeros(len(asked))
    fold_of = np.array([_fold(q.article_id, folds) for q in asked])
    for fold in range(folds):
        held = fold_of == fold
        if held.any() and (~held).any():
            w = fit_logistic(features[~held], labels[~held])
            out_of_fold[held] = 1.0 / (1.0 + np.exp(-(features[held] @ w[:-1] + w[-1])))
    fitted = fit_logistic(features, labels)
    return {
        "questions_present": int(labels.sum()), "questions_absent": len(asked) - int(labels.sum()), **at_threshold,
        "purity": round(sum(q.own_sentences for q in kept) / max(1, sum(q.sentences for q in kept)), 4),
        "curve": abstention_curve(asked, confidences),
        "refitted": {
            "weights": {name: round(float(v), 3) for name, v in zip(("dense", "lexical", "agreement", "coverage", "names"), fitted)},
            "bias": round(float(fitted[-1]), 3),
            "cross_validated_curve": abstention_curve(asked, out_of_fold.tolist()),
        },
    }


class QAEvaluation:
    """Indexes a QA file's articles in a store of their own and asks every question in three retrieval modes.

    With several `backends`, the same articles and questions go through each, side by side: the
    store is a temporary folder for SQLite, a temporary schema (dropped afterwards) in the database
    named by [store] url_env for PostgreSQL.
    """

    def __init__(self, config: Config, *, embedder: Embedder | None = None, limit: int | None = None,
                 backends: Sequence[str] = (), abstention: bool = False) -> None:
        self.config, self.embedder, self.limit = config, embedder, limit
        self.backends = list(dict.fromkeys(backends)) or [config.store.backend]
        if abstention and len(self.backends) > 1:
            raise ValueError("the abstention split runs on one backend")
        self.abstention = abstention

    def run(self, data: str | Path, *, progress: bool = True) -> dict:
        rows = list(read_jsonl(data))[: self.limit]
        if not rows:
            raise ValueError(f"{data}: no questions")
        articles = {}
        for row in rows:
            if row["article_id"] not in articles:
                articles[row["article_id"]] = self._article(row)
        from bot.service import embedder_for

        # The eval builds a new index, so "auto" means what a new index would get here.
        embedder = self.embedder or embedder_for(self.config, follow=())
        if self.abstention:
            return self._abstention(embedder, articles, rows, progress)
        by_backend = {backend: self._run_on(backend, embedder, articles, rows, progress) for backend in self.backends}
        out = dict(by_backend[self.backends[0]])
        if len(self.backends) > 1:
            out["backends"] = by_backend
        return out

    def _run_on(self, backend: str, embedder: Embedder, articles: dict, rows: list[dict], progress: bool) -> dict:
        from bot.service import NewsService

        with _scratch_store(self.config, backend, embedder) as config:
            service = NewsService(config, embedder=embedder)
            try:
                started = time.perf_counter()
                report = service.ingestor.run(articles.values(), progress=progress)
                ingest_seconds = time.perf_counter() - started
                results = {mode: self._score(service, rows, mode, progress) for mode in RetrievalMode.ALL}
            finally:
                service.store.close()
        out = results[RetrievalMode.HYBRID].to_json()
        out["baselines"] = {"dense": results[RetrievalMode.DENSE].to_json(), "bm25": results[RetrievalMode.LEXICAL].to_json()}
        out["backend"] = backend
        out["articles"] = len(articles)
        out["chunks"] = report.chunks
        out["ingest_seconds"] = round(ingest_seconds, 2)
        out["model"] = embedder.name
        return out

    def _abstention(self, embedder: Embedder, articles: dict, rows: list[dict], progress: bool) -> dict:
        """Only a hash-chosen half of the stories indexed; every question asked (hybrid), its
        answer and its confidence kept apart so that the curve covers every threshold."""
        from bot.service import NewsService

        indexed = [a for article_id, a in articles.items() if indexed_half(str(article_id))]
        with _scratch_store(self.config, self.backends[0], embedder) as config:
            service = NewsService(config, embedder=embedder)
            try:
                service.ingestor.run(indexed, progress=progress)
                asked = [AskedQuestion.ask(service, row["question"], article_id=str(row["article_id"]),
                                           present=indexed_half(str(row["article_id"])), answers=row["answers"])
                         for row in tqdm(rows, desc="eval abstention", file=sys.stderr, disable=not progress)]
            finally:
                service.store.close()
        report = abstention_report(asked, abstain_below=self.config.answer.abstain_below)
        report.update(backend=self.backends[0], articles=len(articles), indexed_articles=len(indexed),
                      model=embedder.name)
        return report

    @staticmethod
    def _article(row: dict) -> Article:
        """The row's story as ingest builds one; its `article_id` is the id, so citations can be checked."""
        published = datetime.fromisoformat(row["published"]) if row.get("published") else None
        return build_article(text=row["text"], source="eval", title=row.get("title"), guid=str(row["article_id"]),
                             outlet=row.get("source"), published=published, language="en")

    def _score(self, service, rows: list[dict], mode: str, progress: bool) -> QAScores:
        hits_at = {1: 0, 5: 0, 10: 0}
        recalled = cited_right = cited_total = answered = own_sentences = sentence_count = 0
        words, latencies = [], []
        top_k = self.config.retrieval.top_k
        for row in tqdm(rows, desc=f"eval {mode}", file=sys.stderr, disable=not progress):
            started = time.perf_counter()
            hits = service.retrieve(row["question"], k=max(10, top_k), mode=mode)
            # The baselines measure retrieval: only the hybrid ranking's scores calibrate the abstention.
            answer = service.answer_from(row["question"], hits[:top_k], abstain=mode == RetrievalMode.HYBRID)
            latencies.append((time.perf_counter() - started) * 1000)
            if answer.found:
                answered += 1
                own, total = _own_sentences(answer, str(row["article_id"]))
                own_sentences, sentence_count = own_sentences + own, sentence_count + total
            found = [contains_answer(h.text, row["answers"]) for h in hits[: max(hits_at)]]
            for k in hits_at:
                hits_at[k] += any(found[:k])
            sentences = answer_sentences(answer)
            plain = " ".join(s for s, _ in sentences)
            words.append(len(plain.split()) if answer.found else 0)
            recalled += contains_answer(plain, row["answers"])
            for sentence, numbers in sentences:
                if contains_answer(sentence, row["answers"]):
                    cited_total += 1
                    cited_right += any(answer.citations[n - 1].article_id == str(row["article_id"]) for n in numbers
                                       if 0 < n <= len(answer.citations))
                    break
        n = len(rows)
        return QAScores(
            n=n, hit_at_1=hits_at[1] / n, hit_at_5=hits_at[5] / n, hit_at_10=hits_at[10] / n,
            answer_recall=recalled / n, citation_precision=cited_right / cited_total if cited_total else 0.0,
            answer_words=statistics.mean(words), p50_ms=percentile(latencies, 50), p95_ms=percentile(latencies, 95),
            answered=answered / n, purity=own_sentences / sentence_count if sentence_count else 0.0,
        )


def _own_sentences(answer: Answer, article_id: str) -> tuple[int, int]:
    """(sentences citing `article_id`, cited sentences) of an answer."""
    if not answer.found:
        return 0, 0
    cited_sentences = [numbers for _, numbers in answer_sentences(answer) if numbers]
    own = sum(any(0 < n <= len(answer.citations) and answer.citations[n - 1].article_id == article_id for n in numbers)
              for numbers in cited_sentences)
    return own, len(cited_sentences)


class SummaryEvaluation:
    """ROUGE of the `/summary article` summarizer against reference highlights, and Lead-3 beside it."""

    def __init__(self, config: Config, *, limit: int | None = None) -> None:
        self.config, self.limit = config, limit

    def run(self, data: str | Path, *, progress: bool = True) -> dict:
        from rouge_score import rouge_scorer

        from bot.summarize import ArticleSummarizer
        from index.article import ArticleMeta

        rows = list(read_jsonl(data))[: self.limit]
        if not rows:
            raise ValueError(f"{data}: no articles")
        scorer = rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=True)
        summarizer = ArticleSummarizer(sentences=self.config.answer.summary_sentences)
        ours = {"rouge1": [], "rouge2": [], "rougeL": []}
        lead = {"rouge1": [], "rouge2": [], "rougeL": []}
        words = []
        for row in tqdm(rows, desc="eval summary", file=sys.stderr, disable=not progress):
            text = normalize_text(row["text"])
            meta = ArticleMeta(id=str(row["id"]), title=row.get("title") or "", outlet=None, url=None,
                               published=None, fetched=None, language="en")
            summary = " ".join(s for s, _ in answer_sentences(summarizer.run(meta, text)))
            lead3 = " ".join(split_sentences(text)[:3])  # the usual baseline: the story's opening as it stands
            words.append(len(summary.split()))
            for scores, candidate in ((ours, summary), (lead, lead3)):
                result = scorer.score(row["summary"], candidate)
                for key in scores:
                    scores[key].append(result[key].fmeasure * 100)
        out = {key: round(statistics.mean(v), 2) for key, v in ours.items()}
        out["n"] = len(rows)
        out["lead3"] = {key: round(statistics.mean(v), 2) for key, v in lead.items()}
        out["summary_words"] = round(statistics.mean(words), 1)
        out["reference_words"] = round(statistics.mean(len(r["summary"].split()) for r in rows), 1)
        return out


@contextmanager
def _scratch_store(config: Config, backend: str, embedder: Embedder) -> Iterator[Config]:
    """`config` pointed at an empty store of `backend`, deleted afterwards."""
    with tempfile.TemporaryDirectory(prefix="newsdesk-eval-") as folder:
        clone = copy.deepcopy(config)
        clone.index.dir = folder
        clone.store.backend = backend
        if backend != "postgres":
            yield clone
            return
        from index.store import drop_namespace, upgrade_database

        clone.store.schema = f"newsdesk_eval_{os.getpid()}"
        upgrade_database(clone.store, model_name=embedder.name, dim=embedder.dim)
        try:
            yield clone
        finally:
            drop_namespace(clone.store)

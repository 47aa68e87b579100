"""`newsdesk eval follow`: topic follows against keyword filters, on news labelled with topics.

The corpus is replayed in date order as a stream of new articles, each chunked and embedded as
ingest does it and scored against every topic's follow (bot.follows.FollowScorer, the step the
matcher runs at ingest). A follow matches where its score reaches the threshold; the baseline
matches where any of the topic's keywords appears (case-insensitive, whole words), as a feed
bot's keyword filter would. Both are scored against the corpus's labels: precision, recall and
F1 per topic, micro and macro, and the follows' curves across thresholds: each topic read as a
subject (normal, strict) and as a section of the news (broad), whose scores are on a scale of their own.

Labels are a row's `topics` (Reuters-21578) or its `category` (BBC). Rows without any label are
left out, as the ModApte split does for Reuters: an unlabelled article is not known to be off
every topic.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import numpy as np
from tqdm import tqdm

from bot.config import Config
from bot.evaluate import read_jsonl
from bot.follows import NEWS_SECTIONS, FollowScorer, Topic, contains_words, thresholds
from index.embed import Embedder
from index.ingest import embed_text
from index.sources.common import build_article

CURVE = np.round(np.arange(0.16, 0.72, 0.02), 2)
BROAD_CURVE = np.round(np.arange(0.0, 0.32, 0.02), 2)  # the topics read as sections: another scale
ENCODE_ARTICLES = 256  # articles embedded together


def labels_of(row: dict) -> set[str]:
    if row.get("topics"):
        return set(row["topics"])
    return {row["category"]} if row.get("category") else set()


def read_topics(path: str | Path) -> list[dict]:
    topics = list(read_jsonl(path))
    for row in topics:
        missing = {"label", "query", "keywords"} - set(row)
        if missing:
            raise ValueError(f"{path}: a topic lacks {', '.join(sorted(missing))}: {row}")
        Topic.parse(row["query"])  # a query the bot would refuse is an error here too
    if not topics:
        raise ValueError(f"{path}: no topics")
    return topics


def scores(predicted: np.ndarray, truth: np.ndarray, labels: Sequence[str]) -> dict:
    """Per-label precision, recall and F1 of boolean matrices (articles × labels), micro and macro."""
    hits = (predicted & truth).sum(axis=0)
    said, real = predicted.sum(axis=0), truth.sum(axis=0)
    precision = np.divide(hits, said, out=np.ones(len(labels)), where=said > 0)  # nothing said, nothing wrong
    recall = np.divide(hits, real, out=np.zeros(len(labels)), where=real > 0)
    f1 = np.divide(2 * precision * recall, precision + recall, out=np.zeros(len(labels)),
                   where=precision + recall > 0)
    micro_p = hits.sum() / max(said.sum(), 1)
    micro_r = hits.sum() / max(real.sum(), 1)
    return {
        "per_label": {label: {"precision": round(float(p), 3), "recall": round(float(r), 3), "f1": round(float(f), 3),
                              "matched": int(s), "labelled": int(n)}
                      for label, p, r, f, s, n in zip(labels, precision, recall, f1, said, real)},
        "macro": {"precision": round(float(precision.mean()), 3), "recall": round(float(recall.mean()), 3),
                  "f1": round(float(f1.mean()), 3)},
        "micro": {"precision": round(float(micro_p), 3), "recall": round(float(micro_r), 3),
                  "f1": round(float(2 * micro_p * micro_r / max(micro_p + micro_r, 1e-9)), 3)},
    }


class FollowEvaluation:
    def __init__(self, config: Config, *, limit: int | None = None, embedder: Embedder | None = None) -> None:
        self.config, self.limit, self.embedder = config, limit, embedder

    def run(self, data: str | Path, topics_path: str | Path, *, progress: bool = True) -> dict:
        topics = read_topics(topics_path)
        rows = list(read_jsonl(data))
        labelled = [row for row in rows if labels_of(row)]
        # Date order, as the news arrived; rows without a date keep their place at the end.
        labelled.sort(key=lambda row: row.get("published") or "9999")
        labelled = labelled[: self.limit]
        if not labelled:
            raise ValueError(f"{data}: no labelled articles (a `topics` list or a `category`)")
        embedder = self.embedder or self._embedder()
        from index.chunk import Chunker

        idx = self.config.index
        chunker = Chunker(embedder, max_tokens=min(idx.chunk_tokens, embedder.max_tokens - 32),
                          overlap_sentences=idx.chunk_overlap_sentences)
        parsed = [Topic.parse(t["query"]) for t in topics]
        topic_vectors = embedder.encode([t.meaning for t in parsed])
        scorer = FollowScorer(parsed, topic_vectors)
        as_sections = FollowScorer(parsed, topic_vectors, broad=[True] * len(parsed),
                                   sections=embedder.encode(list(NEWS_SECTIONS)))
        names = [t["label"] for t in topics]
        truth = np.array([[name in labels_of(row) for name in names] for row in labelled])
        matrix = np.empty((len(labelled), len(topics)), dtype=np.float32)
        broad_matrix = np.empty_like(matrix)
        keyword = np.zeros_like(truth)
        bar = tqdm(total=len(labelled), desc="eval follow", unit=" articles", file=sys.stderr, disable=not progress)
        for start in range(0, len(labelled), ENCODE_ARTICLES):
            batch = [self._article(row) for row in labelled[start:start + ENCODE_ARTICLES]]
            chunks = chunker.run_batch(batch)
            vectors = embedder.encode([embed_text(a, c.text) for a, cs in zip(batch, chunks) for c in cs])
            offset = 0
            for row, (article, article_chunks) in enumerate(zip(batch, chunks), start=start):
                matrix[row] = scorer.run(article, vectors[offset:offset + len(article_chunks)])
                broad_matrix[row] = as_sections.run(article, vectors[offset:offset + len(article_chunks)])
                offset += len(article_chunks)
                haystack = f"{article.title}\n{article.text}".lower()
                keyword[row] = [any(contains_words(haystack, k.lower()) for k in t["keywords"]) for t in topics]
            bar.update(len(batch))
        bar.close()
        limits = thresholds(self.config.follows.match_threshold)
        levels = {level: scores((broad_matrix if level == "broad" else matrix) >= limit, truth, names)
                  for level, limit in limits.items()}
        baseline = scores(keyword, truth, names)
        return {
            "data": str(data), "topics": str(topics_path), "articles": len(labelled),
            "unlabelled_left_out": len(rows) - sum(1 for row in rows if labels_of(row)),
            "embedding": embedder.name, "thresholds": limits,
            "follows": levels["normal"], "levels": {k: {"macro": v["macro"], "micro": v["micro"]} for k, v in levels.items()},
            "keywords": baseline, "curve": _curve(matrix, truth, names, CURVE),
            "broad_curve": _curve(broad_matrix, truth, names, BROAD_CURVE),
        }

    def _embedder(self) -> Embedder:
        from bot.service import embedder_for

        return embedder_for(self.config, follow=())  # as a new index here would embed

    @staticmethod
    def _article(row: dict):
        published = datetime.fromisoformat(row["published"]) if row.get("published") else None
        return build_article(text=row["text"], source="eval", title=row.get("title"), guid=str(row["id"]),
                             published=published)


def _curve(matrix: np.ndarray, truth: np.ndarray, labels: Sequence[str], limits: np.ndarray) -> list[dict]:
    curve = []
    for limit in limits:
        at = scores(matrix >= limit, truth, labels)
        curve.append({"threshold": float(limit), "macro": at["macro"], "micro": at["micro"]})
    return curve


def follow_lines(result: dict) -> str:
    """The per-topic table, both overall figures, and the curve, for a terminal."""
    ours, theirs = result["follows"], result["keywords"]
    lines = [f"{result['articles']} labelled articles ({result['unlabelled_left_out']} unlabelled left out); "
             f"{result['embedding']}",
             f"{'topic':<16}{'follow P':>9}{'R':>7}{'F1':>7}   {'keywords P':>10}{'R':>7}{'F1':>7}{'labelled':>10}"]
    for label, f in ours["per_label"].items():
        k = theirs["per_label"][label]
        lines.append(f"{label:<16}{f['precision']:>9.3f}{f['recall']:>7.3f}{f['f1']:>7.3f}   "
                     f"{k['precision']:>10.3f}{k['recall']:>7.3f}{k['f1']:>7.3f}{f['labelled']:>10}")
    for kind in ("macro", "micro"):
        f, k = ours[kind], theirs[kind]
        lines.append(f"{kind:<16}{f['precision']:>9.3f}{f['recall']:>7.3f}{f['f1']:>7.3f}   "
                     f"{k['precision']:>10.3f}{k['recall']:>7.3f}{k['f1']:>7.3f}")
    lines.append("levels: " + "; ".join(f"{level} ≥{result['thresholds'][level]}: macro P {v['macro']['precision']} "
                                         f"R {v['macro']['recall']} F1 {v['macro']['f1']}"
                                         for level, v in result["levels"].items()))
    for name, key in (("normal and strict", "curve"), ("broad (a section's margin)", "broad_curve")):
        lines.append(f"{name}: threshold  macro P     R    F1   micro P     R    F1")
        lines += [f"{row['threshold']:>9.2f}{row['macro']['precision']:>9.3f}{row['macro']['recall']:>6.3f}"
                  f"{row['macro']['f1']:>6.3f}{row['micro']['precision']:>10.3f}{row['micro']['recall']:>6.3f}"
                  f"{row['micro']['f1']:>6.3f}" for row in result[key]]
    return "\n".join(lines)

"""Articles in, index out: de-duplicate, chunk, embed (with the cache) and commit in batches."""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

from tqdm import tqdm

from index.article import Article, Failure
from index.chunk import Chunker
from index.dedup import MinHasher
from index.embed import Embedder
from index.store import NewsStore, StoreWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Duplicate:
    article_id: str
    of: str  # the stored article it duplicates
    reason: str  # "already indexed", "same text", "near-duplicate"


@dataclass
class IngestReport:
    added: list[str] = field(default_factory=list)
    duplicates: list[Duplicate] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)
    chunks: int = 0
    embedded: int = 0  # chunk vectors computed; the rest came from the cache
    seconds: float = 0.0
    interrupted: bool = False

    def to_json(self) -> dict:
        return {
            "added": len(self.added),
            "duplicates": len(self.duplicates),
            "failed": [{"source": f.source, "reason": f.reason} for f in self.failed],
            "chunks": self.chunks,
            "embedded": self.embedded,
            "seconds": round(self.seconds, 2),
            "interrupted": self.interrupted,
            "added_ids": self.added,
            "duplicate_of": [{"id": d.article_id, "of": d.of, "reason": d.reason} for d in self.duplicates],
        }

    def summary(self) -> str:
        line = f"added {len(self.added)}, duplicates {len(self.duplicates)}, failed {len(self.failed)}"
        line += f" ({self.chunks} chunks, {self.embedded} embedded, {self.seconds:.1f} s)"
        return line + (" — interrupted; committed work is kept" if self.interrupted else "")


def embed_text(article: Article, chunk_text: str) -> str:
    """What the model sees for a chunk: the headline carries the topic of every passage."""
    return f"{article.title}\n{chunk_text}"


class Ingestor:
    """One writer's pass over a stream of articles (and the failures met while reading them)."""

    def __init__(
        self,
        store: NewsStore,
        embedder: Embedder,
        *,
        chunker: Chunker,
        hasher: MinHasher | None = None,
        near_duplicate_threshold: float = 0.7,
        batch_chunks: int = 1024,
    ) -> None:
        if not 0 < near_duplicate_threshold <= 1:
            raise ValueError("near_duplicate_threshold must be in (0, 1]")
        if batch_chunks < 1:
            raise ValueError("batch_chunks must be positive")
        self.store, self.embedder, self.chunker = store, embedder, chunker
        self.hasher = hasher or MinHasher()
        self.threshold = near_duplicate_threshold
        self.batch_chunks = batch_chunks

    def run(
        self, items: Iterable[Article | Failure], *, collection: str | None = None, progress: bool = False
    ) -> IngestReport:
        report = IngestReport()
        started = time.perf_counter()
        bar = tqdm(items, desc="ingest", unit=" articles", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                   mininterval=0.5)
        uncommitted: list[tuple[str, int]] = []  # (article id, chunks): rolled back if interrupted
        with self.store.writer() as writer:
            try:
                for item in bar:
                    if isinstance(item, Failure):
                        report.failed.append(item)
                    else:
                        added = self._add(writer, item.with_collection(collection) if collection else item, report)
                        if added:
                            uncommitted.append(added)
                    if writer.pending_chunks >= self.batch_chunks:
                        self._commit(writer, report, uncommitted)
                    bar.set_postfix(added=len(report.added) + len(uncommitted), dup=len(report.duplicates),
                                    failed=len(report.failed), refresh=False)
                self._commit(writer, report, uncommitted)
            except KeyboardInterrupt:
                report.interrupted = True
            finally:
                bar.close()
        report.seconds = time.perf_counter() - started
        return report

    def _add(self, writer: StoreWriter, article: Article, report: IngestReport) -> tuple[str, int] | None:
        existing = writer.find_article(article.id)
        reason = "already indexed"
        if existing is None:
            existing, reason = writer.find_same_text(article.content_hash), "same text"
        fingerprint = None  # hashed only for a new text: a poll re-reads every item it already holds
        if existing is None:
            fingerprint = self.hasher.run(article.text)
            existing = writer.find_near_duplicate(fingerprint, self.threshold)
            reason = "near-duplicate"
        if existing is not None:
            writer.add_collection(existing, article.collection)
            if reason != "already indexed":
                writer.add_also_reported(existing, article)
            report.duplicates.append(Duplicate(article.id, writer.article_id_of(existing), reason))
            return None
        chunks = self.chunker.run(article)  # never empty: an Article's text is not blank
        writer.add_article(article, chunks, fingerprint, [embed_text(article, c.text) for c in chunks])
        return article.id, len(chunks)

    def _commit(self, writer: StoreWriter, report: IngestReport, uncommitted: list[tuple[str, int]]) -> None:
        missing = writer.missing_vectors()
        if missing:
            vectors = self.embedder.encode([text for _, text in missing])
            writer.put_vectors([h for h, _ in missing], vectors)
            report.embedded += len(missing)
        writer.commit()
        report.added += [article_id for article_id, _ in uncommitted]
        report.chunks += sum(n for _, n in uncommitted)
        uncommitted.clear()

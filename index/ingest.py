"""Articles in, index out: de-duplicate, chunk, embed (with the cache) and commit in batches."""

from __future__ import annotations

import dataclasses
import logging
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from tqdm import tqdm

from index.article import DEFAULT_COLLECTION, Article, ArticleMeta, Chunk, Failure, utcnow
from index.chunk import Chunker
from index.dedup import Fingerprint, MinHasher
from index.embed import Embedder
from index.store import Announcement, DuplicateLookup, NewsStore, StoreWriter, embed_key

log = logging.getLogger(__name__)

MAX_BATCH_ITEMS = 1000  # articles prepared before a write, new or not
CHUNK_GROUP = 64  # new articles chunked together: their sentences go to the tokenizer in one call


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


def embed_token_ids(title_ids: Sequence[int], chunk: Chunk) -> list[int]:
    """`embed_text`'s tokens from the title's and the chunk's (the line break between them is no token)."""
    return [*title_ids, *chunk.token_ids]


class ArticleMatcher(Protocol):
    """Told of each batch's articles that are new to a collection, with their chunk vectors, inside
    the batch's transaction (never of a feed's first read, its backlog): returns announcements to
    queue with them (bot.follows.FollowMatcher: topic follows' matches)."""

    def run(self, added: Sequence[tuple[Article, np.ndarray]]) -> list[Announcement]: ...


@dataclass(frozen=True)
class _Fold:
    """An article already held (as itself, its text, or a near copy): it joins the stored story."""

    article: Article
    of: str
    reason: str


@dataclass(frozen=True)
class _Unchunked:
    """An article to store, fingerprinted; it is chunked with the next group of new articles."""

    article: Article
    fingerprint: Fingerprint


@dataclass(frozen=True)
class _New:
    """An article to store, chunked and fingerprinted; its vectors are found or computed per batch."""

    article: Article
    chunks: list[Chunk]
    fingerprint: Fingerprint
    embed_keys: list[str]
    embed_texts: list[str]
    embed_token_ids: list[list[int]]


class _Batch(DuplicateLookup):
    """The articles of the batch being prepared, so a copy of one of them is folded before it is embedded."""

    def __init__(self) -> None:
        self.items: list[_Fold | _Unchunked | _New] = []
        self.chunks = 0
        self.new = 0
        self.unchunked: list[int] = []  # where the new articles not chunked yet are in `items`
        self._by_id: set[str] = set()
        self._by_hash: dict[str, str] = {}
        self._by_band: dict[int, list[_Unchunked]] = {}

    def add(self, item: _Fold | _Unchunked) -> None:
        self.items.append(item)
        if isinstance(item, _Unchunked):
            self.new += 1
            self.unchunked.append(len(self.items) - 1)
            self._by_id.add(item.article.id)
            self._by_hash.setdefault(item.article.content_hash, item.article.id)
            for band in item.fingerprint.bands:
                self._by_band.setdefault(band, []).append(item)

    def has_article(self, article_id: str) -> bool:
        return article_id in self._by_id

    def find_same_text(self, content_hash: str) -> str | None:
        return self._by_hash.get(content_hash)

    def find_near_duplicate(self, fingerprint: Fingerprint, threshold: float) -> str | None:
        sharing = {id(item): item for band in fingerprint.bands for item in self._by_band.get(band, ())}
        return fingerprint.best_match(((item.article.id, item.fingerprint.signature) for item in sharing.values()),
                                      threshold)

    def replace_unchunked(self, items: Sequence[_New]) -> None:
        """The unchunked articles, in order, now chunked."""
        for at, item in zip(self.unchunked, items, strict=True):
            self.items[at] = item
            self.chunks += len(item.chunks)
        self.unchunked = []


class Ingestor:
    """One writer's pass over a stream of articles (and the failures met while reading them).

    Each batch is prepared first (duplicates found, new articles chunked, fingerprinted and
    embedded, with the embedding cache), then written in one transaction that checks for
    duplicates again: another process may have stored the same story meanwhile. On PostgreSQL the
    transaction, and the write lock it takes, begin only then, so several processes embed at once
    and queue for the inserts only; SQLite keeps its one writer's lock for the whole run.
    """

    def __init__(
        self,
        store: NewsStore,
        embedder: Embedder,
        *,
        chunker: Chunker,
        hasher: MinHasher | None = None,
        near_duplicate_threshold: float = 0.7,
        batch_chunks: int = 1024,
        matcher: ArticleMatcher | None = None,
    ) -> None:
        if not 0 < near_duplicate_threshold <= 1:
            raise ValueError("near_duplicate_threshold must be in (0, 1]")
        if batch_chunks < 1:
            raise ValueError("batch_chunks must be positive")
        self.store, self.embedder, self.chunker = store, embedder, chunker
        self.hasher = hasher or MinHasher()
        self.threshold = near_duplicate_threshold
        self.batch_chunks = batch_chunks
        self.matcher = matcher

    def run(
        self, items: Iterable[Article | Failure], *, collection: str | None = None, progress: bool = False,
        announce: Announcement | None = None, backlog: bool = False,
    ) -> IngestReport:
        """Ingest `items`; with `announce` (a guild and channel), each batch that adds articles queues
        their headlines there, with the batch. `backlog`: a feed's first read, its old items, which
        the matcher is not told of."""
        report = IngestReport()
        started = time.perf_counter()
        bar = tqdm(items, desc="ingest", unit=" articles", file=sys.stderr, disable=not progress, dynamic_ncols=True,
                   mininterval=0.5)
        with self.store.writer() as writer:
            batch = _Batch()
            try:
                for item in bar:
                    if isinstance(item, Failure):
                        report.failed.append(item)
                    else:
                        batch.add(self._prepare(item.with_collection(collection) if collection else item, batch))
                        # A new article has a chunk at least: chunk the group early once the batch may be full.
                        if len(batch.unchunked) >= CHUNK_GROUP or batch.chunks + len(batch.unchunked) >= self.batch_chunks:
                            self._chunk(batch)
                    # Re-read items (a poll's) add no chunks, but their folds are writes too.
                    if batch.chunks >= self.batch_chunks or len(batch.items) >= MAX_BATCH_ITEMS:
                        self._write(writer, batch, report, announce, backlog)
                        batch = _Batch()
                    bar.set_postfix(added=len(report.added) + batch.new, dup=len(report.duplicates),
                                    failed=len(report.failed), refresh=False)
                self._write(writer, batch, report, announce, backlog)
            except KeyboardInterrupt:
                report.interrupted = True  # the batch in hand is dropped; committed ones stay
            finally:
                bar.close()
        report.seconds = time.perf_counter() - started
        return report

    def stored_with_vectors(self, meta: ArticleMeta, text: str, *, collection: str,
                            source: str = "") -> tuple[Article, np.ndarray] | None:
        """A stored article, as seen from `collection`, with its chunk vectors from the embedding
        cache (chunked again as ingest chunked it: nothing is embedded); None if some are missing
        (a store built with other chunk settings)."""
        article = Article(id=meta.id, title=meta.title, text=text, url=meta.url, outlet=meta.outlet,
                          published=meta.published, fetched=meta.fetched or meta.published or utcnow(),
                          collection=collection, source=source)
        keys = [embed_key(self.store.model_name, embed_text(article, c.text)) for c in self.chunker.run(article)]
        vectors = self.store.cached_vectors(keys)
        return (article, np.stack([vectors[k] for k in keys])) if all(k in vectors for k in keys) else None

    def _newly_seen(self, folds: Sequence[_Fold]) -> list[tuple[Article, np.ndarray]]:
        """Stored stories that a fold made visible to a server's collection for the first time
        (another server had them, or nobody's feed but this one): its follows see them as new."""
        seen = []
        for fold in folds:
            if self.store.article(fold.of, collections=(DEFAULT_COLLECTION,)) is not None:
                continue  # every server had it already
            found = self.store.article(fold.of)
            stored = found and self.stored_with_vectors(*found, collection=fold.article.collection,
                                                        source=fold.article.source)
            if stored:
                seen.append(stored)
        return seen

    def _duplicate(self, lookups: Sequence[DuplicateLookup], article: Article,
                   fingerprint: Fingerprint | None) -> tuple[_Fold | None, Fingerprint | None]:
        """Whether `article` is already held, as itself, as the same text or as a near copy. The
        fingerprint is computed only for a new text: a poll re-reads every item it already holds."""
        for lookup in lookups:
            if lookup.has_article(article.id):
                return _Fold(article, article.id, "already indexed"), fingerprint
        for lookup in lookups:
            same = lookup.find_same_text(article.content_hash)
            if same is not None:
                return _Fold(article, same, "same text"), fingerprint
        fingerprint = fingerprint or self.hasher.run(article.text)
        for lookup in lookups:
            near = lookup.find_near_duplicate(fingerprint, self.threshold)
            if near is not None:
                return _Fold(article, near, "near-duplicate"), fingerprint
        return None, fingerprint

    def _prepare(self, article: Article, batch: _Batch) -> _Fold | _Unchunked:
        fold, fingerprint = self._duplicate((self.store, batch), article, None)
        return fold or _Unchunked(article, fingerprint)

    def _chunk(self, batch: _Batch) -> None:
        waiting = [batch.items[at] for at in batch.unchunked]
        articles = [item.article for item in waiting]
        chunked = self.chunker.run_batch(articles)  # never empty: an Article's text is not blank
        titles = self.embedder.tokenize([article.title for article in articles])
        new = []
        for item, chunks, title_ids in zip(waiting, chunked, titles):
            texts = [embed_text(item.article, c.text) for c in chunks]
            new.append(_New(item.article, chunks, item.fingerprint, [embed_key(self.store.model_name, t) for t in texts],
                            texts, [embed_token_ids(title_ids, c) for c in chunks]))
        batch.replace_unchunked(new)

    def _vectors(self, batch: _Batch, report: IngestReport) -> dict[str, np.ndarray]:
        """Every new chunk's vector: from the cache where the same text was embedded before, else from the model."""
        new = [item for item in batch.items if isinstance(item, _New)]
        texts = {key: text for item in new for key, text in zip(item.embed_keys, item.embed_texts)}
        token_ids = {key: ids for item in new for key, ids in zip(item.embed_keys, item.embed_token_ids)}
        vectors = self.store.cached_vectors(texts)
        missing = [key for key in texts if key not in vectors]
        if missing:
            # The chunker's tokens: the model does not tokenize the same texts again.
            vectors.update(zip(missing, self.embedder.encode([texts[key] for key in missing],
                                                             token_ids=[token_ids[key] for key in missing])))
            report.embedded += len(missing)
        return vectors

    def _write(self, writer: StoreWriter, batch: _Batch, report: IngestReport, announce: Announcement | None,
               backlog: bool) -> None:
        if not batch.items:
            return
        if batch.unchunked:
            self._chunk(batch)
        vectors = self._vectors(batch, report)
        added: list[tuple[_New, np.ndarray]] = []
        folded: list[_Fold] = []
        stored_as: dict[str, str] = {}  # a new article of this batch -> the stored article it became
        joined_servers: list[_Fold] = []  # folds that brought a stored story into a server's collection
        for item in batch.items:
            if isinstance(item, _New):
                fold, _ = self._duplicate((writer,), item.article, item.fingerprint)
                chunk_vectors = np.stack([vectors[key] for key in item.embed_keys])
                if fold is None and writer.add_article(item.article, item.chunks, item.fingerprint, item.embed_keys,
                                                       chunk_vectors):
                    stored_as[item.article.id] = item.article.id
                    added.append((item, chunk_vectors))
                    continue
                item = fold or _Fold(item.article, item.article.id, "already indexed")
                stored_as[item.article.id] = item.of
            # A copy of a batch-mate follows it where it went: another process may have stored the
            # story first, under another id.
            item = dataclasses.replace(item, of=stored_as.get(item.of, item.of))
            joined = writer.add_collection(item.of, item.article.collection)
            if not joined and not writer.has_article(item.of):
                report.failed.append(Failure(item.article.source or item.article.id,
                                             "the story it repeats was removed while it was read; read it again"))
                continue
            if joined and item.article.collection != DEFAULT_COLLECTION:
                joined_servers.append(item)
            if item.reason != "already indexed":
                writer.add_also_reported(item.of, item.article)
            folded.append(item)
        if announce is not None and added:
            writer.add_announcement(dataclasses.replace(announce, article_ids=tuple(i.article.id for i, _ in added)))
        if self.matcher is not None and (added or joined_servers) and not backlog:
            seen = [(item.article, chunk_vectors) for item, chunk_vectors in added] + self._newly_seen(joined_servers)
            for match in self.matcher.run(seen):
                writer.add_announcement(match)
        writer.commit()
        report.added += [item.article.id for item, _ in added]
        report.chunks += sum(len(item.chunks) for item, _ in added)
        report.duplicates += [Duplicate(f.article.id, f.of, f.reason) for f in folded]

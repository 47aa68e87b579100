"""BM25 for the SQLite backend that stays fast at a million chunks: postings ordered by impact.

FTS5 computes `bm25()` for every chunk that holds any word of the query, so a question with a
common word costs in proportion to the collection (1M chunks: p95 504 ms, bench). Here each word's
postings are ordered by their weight in BM25 (the impact), a search reads each word's best ones,
scores its best candidates in full from their own term lists (`lexicon_chunks`), and reads deeper
only while a chunk it has not seen could still reach its top EXACT_TOP (see `search`).

Postings are kept packed (14 bytes each, numpy records in a blob), never a row each: stepping
through rows costs about a microsecond apiece, most of a search over common words at a million
chunks. Each term has one packed array, best first, read a slice at a time; what batches added
since waits beside it in pending blobs (one per term per batch), read whole. A term's pending
postings are folded into its array once they reach a quarter of it (or after MOST_PENDING
batches), so each posting is rewritten a bounded number of times.

The score is FTS5's own BM25 (k1 1.2, b 0.75, the title weighing half, idf floored at 1e-6) over
the same words: `terms_of` cuts and stems as FTS5's `porter unicode61` does (index.porter), so the
scores are FTS5's (a word the question repeats in another form, "flood" and "floods", counts once
here, twice in FTS5).

Everything here runs inside the caller's transaction, so the postings commit or roll back with the
chunks they describe. Nothing leaves the SQLite backend but chunk ids and scores.
"""

from __future__ import annotations

import json
import logging
import math
import re
import shutil
import sqlite3
import sys
import tempfile
import unicodedata
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from index.porter import stem
from index.store.sqlite_batches import in_batches
from index.store.types import ScoredChunk

log = logging.getLogger(__name__)

# Changes when what is stored changes (the tokenizer, the impact): a writer rebuilds a store of
# another format when it opens it; until then lexical search there finds nothing (dense still answers).
FORMAT = 3
BM25_K1, BM25_B = 1.2, 0.75
# Postings read per word at first: deeper costs little (a slice of a blob), rounds cost more
# (bench, 1M chunks: 64,000 → BM25 p95 39 ms; 16,000 → 52 ms; 4,000 → 68 ms).
DEPTH = 64_000
# The chunk length (in words, title included) the impact order assumes. The order only decides which
# postings a bounded search reads first; scores use the collection's real average length.
ORDER_LENGTH = 100
_IMPACT_SCALE = 10_000
_MOST = 2**16 - 1
_BUILD_BATCH = 5000
# A term's pending postings are folded into its packed array once they are this many and a quarter
# of the array, or once they are in this many pending blobs.
FOLD_AT = 256
MOST_PENDING = 256
# One posting: the chunk, the order a search reads a term's postings in (best first), the term's
# count in halves (in the title it weighs half: 1, in the passage 2) and the chunk's words, title included.
PACKED = np.dtype([("chunk", "<i8"), ("impact", "<u2"), ("tf", "<u2"), ("length", "<u2")])

SCHEMA = """
CREATE TABLE IF NOT EXISTS lexicon_terms (
    id INTEGER PRIMARY KEY,
    term TEXT NOT NULL UNIQUE,
    chunks INTEGER NOT NULL,          -- how many chunks hold the term (BM25's document frequency)
    pending INTEGER NOT NULL DEFAULT 0,   -- of its postings, how many are pending
    batches INTEGER NOT NULL DEFAULT 0,   -- in how many pending blobs
    packed INTEGER NOT NULL DEFAULT 0     -- and how many are in its packed array
);
CREATE TABLE IF NOT EXISTS lexicon_packed (
    term INTEGER PRIMARY KEY,         -- lexicon_terms.id
    postings BLOB NOT NULL            -- PACKED records, best first
);
CREATE TABLE IF NOT EXISTS lexicon_pending (
    id INTEGER PRIMARY KEY,
    term INTEGER NOT NULL,
    postings BLOB NOT NULL            -- PACKED records a batch added, in no order
);
CREATE INDEX IF NOT EXISTS lexicon_pending_term ON lexicon_pending (term);
CREATE TABLE IF NOT EXISTS lexicon_chunks (
    chunk INTEGER PRIMARY KEY,
    length INTEGER NOT NULL,
    terms BLOB NOT NULL,              -- the chunk's term ids, ascending (uint32)
    counts BLOB NOT NULL              -- and their tf, as in PACKED (uint16)
);
"""
_TABLES = ("lexicon_terms", "lexicon_packed", "lexicon_pending", "lexicon_chunks")

_WORD = re.compile(r"[^\W_]+")


class _Unicode61Fold(dict):
    """What unicode61 (remove_diacritics 1) makes of a non-ASCII character, worked out once each:
    its simple case fold (ß stays ß; "ϐ" is "β"), without the accent when it is a Latin letter
    with one accent ("é" is "e", "ầ" with two stays)."""

    def __missing__(self, code: int) -> str:
        char = chr(code)
        folded = char.casefold()
        if len(folded) != 1:  # a full fold ("ß" -> "ss"); unicode61's is simple
            folded = char.lower()
        parts = unicodedata.normalize("NFD", folded)
        if len(parts) == 2 and "a" <= parts[0] <= "z" and unicodedata.category(parts[1]) == "Mn":
            folded = parts[0]
        self[code] = folded
        return folded


_FOLD = _Unicode61Fold()
_COMBINING_ACCENTS = re.compile("[\u0300-\u036f]")  # written apart from their letter: unicode61 drops them


def terms_of(text: str) -> list[str]:
    """The text's words as FTS5's `porter unicode61` indexes them: folded, stemmed."""
    text = text.lower()
    if not text.isascii():
        text = _COMBINING_ACCENTS.sub("", text.translate(_FOLD))
    return [stem(word) for word in _WORD.findall(text)]


def _postings(title: str, body: str) -> tuple[Counter, int]:
    """Each term's count in a chunk in halves (as the FTS5 query weighs the title 0.5, the passage 1), and its length."""
    title_terms, body_terms = terms_of(title), terms_of(body)
    counts = Counter(title_terms)
    for term in body_terms:
        counts[term] += 2
    # Both are kept in 16 bits; a chunk anywhere near that long weighs next to nothing in BM25 anyway.
    return Counter({term: min(n, _MOST) for term, n in counts.items()}), min(len(title_terms) + len(body_terms), _MOST)


def impacts(tf: np.ndarray, length: np.ndarray) -> np.ndarray:
    """The order postings are read in: a term's weight in BM25 were the average chunk ORDER_LENGTH long."""
    weight = tf / 2
    impact = weight * (BM25_K1 + 1) / (weight + BM25_K1 * (1 - BM25_B + BM25_B * length / ORDER_LENGTH))
    return np.rint(_IMPACT_SCALE * impact).astype(np.uint16)


def _totals(db: sqlite3.Connection) -> dict | None:
    row = db.execute("SELECT value FROM meta WHERE key = 'lexicon'").fetchone()
    totals = json.loads(row[0]) if row else None
    return totals if totals and totals.get("format") == FORMAT else None


def _save_totals(db: sqlite3.Connection, chunks: int, words: int) -> None:
    db.execute("INSERT OR REPLACE INTO meta VALUES ('lexicon', ?)",
               (json.dumps({"format": FORMAT, "chunks": chunks, "words": words}),))


def is_built(db: sqlite3.Connection) -> bool:
    return _totals(db) is not None


def create(db: sqlite3.Connection) -> None:
    """The tables, and for a store without chunks the (empty) totals that mark the lexicon built."""
    db.executescript(SCHEMA)
    if _totals(db) is None and db.execute("SELECT 1 FROM chunks LIMIT 1").fetchone() is None:
        _save_totals(db, 0, 0)


def add(db: sqlite3.Connection, chunks: Sequence[tuple[int, str, str]]) -> None:
    """Post the chunks (id, title, passage) in the open transaction, a pending blob per term; fold
    the terms whose pending postings grew enough."""
    if not chunks or _totals(db) is None:
        return  # nothing to post (an empty commit writes nothing), or not built yet: the build reads every chunk
    postings = _enter(db, chunks)
    if not len(postings):
        return
    by_term = list(_by_term(postings[np.argsort(postings["term"], kind="stable")]))
    db.executemany("INSERT INTO lexicon_pending (term, postings) VALUES (?, ?)",
                   [(term, part.tobytes()) for term, part in by_term])
    _fold_grown(db, [term for term, _ in by_term])


def _enter(db: sqlite3.Connection, chunks: Iterable[tuple[int, str, str]]) -> np.ndarray:
    """Count the chunks in (their own term lists, the terms' counts, the totals); returns their
    postings (_WITH_TERM records)."""
    totals = _totals(db)
    documents: Counter = Counter()
    per_chunk, words = [], 0
    for chunk_id, title, body in chunks:
        counts, length = _postings(title, body)
        per_chunk.append((chunk_id, counts, length))
        documents.update(counts.keys())
        words += length
    ids = _term_ids(db, documents)
    sizes = [len(counts) for _, counts, _ in per_chunk]
    postings = np.zeros(sum(sizes), dtype=_WITH_TERM)
    postings["term"] = [ids[term] for _, counts, _ in per_chunk for term in counts]
    postings["tf"] = [n for _, counts, _ in per_chunk for n in counts.values()]
    postings["chunk"] = np.repeat([chunk_id for chunk_id, _, _ in per_chunk], sizes)
    postings["length"] = np.repeat([length for _, _, length in per_chunk], sizes)
    # Chunk by chunk as given, each chunk's terms ascending (its term list), in one sort.
    postings = postings[np.lexsort((postings["term"], np.repeat(np.arange(len(sizes)), sizes)))]
    ends = np.cumsum(sizes).tolist()
    terms, tfs = postings["term"].astype(np.uint32), postings["tf"]
    forward = [(chunk_id, length, terms[end - size:end].tobytes(), tfs[end - size:end].tobytes())
               for (chunk_id, _, length), size, end in zip(per_chunk, sizes, ends)]
    postings["impact"] = impacts(postings["tf"], postings["length"])
    db.executemany("INSERT INTO lexicon_chunks VALUES (?, ?, ?, ?)", forward)
    _save_totals(db, totals["chunks"] + len(per_chunk), totals["words"] + words)
    return postings


# A posting with its term: how a batch's postings are sorted out by term.
_WITH_TERM = np.dtype([("term", "<i8"), *PACKED.descr])


def _by_term(postings: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """Each term of postings grouped by term, with its PACKED records in the order given."""
    terms, starts = np.unique(postings["term"], return_index=True)
    records = postings[list(PACKED.names)].astype(PACKED)
    return zip(terms.tolist(), np.split(records, starts[1:]))


def _term_ids(db: sqlite3.Connection, documents: Counter) -> dict[str, int]:
    """Each term's id, its counts raised for a pending blob of `documents` postings (a chunk posts a term once)."""
    db.executemany("INSERT INTO lexicon_terms (term, chunks, pending, batches) VALUES (?, ?, ?, 1) "
                   "ON CONFLICT (term) DO UPDATE SET chunks = chunks + excluded.chunks, "
                   "pending = pending + excluded.pending, batches = batches + 1",
                   [(term, n, n) for term, n in documents.items()])
    ids = {}
    for part, marks in in_batches(list(documents)):
        ids.update(db.execute(f"SELECT term, id FROM lexicon_terms WHERE term IN ({marks})", part).fetchall())
    return ids


def remove(db: sqlite3.Connection, chunk_ids: Sequence[int]) -> None:
    """Take the chunks' postings out, in the open transaction: every pending blob and packed array
    of their terms that holds them is rewritten without them."""
    totals = _totals(db)
    if totals is None or not chunk_ids:
        return
    by_term, removed, words = {}, 0, 0
    for part, marks in in_batches(chunk_ids):
        for chunk_id, length, terms in db.execute(
            f"SELECT chunk, length, terms FROM lexicon_chunks WHERE chunk IN ({marks})", part
        ).fetchall():
            for term in np.frombuffer(terms, dtype=np.uint32).tolist():
                by_term.setdefault(term, []).append(chunk_id)
            removed += 1
            words += length
        db.execute(f"DELETE FROM lexicon_chunks WHERE chunk IN ({marks})", part)
    for term, chunks in by_term.items():
        for row_id, blob in db.execute("SELECT id, postings FROM lexicon_pending WHERE term = ?", (term,)).fetchall():
            postings = np.frombuffer(blob, dtype=PACKED)
            kept = postings[~np.isin(postings["chunk"], chunks)]
            if not len(kept):
                db.execute("DELETE FROM lexicon_pending WHERE id = ?", (row_id,))
            elif len(kept) < len(postings):
                db.execute("UPDATE lexicon_pending SET postings = ? WHERE id = ?", (kept.tobytes(), row_id))
        postings = _packed(db, term)
        kept = postings[~np.isin(postings["chunk"], chunks)]
        if len(kept) < len(postings):
            _write_packed(db, term, kept)
        db.execute("UPDATE lexicon_terms SET chunks = chunks - ?, packed = ?, pending = pending - ?, "
                   "batches = (SELECT count(*) FROM lexicon_pending WHERE term = ?) WHERE id = ?",
                   (len(chunks), len(kept), len(chunks) - (len(postings) - len(kept)), term, term))
    # A term's row stays at zero: ids are never reused while a chunk's row could still name one.
    _save_totals(db, totals["chunks"] - removed, totals["words"] - words)


def _packed(db: sqlite3.Connection, term: int) -> np.ndarray:
    row = db.execute("SELECT postings FROM lexicon_packed WHERE term = ?", (term,)).fetchone()
    return np.frombuffer(row[0], dtype=PACKED) if row else np.zeros(0, dtype=PACKED)


def _pending(db: sqlite3.Connection, term: int) -> np.ndarray:
    blobs = [row[0] for row in db.execute("SELECT postings FROM lexicon_pending WHERE term = ?", (term,))]
    return np.frombuffer(b"".join(blobs), dtype=PACKED)


def _write_packed(db: sqlite3.Connection, term: int, postings: np.ndarray) -> None:
    if len(postings):
        db.execute("INSERT OR REPLACE INTO lexicon_packed VALUES (?, ?)", (term, postings.tobytes()))
    else:
        db.execute("DELETE FROM lexicon_packed WHERE term = ?", (term,))


def _best_first(postings: np.ndarray, *, by_term: bool = False) -> np.ndarray:
    """Postings in the order a search reads them: highest impact first, ties by chunk id (grouped by
    term first, for a build's postings of many terms)."""
    keys = (postings["chunk"], -postings["impact"].astype(np.int32))
    return postings[np.lexsort((*keys, postings["term"]) if by_term else keys)]


def _fold_grown(db: sqlite3.Connection, term_ids: list[int]) -> None:
    """Fold the pending postings of those terms that have enough of them (FOLD_AT and a quarter of
    their packed array) or too many pending blobs."""
    grown = []
    for part, marks in in_batches(term_ids):
        grown += [r[0] for r in db.execute(
            f"SELECT id FROM lexicon_terms WHERE id IN ({marks}) "
            "AND ((pending >= ? AND pending * 4 >= packed) OR batches >= ?)", (*part, FOLD_AT, MOST_PENDING))]
    for term in grown:
        merged = _best_first(np.concatenate([_packed(db, term), _pending(db, term)]))
        _write_packed(db, term, merged)
        db.execute("DELETE FROM lexicon_pending WHERE term = ?", (term,))
        db.execute("UPDATE lexicon_terms SET pending = 0, batches = 0, packed = ? WHERE id = ?", (len(merged), term))


def build(db: sqlite3.Connection, chunks: int, rows: Iterable[tuple[int, str, str]], *, spill: Path) -> None:
    """Post every chunk of a store that has none posted yet (a store from before the lexicon): each
    term's postings straight into its packed array. They are spilled to files in `spill`, a share of
    the terms per file, and each file sorted in turn: memory stays small at a million chunks."""
    log.warning("building the lexical index for %d chunks (once)", chunks)
    for table in _TABLES:  # whatever an older format left
        db.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in SCHEMA.split(";"):  # not executescript: it would commit the writer's transaction
        if statement.strip():
            db.execute(statement)
    _save_totals(db, 0, 0)
    for leftover in spill.glob(f"{_SPILL_PREFIX}*"):  # a build killed before it cleaned up (we hold the write lock)
        shutil.rmtree(leftover, ignore_errors=True)
    bar = tqdm(total=chunks, desc="lexical index", unit=" chunks", file=sys.stderr, disable=None, dynamic_ncols=True)
    with tempfile.TemporaryDirectory(prefix=_SPILL_PREFIX, dir=spill) as folder:
        parts = [Path(folder) / f"{i}.postings" for i in range(_SPILL_FILES)]
        for batch in _batches(rows, _BUILD_BATCH):
            postings = _enter(db, batch)
            for i, path in enumerate(parts):
                with path.open("ab") as handle:
                    postings[postings["term"] % _SPILL_FILES == i].tofile(handle)
            bar.update(len(batch))
        bar.close()
        db.execute("UPDATE lexicon_terms SET packed = pending, pending = 0, batches = 0")
        for path in parts:
            for term, part in _by_term(_best_first(np.fromfile(path, dtype=_WITH_TERM), by_term=True)):
                _write_packed(db, term, part)
            path.unlink()


_SPILL_FILES = 16
_SPILL_PREFIX = "lexicon-build-"


def _batches(rows: Iterable, size: int) -> Iterable[list]:
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def search(db: sqlite3.Connection, words: Sequence[str], limit: int, *, depth: int,
           allowed: np.ndarray | None = None,
           passes: Callable[[list[int]], set[int]] | None = None) -> list[ScoredChunk]:
    """The best `limit` chunks for any of the words by BM25: only chunks in `allowed` (ids a filter
    lets through, listed) or, for a filter too broad to list, that `passes` lets through (asked
    only about the candidates that could rank).

    Each word's postings are read best first, `depth` of them, then four times deeper while needed.
    A word whose postings were not all read can add at most its bound (its idf times the weight of
    the last posting read) to a chunk it was not read for. The best candidates are scored in full
    from their own term lists; the search stops when no chunk it has not scored in full, read or
    not, could reach the EXACT_TOP-th full score (the top EXACT_TOP are then exact; the rest of
    the `limit` are ranked by what was read), or when every posting has been read."""
    totals = _totals(db)
    terms = list(dict.fromkeys(term for word in words for term in terms_of(word)))
    if not terms or not totals or not totals["chunks"] or (allowed is not None and not len(allowed)):
        return []
    bm25 = _BM25(totals["chunks"], totals["words"] / totals["chunks"])
    lists = []
    for term in terms:
        row = db.execute("SELECT id, chunks, pending, packed FROM lexicon_terms WHERE term = ?", (term,)).fetchone()
        if row is not None and row[1] > 0:
            lists.append(_TermPostings(*row, bm25))
    full: dict[int, float] = {}  # chunk id -> its score from its own term list
    if allowed is not None:  # as a mask over chunk ids: one lookup a posting
        mask = np.zeros(int(allowed.max(initial=-1)) + 1, dtype=bool)
        mask[allowed] = True
        allowed = mask
    verdicts = _Verdicts(passes)
    top = min(limit, EXACT_TOP)
    while True:
        for postings in lists:
            postings.read(db, depth, allowed)
        chunk_ids, where = np.unique(np.concatenate([p.chunks for p in lists] or [np.zeros(0, np.int64)]),
                                     return_inverse=True)
        partial = np.bincount(where, weights=np.concatenate([p.weights for p in lists] or [np.zeros(0)]),
                              minlength=len(chunk_ids))
        cut = [p for p in lists if p.bound > 0]
        if not cut:
            return verdicts.ranked(chunk_ids, partial, limit)  # every posting read: exact
        # What each candidate is at least (its full score, else what was read) and at most.
        scored = np.isin(chunk_ids, np.fromiter(full, dtype=np.int64, count=len(full)))
        lower = partial.copy()
        lower[scored] = [full[c] for c in chunk_ids[scored].tolist()]
        upper = partial + sum(p.bound * ~np.isin(chunk_ids, p.chunks) for p in cut)
        upper[scored] = lower[scored]
        # Candidates the filter turns away neither rank nor set the bar.
        out = verdicts.out(chunk_ids, lower, upper, top)
        bar = _kth(np.where(out, -np.inf, lower), top)
        unsure = np.flatnonzero(~scored & ~out & (upper >= bar))
        if len(unsure) > RESCORED:
            unsure = unsure[np.argsort(-upper[unsure], kind="stable")[:RESCORED]]
        full.update(zip(chunk_ids[unsure].tolist(), _full_scores(db, chunk_ids[unsure].tolist(), lists, bm25).tolist()))
        lower[unsure] = [full[c] for c in chunk_ids[unsure].tolist()]
        bar = _kth(np.where(out, -np.inf, lower), top)
        settled = not np.any(~np.isin(chunk_ids, chunk_ids[unsure]) & ~scored & ~out & (upper >= bar))
        if settled and sum(p.bound for p in cut) < bar:
            return verdicts.ranked(chunk_ids, lower, limit)
        depth *= 4


class _Verdicts:
    """What a filter too broad to list says of candidates: asked only about those that could rank,
    a batch at a time, best first."""

    BATCH = 500

    def __init__(self, passes: Callable[[list[int]], set[int]] | None) -> None:
        self.passes = passes
        self.passed: set[int] = set()
        self.failed: set[int] = set()

    def _known(self, chunk_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return (np.isin(chunk_ids, np.fromiter(self.passed, dtype=np.int64, count=len(self.passed))),
                np.isin(chunk_ids, np.fromiter(self.failed, dtype=np.int64, count=len(self.failed))))

    def _ask(self, ids: list[int]) -> None:
        allowed = self.passes(ids)
        self.passed.update(i for i in ids if i in allowed)
        self.failed.update(i for i in ids if i not in allowed)

    def out(self, chunk_ids: np.ndarray, lower: np.ndarray, upper: np.ndarray, top: int) -> np.ndarray:
        """Candidates out of the running: turned away, or not asked about because they cannot reach
        the top-th score among those let through."""
        if self.passes is None:
            return np.zeros(len(chunk_ids), dtype=bool)
        while True:
            passed, failed = self._known(chunk_ids)
            bar = _kth(np.where(passed, lower, -np.inf), top)
            unknown = np.flatnonzero(~passed & ~failed & (upper >= bar))
            if not len(unknown):
                return ~passed
            self._ask(chunk_ids[unknown[np.argsort(-upper[unknown], kind="stable")[:self.BATCH]]].tolist())

    def ranked(self, chunk_ids: np.ndarray, scores: np.ndarray, n: int) -> list[ScoredChunk]:
        """The n best that pass, asking about the rest best first."""
        if self.passes is None:
            return _ranked(chunk_ids, scores, n)
        order = np.lexsort((chunk_ids, -scores))
        kept: list[ScoredChunk] = []
        for start in range(0, len(order), self.BATCH):
            block = order[start:start + self.BATCH]
            ids = chunk_ids[block].tolist()
            unknown = [i for i in ids if i not in self.passed and i not in self.failed]
            if unknown:
                self._ask(unknown)
            kept += [(i, float(s)) for i, s in zip(ids, scores[block].tolist()) if i in self.passed]
            if len(kept) >= n:
                break
        return kept[:n]


# The top of a search that is exact: answers quote from the first few passages; the rest of the
# candidates only lend fusion its scale.
EXACT_TOP = 10
# Candidates scored in full in each round of a search, at most (those that could rank highest).
RESCORED = 200


class _TermPostings:
    """One query term's postings read so far: all its pending ones, its packed array best first to a
    depth; with each chunk's weight for the term."""

    def __init__(self, term_id: int, frequency: int, pending: int, packed: int, bm25: _BM25) -> None:
        self.term_id, self.frequency, self.bm25 = term_id, frequency, bm25
        self.idf = bm25.idf(frequency)
        self.pending, self.packed = pending, packed
        self.packed_read, self.last_impact = 0, 0
        self.chunks, self.weights = np.zeros(0, dtype=np.int64), np.zeros(0)

    def read(self, db: sqlite3.Connection, depth: int, allowed: np.ndarray | None) -> None:
        """Read on to `depth` postings of the packed array (and, the first time, the pending ones),
        keeping those of chunks `allowed` (a mask over chunk ids) lets through."""
        found = []
        if self.pending:
            found.append(_pending(db, self.term_id))
            self.pending = 0
        if self.packed_read < min(depth, self.packed):
            n = min(depth, self.packed) - self.packed_read
            with db.blobopen("lexicon_packed", "postings", self.term_id, readonly=True) as blob:
                blob.seek(self.packed_read * PACKED.itemsize)
                postings = np.frombuffer(blob.read(n * PACKED.itemsize), dtype=PACKED)
            self.packed_read += n
            found.append(postings)
            self.last_impact = int(postings["impact"][-1])
        if not found:
            return
        postings = np.concatenate(found)
        if allowed is not None:
            chunks = postings["chunk"]
            postings = postings[allowed[np.minimum(chunks, len(allowed) - 1)] & (chunks < len(allowed))]
        self.chunks = np.concatenate([self.chunks, postings["chunk"]])
        self.weights = np.concatenate([self.weights, self.idf * self.bm25.weight(postings["tf"], postings["length"])])

    @property
    def bound(self) -> float:
        """The most this term can add to a chunk it was not read for (0 once every posting is read)."""
        if self.packed_read >= self.packed:
            return 0.0
        return self.idf * self.bm25.weight_below(self.last_impact)


def _kth(scores: np.ndarray, k: int) -> float:
    return float(np.partition(scores, len(scores) - k)[len(scores) - k]) if len(scores) >= k else 0.0


def _ranked(chunk_ids: np.ndarray, scores: np.ndarray, n: int) -> list[ScoredChunk]:
    """The n best, best first, ties by chunk id (as the FTS5 query orders them)."""
    if len(scores) > n:
        within = np.flatnonzero(scores >= _kth(scores, n))  # the n best, and any tied with the last of them
    else:
        within = np.arange(len(scores))
    best = within[np.lexsort((chunk_ids[within], -scores[within]))][:n]
    return [(int(chunk_ids[i]), float(scores[i])) for i in best]


def _full_scores(db: sqlite3.Connection, chunk_ids: list[int], lists: list[_TermPostings], bm25: _BM25) -> np.ndarray:
    """Each chunk's BM25 for the query's terms, from the chunk's own terms."""
    idf_of = {p.term_id: p.idf for p in lists}
    query = np.array(sorted(idf_of), dtype=np.uint32)
    idfs = np.array([idf_of[t] for t in query.tolist()])
    rows = []
    for part, marks in in_batches(chunk_ids):
        rows += db.execute(f"SELECT chunk, length, terms, counts FROM lexicon_chunks WHERE chunk IN ({marks})",
                           part).fetchall()
    if not rows:
        return np.zeros(len(chunk_ids))
    # Every row's terms in one array, each marked with its row: one pass for all the candidates.
    sizes = np.array([len(row[2]) // 4 for row in rows])
    terms = np.frombuffer(b"".join(row[2] for row in rows), dtype=np.uint32)
    counts = np.frombuffer(b"".join(row[3] for row in rows), dtype=np.uint16)
    owner = np.repeat(np.arange(len(rows)), sizes)
    at = np.minimum(np.searchsorted(query, terms), len(query) - 1)
    hit = query[at] == terms
    lengths = np.array([row[1] for row in rows])[owner[hit]]
    scores = np.bincount(owner[hit], weights=idfs[at[hit]] * bm25.weight(counts[hit], lengths), minlength=len(rows))
    by_chunk = dict(zip((row[0] for row in rows), scores.tolist()))
    return np.array([by_chunk.get(chunk_id, 0.0) for chunk_id in chunk_ids])


class _BM25:
    """BM25 as FTS5 computes it, for a collection of `chunks` whose average length is `average`."""

    def __init__(self, chunks: int, average: float) -> None:
        self.chunks, self.average = chunks, average

    def idf(self, frequency: int) -> float:
        return max(math.log((self.chunks - frequency + 0.5) / (frequency + 0.5)), 1e-6)

    def weight(self, tf_halves, length):
        """The term-frequency part of a term's score (numpy arrays or numbers)."""
        tf = np.asarray(tf_halves) / 2
        return tf * (BM25_K1 + 1) / (tf + BM25_K1 * (1 - BM25_B + BM25_B * np.asarray(length) / self.average))

    def weight_below(self, impact: int) -> float:
        """The most a posting stored after one of this impact weighs. Impacts assume ORDER_LENGTH for
        the average length; against a longer average a chunk can weigh more than its impact says."""
        share = min((impact + 0.5) / _IMPACT_SCALE / (BM25_K1 + 1), 1.0)
        shrink = min(1.0, ORDER_LENGTH / self.average)
        # A hair above the algebra's bound: float rounding must never make it a hair below.
        return (BM25_K1 + 1) * share / (share + shrink * (1 - share)) * (1 + 1e-9)

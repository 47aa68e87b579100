"""What a store must look like after any crash: every article whole or absent, its search data in step.

For SQLite: FAISS, the BM25 postings (the lexicon) and SQLite in exact agreement. For PostgreSQL: chunks, vectors and
the BM25 statistics the triggers keep.

`check_index` reads the folder as a restarted process would, but first inspects the FAISS file of
the committed generation as it lies on disk: opening the store would silently rebuild a missing
or stale file from the stored vectors, which is the recovery path, not proof that the commit
protocol held. Every article is rechunked with the same Chunker, so "all its chunks" means the
exact spans the ingest would have written, not just "at least one".
"""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing
from pathlib import Path

import faiss
import numpy as np

from index.article import Article, content_hash
from index.chunk import Chunker
from index.ingest import embed_text
from index.store import SearchFilters
from index.store.sqlite import SQLiteStore
from index.store.sqlite_lexicon import terms_of


def check_index(folder: str | Path, *, chunker: Chunker, model_name: str, dim: int) -> dict[str, int]:
    """Asserts that the index in `folder` is whole and consistent; returns {article id: chunks}."""
    folder = Path(folder)
    with closing(sqlite3.connect(folder / "news.sqlite3")) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        generation = int(db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])
        articles = db.execute("SELECT rowid, id, title, text FROM articles").fetchall()
        chunks = db.execute("SELECT id, article, ordinal, start, end, embed_hash FROM chunks ORDER BY article, ordinal")
        chunks = chunks.fetchall()
        vectors = dict(db.execute("SELECT hash, vector FROM vectors WHERE model = ?", (model_name,)).fetchall())
        orphans = {
            table: db.execute(
                f"SELECT count(*) FROM {table} t LEFT JOIN articles a ON a.rowid = t.article WHERE a.rowid IS NULL"
            ).fetchone()[0]
            for table in ("chunks", "lsh", "article_collections", "also_reported")
        }
        without_collection = db.execute(
            "SELECT count(*) FROM articles a "
            "WHERE NOT EXISTS (SELECT 1 FROM article_collections c WHERE c.article = a.rowid)"
        ).fetchone()[0]
        bands = {n for (n,) in db.execute("SELECT (SELECT count(*) FROM lsh WHERE article = a.rowid) FROM articles a")}
        lexicon = _lexicon(db)
    assert orphans == dict.fromkeys(orphans, 0), orphans
    assert without_collection == 0
    assert len(bands) <= 1 and 0 not in bands, f"articles with different numbers of LSH keys: {bands}"

    chunk_ids = [c[0] for c in chunks]

    # FAISS: the committed generation's file exists and holds exactly the chunks, with their vectors.
    faiss_files = sorted(p.name for p in folder.glob("vectors-*.faiss"))
    path = folder / f"vectors-{generation}.faiss"
    if generation == 0:
        assert not chunk_ids, "chunks committed without a vector index generation"
    else:
        assert path.exists(), f"generation {generation} committed but {path.name} is missing ({faiss_files})"
        index = faiss.read_index(str(path))
        ids = faiss.vector_to_array(index.id_map)
        assert len(ids) == len(set(ids.tolist())), "a chunk is in FAISS twice"
        assert sorted(ids.tolist()) == sorted(chunk_ids), "FAISS ids and chunks differ"
        stored = faiss.downcast_index(index.index).reconstruct_n(0, index.ntotal)
        by_id = dict(zip(ids.tolist(), stored))
        hash_of = {c[0]: c[5] for c in chunks}
        for chunk_id, vector in by_id.items():
            expected = np.frombuffer(vectors[hash_of[chunk_id]], dtype=np.float32)
            assert np.array_equal(vector, expected), f"chunk {chunk_id}: FAISS vector differs from SQLite's"

    assert set(lexicon) == set(chunk_ids), "the lexicon's chunks and the chunks differ"

    def chunk_is_whole(chunk: tuple, article: Article, text: str) -> None:
        assert chunk[5] in vectors, f"{article.id}: chunk {chunk[2]} has no vector"
        # BM25: the chunk's title and text posted, the title's words counting half (tf is kept in halves).
        title_terms, body_terms = terms_of(article.title), terms_of(text)
        expected = Counter(title_terms) + Counter({term: 2 * n for term, n in Counter(body_terms).items()})
        assert lexicon[chunk[0]] == (expected, len(title_terms) + len(body_terms)), f"{article.id}: postings differ"

    found = _each_article_whole(articles, [(c[1], c[2], c[3], c[4], c[5], c) for c in chunks], chunker=chunker,
                                model_name=model_name, check=chunk_is_whole)

    # Restart: opening the store leaves only the committed generation's file, and loads it as is.
    store = SQLiteStore(folder, model_name=model_name, dim=dim)
    leftovers = sorted(p.name for p in folder.glob("vectors-*"))
    assert leftovers == ([path.name] if generation else []), leftovers
    query = np.full(dim, dim ** -0.5, dtype=np.float32)
    assert sorted(c for c, _ in store.dense_search(query, len(chunk_ids) + 1, SearchFilters())) == sorted(chunk_ids)
    store.close()
    return found


def _lexicon(db: sqlite3.Connection) -> dict[int, tuple[Counter, int]]:
    """{chunk id: (its terms' counts, its length)} as the postings hold them, after checking that the
    postings (pending blobs and packed arrays, the arrays best first), the chunks' own term lists, each term's
    counts and the totals all say the same."""
    from index.store.sqlite_lexicon import PACKED, impacts

    names = dict(db.execute("SELECT id, term FROM lexicon_terms"))
    posted: dict[int, tuple[Counter, set]] = {}
    where: Counter = Counter()  # (term, "pending" or "packed") -> postings; (term, "batches") -> pending blobs

    def post_all(term: int, postings, place: str) -> None:
        assert (postings["impact"] == impacts(postings["tf"], postings["length"])).all(), f"{names[term]!r}: impacts"
        for chunk, tf, length in zip(postings["chunk"].tolist(), postings["tf"].tolist(), postings["length"].tolist()):
            post(term, chunk, tf, length, place)

    def post(term: int, chunk: int, tf: int, length: int, place: str) -> None:
        counts, lengths = posted.setdefault(chunk, (Counter(), set()))
        assert names[term] not in counts, f"chunk {chunk} posted twice under {names[term]!r}"
        counts[names[term]] = tf
        lengths.add(length)
        where[term, place] += 1

    for term, blob in db.execute("SELECT term, postings FROM lexicon_pending"):
        pending = np.frombuffer(blob, dtype=PACKED)
        assert len(pending), f"{names[term]!r}: an empty pending blob"
        post_all(term, pending, "pending")
        where[term, "batches"] += 1
    for term, blob in db.execute("SELECT term, postings FROM lexicon_packed"):
        packed = np.frombuffer(blob, dtype=PACKED)
        order = np.lexsort((packed["chunk"], -packed["impact"].astype(np.int32)))
        assert len(packed) and (order == np.arange(len(packed))).all(), f"{names[term]!r}: packed out of order"
        post_all(term, packed, "packed")
    own = {}
    for chunk, length, terms, counts in db.execute("SELECT chunk, length, terms, counts FROM lexicon_chunks"):
        own[chunk] = (Counter(dict(zip((names[t] for t in np.frombuffer(terms, dtype=np.uint32).tolist()),
                                       np.frombuffer(counts, dtype=np.uint16).tolist()))), length)
    assert {c: (counts, {length}) for c, (counts, length) in own.items() if counts} == posted, \
        "the postings and the chunks' own term lists differ"
    documents = Counter(term for counts, _ in own.values() for term in counts)
    for term_id, term, *counts in db.execute("SELECT id, term, chunks, pending, batches, packed FROM lexicon_terms"):
        assert counts == [documents[term], *(where[term_id, place] for place in ("pending", "batches", "packed"))], term
    totals = json.loads(db.execute("SELECT value FROM meta WHERE key = 'lexicon'").fetchone()[0])
    assert (totals["chunks"], totals["words"]) == (len(own), sum(length for _, length in own.values())), totals
    return own


def check_postgres(url: str, *, chunker: Chunker, model_name: str) -> dict[str, int]:
    """Asserts that the PostgreSQL store at `url` is whole and consistent; returns {article id: chunks}."""
    import psycopg

    with psycopg.connect(url) as db:
        articles = db.execute("SELECT pk, id, title, text FROM articles").fetchall()
        chunks = db.execute("SELECT article, ordinal, start_offset, end_offset, embed_key, vector_dims(embedding), "
                            "length(terms) > 0 FROM chunks ORDER BY article, ordinal").fetchall()
        without_collection = db.execute("SELECT count(*) FROM articles a WHERE NOT EXISTS "
                                        "(SELECT 1 FROM article_collections c WHERE c.article = a.pk)").fetchone()[0]
        bands = {n for (n,) in db.execute("SELECT (SELECT count(*) FROM lsh WHERE article = a.pk) FROM articles a")}
        # The BM25 statistics are exactly what the chunks hold, however the writers were stopped.
        drift = db.execute(
            "SELECT count(*) FROM (SELECT lexeme, count(*) AS n FROM chunks, unnest(tsvector_to_array(terms)) AS lexeme "
            "GROUP BY lexeme) AS counted FULL JOIN lexeme_stats s USING (lexeme) WHERE counted.n IS DISTINCT FROM s.chunks"
        ).fetchone()[0]
        totals = db.execute("SELECT (SELECT count(*) FROM chunks) = chunks, "
                            "(SELECT coalesce(sum(term_count), 0) FROM chunks) = term_count FROM corpus_stats").fetchone()
        # Each lexeme's champion list: counted right, of chunks that exist and have the lexeme.
        champions = db.execute(
            "SELECT count(*) FROM lexeme_stats s LEFT JOIN (SELECT lexeme, count(*) AS n FROM lexeme_champions "
            "GROUP BY lexeme) AS c USING (lexeme) WHERE coalesce(c.n, 0) <> s.champions").fetchone()[0]
        strays = db.execute(
            "SELECT count(*) FROM lexeme_champions lc LEFT JOIN chunks c ON c.id = lc.chunk "
            "WHERE c.id IS NULL OR NOT c.terms @@ quote_literal(lc.lexeme)::tsquery").fetchone()[0]
    assert without_collection == 0
    assert len(bands) <= 1 and 0 not in bands, f"articles with different numbers of LSH keys: {bands}"
    assert drift == 0, f"{drift} lexemes' counts differ from the chunks"
    assert totals == (True, True), "corpus statistics differ from the chunks"
    assert champions == 0, f"{champions} lexemes' champion counts are wrong"
    assert strays == 0, f"{strays} champions of chunks that are gone or lack the lexeme"

    def chunk_is_whole(chunk: tuple, article: Article, text: str) -> None:
        assert chunk[5] and chunk[6], f"{article.id}: chunk {chunk[1]} lacks its vector or lexemes"

    return _each_article_whole(articles, [(*c[:5], c) for c in chunks], chunker=chunker, model_name=model_name,
                               check=chunk_is_whole)


def _each_article_whole(articles: list[tuple], chunks: list[tuple], *, chunker: Chunker, model_name: str,
                        check) -> dict[str, int]:
    """Every article holds exactly the chunks the chunker makes of its text, each under the right
    embedding key and passing `check(row, article, chunk text)`; returns {article id: chunks}.

    `articles` are (key, id, title, text); `chunks` are (article key, ordinal, start, end, embedding
    key, row) in order of article and ordinal."""
    by_article: dict[object, list[tuple]] = {}
    for chunk in chunks:
        by_article.setdefault(chunk[0], []).append(chunk)
    assert set(by_article) == {a[0] for a in articles}, "an article without chunks"
    found: dict[str, int] = {}
    for key, article_id, title, text in articles:
        article = Article(id=article_id, title=title, text=text)
        expected = chunker.run(article)
        stored = by_article[key]
        assert [c[1] for c in stored] == list(range(len(expected))), f"{article_id}: chunk ordinals"
        assert [(c[2], c[3]) for c in stored] == [(e.start, e.end) for e in expected], f"{article_id}: chunk spans"
        for chunk, want in zip(stored, expected):
            assert chunk[4] == content_hash(model_name + "\x00" + embed_text(article, want.text))
            check(chunk[5], article, want.text)
        found[article_id] = len(stored)
    return found

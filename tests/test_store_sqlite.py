"""What only the embedded backend has: a FAISS file and BM25 postings ordered by impact kept in step
with SQLite, one writer per folder, and a vector index that changes kind as the collection grows.

What every backend must do is in test_store_contract.py; these check the files on disk.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing

import numpy as np
import pytest
from conftest import WIRE, article, make_ingestor, shared_data
from index_invariants import check_index

from index.chunk import Chunker
from index.store import SearchFilters, StoreError
from index.store import sqlite as sqlite_backend
from index.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path, fake_embedder):
    return SQLiteStore(tmp_path / "data", model_name=fake_embedder.name, dim=fake_embedder.dim)


def consistent(store: SQLiteStore, embedder) -> dict[str, int]:
    """Asserts that FAISS, the BM25 postings and SQLite agree on disk; returns {article id: chunks}."""
    return check_index(store.dir, chunker=Chunker(embedder, max_tokens=40), model_name=embedder.name,
                       dim=embedder.dim)


def test_every_commit_keeps_faiss_fts_and_sqlite_in_step(store, fake_embedder):
    floods = article("Floods in the valley", WIRE)
    budget = article("Budget vote delayed", "Lawmakers delayed the budget vote again. " * 5)
    make_ingestor(store, fake_embedder).run([floods, budget])
    assert set(consistent(store, fake_embedder)) == {floods.id, budget.id}
    generation = store.stats()["generation"]
    make_ingestor(store, fake_embedder).run([floods, budget])
    assert store.stats()["generation"] == generation  # nothing new: no new FAISS file
    with store.writer() as writer:
        writer.remove_articles(article_id=floods.id)
        writer.commit()
    assert set(consistent(store, fake_embedder)) == {budget.id}


def test_embeddings_stay_cached_after_their_article_is_removed(store, fake_embedder):
    story = article("Floods", WIRE)
    make_ingestor(store, fake_embedder).run([story])
    computed = fake_embedder.encoded
    with store.writer() as writer:
        writer.remove_articles(article_id=story.id)
        writer.commit()
    assert consistent(store, fake_embedder) == {}
    make_ingestor(store, fake_embedder).run([story])
    assert fake_embedder.encoded == computed  # vectors came back from the cache


def test_a_stale_or_missing_vector_file_is_rebuilt(tmp_path, fake_embedder):
    store = SQLiteStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim)
    make_ingestor(store, fake_embedder).run([article("Floods", WIRE)])
    chunks = store.counts().chunks
    for path in (tmp_path / "d").glob("vectors-*.faiss"):
        path.unlink()
    reopened = SQLiteStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim)
    query = fake_embedder.encode(["floods river valley"])[0]
    assert len(reopened.dense_search(query, 100, SearchFilters())) == chunks


def test_only_one_writer_at_a_time(store):
    with store.writer():
        with pytest.raises(StoreError, match="another newsdesk process"):
            with store.writer():
                pass


def test_a_folder_built_with_another_model_is_refused(tmp_path):
    SQLiteStore(tmp_path / "d", model_name="model-a", dim=64)
    with pytest.raises(StoreError, match="model-a"):
        SQLiteStore(tmp_path / "d", model_name="model-b", dim=64)


def test_past_the_exact_limit_the_index_becomes_hnsw(tmp_path, fake_embedder):
    store = SQLiteStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim, exact_search_max=5)
    stories = [article(f"Story {i}", f"Report number {i} about topic {i}. " * 8) for i in range(4)]
    make_ingestor(store, fake_embedder).run(stories)
    assert store.stats()["vector_index"] == "hnsw"
    assert len(consistent(store, fake_embedder)) == 4


@pytest.mark.parametrize("listed_filter_limit", [5, 10_000], ids=["broad", "listed"])
@pytest.mark.parametrize("exact_search_max", [5, 10_000], ids=["graph", "flat"])
def test_broad_and_narrow_filters_both_search_only_what_they_allow(tmp_path, fake_embedder, monkeypatch,
                                                                    listed_filter_limit, exact_search_max):
    """A filter letting more than LISTED_FILTER_LIMIT chunks through is applied after a wider vector
    search, a narrower one before it, whether the index is flat or a graph; either way nothing outside
    the filter comes back. A listed filter's best chunks are exact, and BM25's best allowed chunks
    are the same as its best overall that the filter allows."""
    monkeypatch.setattr(sqlite_backend, "LISTED_FILTER_LIMIT", listed_filter_limit)
    store = SQLiteStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim,
                        exact_search_max=exact_search_max)
    stories = [article(f"Story {i}", f"Report number {i} on harbour {i % 7} and market {i % 5}. " * 6,
                       collection="guild:1" if i % 3 else "shared") for i in range(30)]
    make_ingestor(store, fake_embedder).run(stories)
    assert store.stats()["vector_index"] == ("hnsw" if exact_search_max == 5 else "exact")
    query = fake_embedder.encode(["harbour 3 market"])[0]
    found = store.dense_search(query, 10, SearchFilters(collections=("shared",)))
    rows = store.chunks_with_articles([chunk_id for chunk_id, _ in found])
    shared = {s.id for i, s in enumerate(stories) if not i % 3}
    assert len(found) == 10 and {rows[c][1].id for c, _ in found} <= shared
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
    if listed_filter_limit == 10_000 or exact_search_max == 10_000:  # listed, or a flat index: exact
        everything = store.dense_search(query, 1000, SearchFilters())
        rows = store.chunks_with_articles([chunk_id for chunk_id, _ in everything])
        best_shared = [hit for hit in everything if rows[hit[0]][1].id in shared][:10]
        assert [c for c, _ in found] == [c for c, _ in best_shared]
        assert scores == pytest.approx([s for _, s in best_shared], rel=1e-5)
    everything = store.lexical_search(["harbour", "market"], 1000, SearchFilters())
    rows = store.chunks_with_articles([chunk_id for chunk_id, _ in everything])
    best_shared = [hit for hit in everything if rows[hit[0]][1].id in shared][:10]
    assert store.lexical_search(["harbour", "market"], 10, SearchFilters(collections=("shared",))) == best_shared


def test_a_state_file_locked_too_long_is_a_store_error_the_loops_wait_out(store):
    """The bot's loops catch StoreError and retry; a raw sqlite3 error would end them."""
    import sqlite3
    from datetime import timedelta

    from index.store import Shards

    outbox = store.outbox
    holder = sqlite3.connect(store.dir / "feeds.sqlite3")
    holder.execute("BEGIN EXCLUSIVE")  # another process holding the file past the 10 s timeout
    try:
        with pytest.raises(StoreError, match="state file feeds.sqlite3 is busy"):
            outbox.take(holder="serve-0", shards=Shards(), lease=timedelta(minutes=1))
    finally:
        holder.rollback()
        holder.close()
    assert outbox.take(holder="serve-0", shards=Shards(), lease=timedelta(minutes=1)) == []


def bbc_stories(n: int) -> list:
    """The first n stories of the BBC corpus: real news text, real vocabulary."""
    with shared_data("bbc/corpus.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line, _ in zip(handle, range(n))]
    return [article(row["title"], row["text"], collection="guild:1" if i % 4 == 0 else "shared")
            for i, row in enumerate(rows)]


QUERIES = (["profit"], ["sales", "rose", "year"], ["government", "tax", "plans", "election"],
           ["Google", "shares", "market", "company", "said"], ["film", "award", "best", "actor"],
           ["mobile", "phone", "music", "technology"], ["zzzunheardof", "profit"])


def with_fts5(folder) -> None:
    """Index the store's chunks with FTS5 as newsdesk did before the lexicon (title, passage; porter)."""
    with closing(sqlite3.connect(folder / "news.sqlite3")) as db:
        db.executescript("CREATE VIRTUAL TABLE chunks_fts USING fts5(title, body, tokenize = 'porter unicode61')")
        for chunk_id, title, text, start, end in db.execute(
            "SELECT c.id, a.title, a.text, c.start, c.end FROM chunks c JOIN articles a ON a.rowid = c.article"
        ).fetchall():
            db.execute("INSERT INTO chunks_fts (rowid, title, body) VALUES (?, ?, ?)", (chunk_id, title, text[start:end]))
        db.commit()


def fts5_scores(folder, words: list[str]) -> dict[int, float]:
    """FTS5's own BM25 for the words, the title weighing half, as newsdesk queried it."""
    match = " OR ".join(f'"{w}"' for w in words)
    with closing(sqlite3.connect(folder / "news.sqlite3")) as db:
        return dict(db.execute("SELECT rowid, -bm25(chunks_fts, 0.5, 1.0) FROM chunks_fts WHERE chunks_fts MATCH ?",
                               (match,)).fetchall())


def test_bm25_from_the_impact_ordered_postings_is_fts5s_own(store, fake_embedder):
    """The lexicon cuts and stems words as FTS5's porter tokenizer does and scores as bm25() does:
    on real news, the same chunks with the same scores, in the same order."""
    make_ingestor(store, fake_embedder).run(bbc_stories(120))
    with_fts5(store.dir)
    for words in QUERIES:
        expected = fts5_scores(store.dir, words)
        found = store.lexical_search(words, 1000, SearchFilters())
        assert {chunk_id for chunk_id, _ in found} == set(expected), words
        for chunk_id, score in found:
            assert score == pytest.approx(expected[chunk_id], rel=1e-9), (words, chunk_id)
        assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)


@pytest.mark.parametrize("filters, listed", [(SearchFilters(), True), (SearchFilters(collections=("guild:1",)), True),
                                             (SearchFilters(collections=("guild:1",)), False)],
                         ids=["everything", "one server, listed", "one server, too many to list"])
def test_a_search_that_starts_shallow_reads_deeper_until_its_top_ten_is_exact(tmp_path, fake_embedder, monkeypatch,
                                                                               filters, listed):
    """A search reading two postings per word at first must deepen until nothing unread could beat its
    tenth result: the same top ten, with the same scores, as a search that reads every posting. A
    filter is a list of chunks when it is small enough, else asked about the candidates."""
    if not listed:
        monkeypatch.setattr(sqlite_backend, "LISTED_FILTER_LIMIT", 1)
    folder = tmp_path / "d"
    make_ingestor(SQLiteStore(folder, model_name=fake_embedder.name, dim=fake_embedder.dim),
                  fake_embedder).run(bbc_stories(120))
    shallow = SQLiteStore(folder, model_name=fake_embedder.name, dim=fake_embedder.dim, lexical_depth=2)
    whole = SQLiteStore(folder, model_name=fake_embedder.name, dim=fake_embedder.dim, lexical_depth=10**9)
    for words in QUERIES:
        found, expected = shallow.lexical_search(words, 10, filters), whole.lexical_search(words, 10, filters)
        assert [c for c, _ in found] == [c for c, _ in expected], words
        assert [s for _, s in found] == pytest.approx([s for _, s in expected], rel=1e-12), words


def test_a_store_from_before_the_lexicon_is_searched_by_fts5_until_a_writer_builds_it(store, fake_embedder):
    make_ingestor(store, fake_embedder).run(bbc_stories(40))
    before = [store.lexical_search(words, 20, SearchFilters()) for words in QUERIES]
    store.close()
    with_fts5(store.dir)  # what an older newsdesk left: FTS5, and no lexicon
    with closing(sqlite3.connect(store.dir / "news.sqlite3")) as db:
        db.executescript("DROP TABLE lexicon_pending; DROP TABLE lexicon_packed; DROP TABLE lexicon_chunks; "
                         "DROP TABLE lexicon_terms; DELETE FROM meta WHERE key = 'lexicon';")
    old = SQLiteStore(store.dir, model_name=fake_embedder.name, dim=fake_embedder.dim)
    by_fts5 = [old.lexical_search(words, 20, SearchFilters()) for words in QUERIES]
    assert [[c for c, _ in found] for found in by_fts5] == [[c for c, _ in found] for found in before]
    killed = store.dir / "lexicon-build-killed"  # what a build killed mid-way leaves
    killed.mkdir()
    (killed / "0.postings").write_bytes(b"\0" * 100)
    with old.writer():
        pass
    assert not killed.exists()
    assert consistent(old, fake_embedder)
    with closing(sqlite3.connect(store.dir / "news.sqlite3")) as db:
        assert db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'chunks_fts'").fetchone()[0] == 0
    assert [old.lexical_search(words, 20, SearchFilters()) for words in QUERIES] == before


def packed_terms(folder) -> int:
    """How many terms have their postings (some of them) in a packed array rather than in rows."""
    with closing(sqlite3.connect(folder / "news.sqlite3")) as db:
        return db.execute("SELECT count(*) FROM lexicon_packed").fetchone()[0]


def test_removals_take_their_postings_and_counts_with_them(store, fake_embedder):
    stories = bbc_stories(40)
    make_ingestor(store, fake_embedder).run(stories)
    assert packed_terms(store.dir) > 0  # common words' postings are packed: removal rewrites those too
    with store.writer() as writer:
        writer.remove_articles(article_id=stories[3].id)
        writer.remove_articles(collections=("guild:1",))
        writer.commit()
    kept = consistent(store, fake_embedder)
    assert stories[3].id not in kept and stories[0].id not in kept and stories[1].id in kept
    fresh = SQLiteStore(store.dir.parent / "fresh", model_name=fake_embedder.name, dim=fake_embedder.dim)
    make_ingestor(fresh, fake_embedder).run([s for s in stories if s.id in kept])
    for words in QUERIES:  # the same statistics as a store that never held the removed stories
        assert [s for _, s in store.lexical_search(words, 20, SearchFilters())] == \
            pytest.approx([s for _, s in fresh.lexical_search(words, 20, SearchFilters())], rel=1e-9), words


def test_a_commit_with_nothing_new_writes_nothing(store, fake_embedder):
    """A feed poll that finds nothing commits an empty batch: readers must not see a change (it would
    throw away every reader's cached list of a filter's chunks)."""
    make_ingestor(store, fake_embedder).run(bbc_stories(5))
    with closing(sqlite3.connect(store.dir / "news.sqlite3")) as reader:
        before = reader.execute("PRAGMA data_version").fetchone()[0]
        with store.writer() as writer:
            writer.commit()
            writer.remove_articles(article_id="no-such-article")
            writer.commit()
        assert reader.execute("PRAGMA data_version").fetchone()[0] == before
        make_ingestor(store, fake_embedder).run(bbc_stories(6)[5:])
        assert reader.execute("PRAGMA data_version").fetchone()[0] != before  # the check can see a write

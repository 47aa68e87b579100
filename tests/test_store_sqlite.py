"""What only the embedded backend has: a FAISS file and FTS5 postings kept in step with SQLite, one
writer per folder, and a vector index that changes kind as the collection grows.

What every backend must do is in test_store_contract.py; these check the files on disk.
"""

from __future__ import annotations

import numpy as np
import pytest
from conftest import WIRE, article, make_ingestor
from index_invariants import check_index

from index.chunk import Chunker
from index.store import SearchFilters, StoreError
from index.store import sqlite as sqlite_backend
from index.store.sqlite import SQLiteStore


@pytest.fixture
def store(tmp_path, fake_embedder):
    return SQLiteStore(tmp_path / "data", model_name=fake_embedder.name, dim=fake_embedder.dim)


def consistent(store: SQLiteStore, embedder) -> dict[str, int]:
    """Asserts that FAISS, FTS5 and SQLite agree on disk; returns {article id: chunks}."""
    return check_index(store.dir, chunker=Chunker(embedder.count_tokens, max_tokens=40), model_name=embedder.name,
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


@pytest.mark.parametrize("exact_filter_limit", [5, 10_000])
def test_broad_and_narrow_filters_both_search_only_what_they_allow(tmp_path, fake_embedder, monkeypatch,
                                                                    exact_filter_limit):
    """A filter letting more than EXACT_FILTER_LIMIT chunks through is applied after a wider vector
    search, a narrower one before it; either way nothing outside the filter comes back, and BM25's
    best allowed chunks are the same."""
    monkeypatch.setattr(sqlite_backend, "EXACT_FILTER_LIMIT", exact_filter_limit)
    store = SQLiteStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim)
    stories = [article(f"Story {i}", f"Report number {i} on harbour {i % 7} and market {i % 5}. " * 6,
                       collection="guild:1" if i % 3 else "shared") for i in range(30)]
    make_ingestor(store, fake_embedder).run(stories)
    query = fake_embedder.encode(["harbour 3 market"])[0]
    found = store.dense_search(query, 10, SearchFilters(collections=("shared",)))
    rows = store.chunks_with_articles([chunk_id for chunk_id, _ in found])
    shared = {s.id for i, s in enumerate(stories) if not i % 3}
    assert len(found) == 10 and {rows[c][1].id for c, _ in found} <= shared
    scores = [score for _, score in found]
    assert scores == sorted(scores, reverse=True) and np.isfinite(scores).all()
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

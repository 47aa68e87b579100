"""The index on disk: ingest, de-duplication, removal, and FAISS/SQLite agreement."""

from __future__ import annotations

import sqlite3

import pytest
from conftest import article

from index.chunk import Chunker
from index.ingest import Ingestor
from index.store import NewsStore, StoreError

WIRE = (
    "Heavy rains flooded the river valley on Tuesday, forcing thousands of residents to leave their homes. "
    "Emergency crews used boats to reach villages cut off by the water, officials said. "
    "The regional governor declared a state of emergency and asked the army for help with the evacuation. "
    "Forecasters expect more rain later in the week, and the river is still rising near the old bridge."
)


def make_ingestor(store, embedder, **kwargs):
    return Ingestor(store, embedder, chunker=Chunker(embedder.count_tokens, max_tokens=40), **kwargs)


@pytest.fixture
def store(tmp_path, fake_embedder):
    return NewsStore(tmp_path / "data", model_name=fake_embedder.name, dim=fake_embedder.dim)


def consistent(store: NewsStore) -> tuple[int, int]:
    """Asserts that FAISS, FTS5 and the chunk table agree; returns (articles, chunks)."""
    articles, chunks = store.counts()
    db = store.db
    assert store.vector_index().ntotal == chunks
    assert db.execute("SELECT count(*) FROM chunks_fts").fetchone()[0] == chunks
    orphans = db.execute(
        "SELECT count(*) FROM chunks c LEFT JOIN vectors v ON v.hash = c.embed_hash WHERE v.hash IS NULL"
    ).fetchone()[0]
    assert orphans == 0
    ids = set(store._all_vectors(db)[0].tolist())
    assert ids == {r[0] for r in db.execute("SELECT id FROM chunks")}
    return articles, chunks


def test_ingesting_twice_changes_nothing(store, fake_embedder):
    items = [article("Floods in the valley", WIRE), article("Budget vote delayed", "Lawmakers delayed the budget vote again. " * 5)]
    first = make_ingestor(store, fake_embedder).run(items)
    assert len(first.added) == 2 and first.chunks >= 2
    before = consistent(store)
    generation = store.generation()
    encoded = fake_embedder.encoded
    second = make_ingestor(store, fake_embedder).run(items)
    assert second.added == [] and [d.reason for d in second.duplicates] == ["already indexed"] * 2
    assert consistent(store) == before
    assert store.generation() == generation
    assert fake_embedder.encoded == encoded


def test_syndicated_copies_are_stored_once_with_the_other_outlets(store, fake_embedder):
    original = article("Floods force thousands from homes", WIRE, outlet="Wire Service", url="https://wire.example/floods")
    copy = article(
        "Thousands flee as valley floods", "By a staff writer. " + WIRE + " Copyright 2026.",
        outlet="Daily Paper", url="https://paper.example/2026/floods",
    )
    report = make_ingestor(store, fake_embedder).run([original, copy])
    assert report.added == [original.id]
    assert [(d.article_id, d.of, d.reason) for d in report.duplicates] == [(copy.id, original.id, "near-duplicate")]
    meta, _ = store.article(original.id)
    assert meta.also_reported_by == ("Daily Paper",)
    assert consistent(store) == (1, report.chunks)


def test_embeddings_are_cached_by_content(tmp_path, fake_embedder):
    store = NewsStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim)
    story = article("Floods", WIRE)
    make_ingestor(store, fake_embedder).run([story])
    computed = fake_embedder.encoded
    with store.writer() as writer:
        writer.remove_articles("a.id = ?", [story.id])
        writer.commit()
    assert consistent(store) == (0, 0)
    make_ingestor(store, fake_embedder).run([story])
    assert fake_embedder.encoded == computed  # vectors came back from the cache


def test_removal_and_expiry_keep_everything_in_step(store, fake_embedder):
    old = article("Old news", "An election was held a long time ago in the northern provinces. " * 3, days_ago=60)
    new = article("New news", WIRE, days_ago=1)
    make_ingestor(store, fake_embedder).run([old, new])
    with store.writer() as writer:
        removed = writer.remove_articles("a.sort_time < strftime('%s','now') - 30*86400", [])
        writer.commit()
    assert removed == [old.id]
    assert consistent(store)[0] == 1
    assert store.article(old.id) is None


def test_collections_record_who_added_an_article(store, fake_embedder):
    story = article("Floods", WIRE, collection="guild:1")
    make_ingestor(store, fake_embedder).run([story])
    make_ingestor(store, fake_embedder).run([story], collection="guild:2")
    rows = store.db.execute("SELECT collection FROM article_collections ORDER BY collection").fetchall()
    assert [r[0] for r in rows] == ["guild:1", "guild:2"]


def test_a_stale_or_missing_vector_file_is_rebuilt(tmp_path, fake_embedder):
    store = NewsStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim)
    make_ingestor(store, fake_embedder).run([article("Floods", WIRE)])
    chunks = store.counts()[1]
    for path in (tmp_path / "d").glob("vectors-*.faiss"):
        path.unlink()
    reopened = NewsStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim)
    assert reopened.vector_index().ntotal == chunks


def test_only_one_writer_at_a_time(store):
    with store.writer():
        with pytest.raises(StoreError, match="another newsdesk process"):
            with store.writer():
                pass


def test_a_folder_built_with_another_model_is_refused(tmp_path, fake_embedder):
    NewsStore(tmp_path / "d", model_name="model-a", dim=64)
    with pytest.raises(StoreError, match="model-a"):
        NewsStore(tmp_path / "d", model_name="model-b", dim=64)


def test_past_the_exact_limit_the_index_becomes_hnsw(tmp_path, fake_embedder):
    store = NewsStore(tmp_path / "d", model_name=fake_embedder.name, dim=fake_embedder.dim, exact_search_max=5)
    stories = [article(f"Story {i}", f"Report number {i} about topic {i}. " * 8) for i in range(4)]
    make_ingestor(store, fake_embedder).run(stories)
    assert store.is_approximate(store.vector_index())
    assert consistent(store)[0] == 4
    assert isinstance(store.db, sqlite3.Connection)


def test_stats_count_every_outlet_in_the_collections_asked_for(store, fake_embedder):
    stories = [article(f"Story {i}", f"Outlet {i} reports item {i}.", outlet=f"Outlet {i}",
                       collection="guild:1" if i % 2 else "shared") for i in range(1203)]
    stories.append(article("Story again", "The same outlet, spelled in capitals, once more.", outlet="OUTLET 0"))
    make_ingestor(store, fake_embedder).run(stories)
    assert store.stats()["outlets"] == 1203
    assert store.stats(("shared",))["outlets"] == 602
    assert store.stats(("guild:1",))["outlets"] == 601
    assert store.stats(("guild:2",))["outlets"] == 0


def test_removal_scoped_to_a_collection_leaves_the_others_theirs(store, fake_embedder):
    own = article("Own story", WIRE, collection="guild:1")
    both = article("Budget vote delayed", "Lawmakers delayed the budget vote again. " * 5, collection="guild:1")
    shared = article("Harbour crane contract", "The port awarded the crane contract to a local firm. " * 4)
    other = article("Ferry timetable", "The ferry will sail twice a day from November on. " * 4, collection="guild:2")
    ingest = make_ingestor(store, fake_embedder)
    ingest.run([own, both, shared, other])
    ingest.run([both], collection="shared")  # the same story from a shared feed: stored once, in both
    with store.writer() as writer:
        removed = writer.remove_articles("1", [], collections=("guild:1",))
        writer.commit()
    assert sorted(removed) == sorted([own.id, both.id])
    assert store.article(own.id) is None
    assert store.article(both.id, collections=("shared",)) is not None  # still the shared feed's
    assert store.article(both.id, collections=("guild:1",)) is None
    assert store.article(shared.id) is not None and store.article(other.id) is not None
    assert consistent(store)[0] == 3


def test_a_filter_sees_every_commit_that_changes_what_it_allows(store, fake_embedder):
    """The allowed chunk ids of a filter are kept between questions, but never past a commit: a new
    article, an old story added to another server's collection, a removal."""
    ingest = make_ingestor(store, fake_embedder)
    floods = article("Floods", WIRE, collection="guild:1")
    budget = article("Budget vote delayed", "Lawmakers delayed the budget vote again. " * 5, collection="guild:1")
    ingest.run([floods])

    def allowed(collection: str) -> set[int]:
        return set(store.chunk_ids_where(*store.filter_sql(collections=(collection,)), 100, reuse=True))

    def chunks_of(*stories) -> set[int]:
        marks = ",".join("?" * len(stories))
        rows = store.db.execute(f"SELECT c.id FROM chunks c JOIN articles a ON a.rowid = c.article WHERE a.id IN ({marks})",
                                [s.id for s in stories])
        return {r[0] for r in rows}

    assert allowed("guild:1") == chunks_of(floods) and allowed("guild:2") == set()
    assert allowed("guild:1") == chunks_of(floods)  # asked again: the same answer
    ingest.run([budget])
    assert allowed("guild:1") == chunks_of(floods, budget)
    ingest.run([floods], collection="guild:2")  # no new chunk, only a collection
    assert allowed("guild:2") == chunks_of(floods)
    with store.writer() as writer:
        writer.remove_articles("1", [], collections=("guild:1",))
        writer.commit()
    assert allowed("guild:1") == set() and allowed("guild:2") == chunks_of(floods)

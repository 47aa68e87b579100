"""Ingest embeds a batch's chunks a group at a time on its own thread while the articles after them
are read, cleaned and chunked: the model never waits for the whole batch to be prepared."""

from __future__ import annotations

import json
import threading

import pytest
from conftest import article, make_ingestor, shared_data
from fakes import FakeEmbedder

from index.store import SearchFilters
from index.store.sqlite import SQLiteStore


class RecordingEmbedder(FakeEmbedder):
    """Tells when it is first asked to encode; can be made to fail."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.started = threading.Event()
        self.fail = fail

    def encode(self, texts):
        self.started.set()
        if self.fail:
            raise RuntimeError("the model ran out of memory")
        return super().encode(texts)


def stories(n: int) -> list:
    """Real, distinct news stories (near-copies would be folded before they are embedded)."""
    with shared_data("bbc/corpus.jsonl").open(encoding="utf-8") as handle:
        rows = [json.loads(line) for line, _ in zip(handle, range(n))]
    return [article(row["title"], row["text"]) for row in rows]


def test_the_model_starts_on_a_batch_before_its_last_article_is_read(tmp_path):
    embedder = RecordingEmbedder()
    store = SQLiteStore(tmp_path / "d", model_name=embedder.name, dim=embedder.dim)
    many = stories(60)
    seen_before_last: list[bool] = []

    def read():
        for i, story in enumerate(many):
            if i == len(many) - 1:  # the last article of the one batch: has the model started without it?
                seen_before_last.append(embedder.started.wait(timeout=30))
            yield story

    ingestor = make_ingestor(store, embedder, batch_chunks=100_000)  # one batch for everything
    report = ingestor.run(read())
    assert seen_before_last == [True]
    assert len(report.added) == 60 and report.embedded == store.counts().chunks > 500
    assert store.lexical_search(["profit"], 100, SearchFilters())  # and it was all written


def test_a_model_failure_fails_the_ingest_and_writes_nothing(tmp_path):
    embedder = RecordingEmbedder(fail=True)
    store = SQLiteStore(tmp_path / "d", model_name=embedder.name, dim=embedder.dim)
    with pytest.raises(RuntimeError, match="ran out of memory"):
        make_ingestor(store, embedder).run(stories(10))
    assert store.counts().articles == 0
    embedder.fail = False
    assert len(make_ingestor(store, embedder).run(stories(10)).added) == 10  # and the next ingest works

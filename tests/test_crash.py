"""A SIGKILL at any moment of an ingest leaves FAISS, BM25 and SQLite in agreement, and a re-run completes it."""

import random
import signal
import subprocess
import sys
import time
from pathlib import Path

from test_store_ingest import consistent

from fakes import FakeEmbedder
from index.store import NewsStore

WORKER = Path(__file__).with_name("crash_worker.py")
ARTICLES = 1500


def test_killed_ingest_leaves_a_consistent_index_and_resumes(tmp_path):
    folder = tmp_path / "data"
    rng = random.Random(2)
    kills = 0
    for _ in range(6):
        child = subprocess.Popen([sys.executable, str(WORKER), str(folder), str(ARTICLES)], stdout=subprocess.PIPE)
        assert child.stdout.readline() == b"ready\n"
        time.sleep(rng.uniform(0.0, 1.0))
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            kills += 1
        child.wait(timeout=30)
        embedder = FakeEmbedder()
        store = NewsStore(folder, model_name=embedder.name, dim=embedder.dim)
        articles, chunks = consistent(store)
        assert articles <= ARTICLES
        # No article is half indexed: every stored article has all its chunks.
        partial = store.db.execute(
            "SELECT count(*) FROM articles a WHERE (SELECT count(*) FROM chunks c WHERE c.article = a.rowid) = 0"
        ).fetchone()[0]
        assert partial == 0
        leftovers = [p.name for p in folder.glob("*.tmp")]
        assert leftovers == [] or all(p.startswith("vectors-") for p in leftovers)
    assert kills >= 3, "the ingest finished before it could be killed; make it longer"
    finished = subprocess.run(
        [sys.executable, str(WORKER), str(folder), str(ARTICLES)], capture_output=True, text=True, timeout=300, check=True
    )
    added, duplicates = map(int, finished.stdout.split()[1:])
    store = NewsStore(folder, model_name="fake-bow", dim=64)
    assert consistent(store)[0] == ARTICLES
    assert added + duplicates == ARTICLES

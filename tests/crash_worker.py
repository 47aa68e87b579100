"""Run by test_crash.py in a child process: ingests N generated articles in small batches, forever
re-runnable. The parent kills it with SIGKILL at a random moment."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from conftest import article  # noqa: E402
from fakes import FakeEmbedder  # noqa: E402

from index.chunk import Chunker  # noqa: E402
from index.ingest import Ingestor  # noqa: E402
from index.store import NewsStore  # noqa: E402


def stories(n: int):
    for i in range(n):
        yield article(
            f"Story {i}",
            " ".join(f"Event {i}-{j} happened in city {i % 17} with {j} witnesses reporting details." for j in range(12)),
        )


if __name__ == "__main__":
    folder, count = sys.argv[1], int(sys.argv[2])
    embedder = FakeEmbedder()
    store = NewsStore(folder, model_name=embedder.name, dim=embedder.dim)
    print("ready", flush=True)
    report = Ingestor(store, embedder, chunker=Chunker(embedder.count_tokens, max_tokens=60), batch_chunks=40).run(
        stories(count)
    )
    print(len(report.added), len(report.duplicates), flush=True)

"""Run by test_crash.py: jobs in child processes that are killed with SIGKILL at a random moment.

Jobs (each prints "ready" once the index is open; a re-run completes what a killed run left):

    ingest FOLDER COUNT   ingest COUNT generated articles in small batches (many commits, so kills
                          land between and inside them)
    ingest-pg URL COUNT   the same into the PostgreSQL database at URL
    poll FOLDER CONFIG    poll the feeds named in CONFIG (JSON) with bot.feeds.FeedPoller, round
                          after round until killed; with --once, one round

`crash_worker.py JOB ARGS...` runs one job in this process. `crash_worker.py serve` reads lines
"DELAY JOB ARGS..." on stdin and runs each job in a forked child, which it kills with SIGKILL
DELAY seconds after the child said "ready" (a negative DELAY lets it finish), then answers with
one JSON line {"killed", "exit", "output"}. Forking from a process that has done the imports
saves the interpreter start on each of the many runs; killing from the parent (which has not
reaped the child yet) can never hit an unrelated process that reused the pid.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fakes import FakeEmbedder  # noqa: E402

from index.article import Article, make_article_id  # noqa: E402
from index.chunk import Chunker  # noqa: E402

WORDS = (
    "harbour council minister river valley storm election budget strike union court verdict police crowd "
    "market shares bank rates oil prices ferry bridge airport runway school teachers hospital doctors "
    "farmers harvest drought flood rescue crews army border talks treaty summit protest museum stadium "
    "festival mayor governor senate vote bill tax plan report survey scientists vaccine virus train "
    "tunnel road pipeline factory workers wages contract energy wind solar coal mine port cargo ship "
    "island coast village city region capital province northern southern eastern western spokesman "
    "officials residents witnesses investigators engineers volunteers lawyers judges voters leaders"
).split()
BATCH_CHUNKS = 40
MAX_TOKENS = 60


def chunker(embedder: FakeEmbedder) -> Chunker:
    return Chunker(embedder, max_tokens=MAX_TOKENS)


def story_text(seed: str, sentences: int) -> str:
    """Distinct prose per seed: random words, so no two stories are near-duplicates of each other."""
    rng = random.Random(seed)
    return " ".join(
        " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 16))).capitalize() + f" ({seed}-{n})."
        for n in range(sentences)
    )


def stories(count: int) -> list[Article]:
    published = datetime(2026, 1, 1, tzinfo=timezone.utc)
    out = []
    for i in range(count):
        text = story_text(f"story-{i}", 6 + i % 9)
        title = f"Story {i}: {text.split(' (')[0][:60]}"
        out.append(Article(id=make_article_id(text=title + text), title=title, text=text, outlet="Test Wire",
                           published=published + timedelta(minutes=i)))
    return out


def ingest(where: str, count: int, *, postgres: bool = False) -> None:
    from index.ingest import Ingestor

    embedder = FakeEmbedder()
    if postgres:
        from index.store.postgres import PostgresStore

        store = PostgresStore(where, model_name=embedder.name, dim=embedder.dim)
    else:
        from index.store.sqlite import SQLiteStore

        store = SQLiteStore(where, model_name=embedder.name, dim=embedder.dim)
    print("ready", flush=True)
    report = Ingestor(store, embedder, chunker=chunker(embedder), batch_chunks=BATCH_CHUNKS).run(stories(count))
    print(len(report.added), len(report.duplicates), len(report.failed), flush=True)


def poll(folder: str, config_file: str, once: bool) -> None:
    from bot.config import Config, FeedSettings
    from bot.feeds import FeedPoller, config_feeds
    from bot.service import NewsService

    settings = json.loads(Path(config_file).read_text())
    config = Config(base_dir=Path(folder))
    config.index.dir = str(Path(folder) / "data")
    config.fetch.timeout_seconds = 10
    service = NewsService(config, embedder=FakeEmbedder())
    registry = service.store.feeds
    registry.sync_config(config_feeds(FeedSettings(url=url) for url in settings["feeds"]))
    poller = FeedPoller(registry, service, every=timedelta(hours=1))
    print("ready", flush=True)

    async def rounds() -> None:
        while True:
            # Every feed, every round: the re-polls find duplicates, and a kill may land in any of it.
            results = await poller.run(feeds=registry.feeds())
            print(json.dumps([[r.feed.url, len(r.added), r.error] for r in results]), flush=True)
            if once:
                return

    asyncio.run(rounds())


def run_job(args: list[str]) -> None:
    mode, folder = args[0], args[1]
    if mode in ("ingest", "ingest-pg"):
        ingest(folder, int(args[2]), postgres=mode == "ingest-pg")
    elif mode == "poll":
        poll(folder, args[2], once="--once" in args[3:])
    else:
        raise SystemExit(f"unknown job {mode!r}")


def serve() -> None:
    # The imports the jobs need, done once here; nothing that starts threads or opens files.
    import bot.feeds  # noqa: F401
    import bot.service  # noqa: F401
    import index.ingest  # noqa: F401
    import index.store.postgres  # noqa: F401
    import index.sources.loader  # noqa: F401

    print("serving", flush=True)
    for line in sys.stdin:
        delay, *args = line.split()
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: run the job with its output going to the pipe
            os.close(read_end)
            os.dup2(write_end, 1)
            sys.stdout = os.fdopen(1, "w", closefd=False)
            code = 0
            try:
                run_job(args)
            except BaseException:  # noqa: BLE001 - reported through the exit code and stderr
                import traceback

                traceback.print_exc()
                code = 1
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        os.close(write_end)
        with os.fdopen(read_end) as output:
            first = output.readline()
            status = None
            if first == "ready\n" and float(delay) >= 0:
                time.sleep(float(delay))
                finished, status = os.waitpid(pid, os.WNOHANG)
                if not finished:
                    os.kill(pid, signal.SIGKILL)  # still running, and not reaped: the pid is still ours
                    status = None
            rest = output.read()
        if status is None:
            status = os.waitpid(pid, 0)[1]
        exit_code = os.waitstatus_to_exitcode(status)  # a child that ended just before the kill exits 0
        print(json.dumps({"killed": exit_code == -signal.SIGKILL, "exit": exit_code, "output": first + rest}),
              flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve()
    else:
        run_job(sys.argv[1:])

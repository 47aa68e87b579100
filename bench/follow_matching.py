"""Topic follows' cost at ingest: matching new articles against 10, 100 and 1,000 follows of one server.

A slice of a corpus (default: the first 300 BBC articles) is ingested end to end into fresh temporary
stores, once with no follows and once with the server holding the most follows measured (1,000),
rounds alternating which goes first. Inside each ingest the matcher's calls (`FollowMatcher.run`, as
`Ingestor._write` makes them: once per written batch) and the outbox writes of its matches are
timed, so the share of the ingest they take is measured on the ingest itself; the two ingests' rates
and their difference are the end-to-end view.

Then the articles and chunk vectors that ingest handed the matcher are matched again on their own,
against a real SQLite store holding 10, 100 and 1,000 follows (the matcher reads and prepares them at
most every bot.follows.REFRESH_SECONDS; the registry read is timed on its own): one article per call
(a feed poll that brings one new story) and the whole batch in one call (as a file or a busy feed's
ingest).

Follows' topics are short texts made from headlines of another part of the corpus (a few words each;
some with a "quoted phrase" that must appear, some with a -word that must not), their meaning
encoded by the same embedder, as `NewsService.follow` does; all at the normal level, and the most
of them once more all at broad (each article is then weighed against the news sections too).
"""

from __future__ import annotations

import random
import re
import statistics
import tempfile
import time
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path

import numpy as np

from bench.common import Progress, bench_config, latency_summary, plain_title, read_articles, write_slice
from bot.config import Config
from bot.follows import FollowMatcher, Topic
from index.embed import Embedder
from index.retrieve import STOPWORDS

GUILD_ID = 741_000_000_000_000_001
CHANNEL_BASE = 741_000_000_000_100_000
CHANNELS = 20  # a server's follows post in a score of channels
WARM_ARTICLES = 10
EXCLUSIONS = ("football", "celebrity", "rumours", "transfer", "film", "gossip", "cricket", "election")
_TOKEN = re.compile(r"[A-Za-z0-9][\w'’&.-]*\w|[A-Za-z0-9]")


# -- topics ----------------------------------------------------------------------------------------


def _content(token: str) -> bool:
    word = token.lower().strip("'’.")
    return word not in STOPWORDS and (len(word) > 2 or word.isdigit())


def _topic_from(title: str, number: int, variant: int) -> str | None:
    """A short topic as an admin might type it from a headline: 2-4 of its words, every sixth with its
    first two-word phrase quoted, every seventh with a -word left out. `variant` shifts the words taken,
    for a corpus with fewer headlines than follows."""
    tokens = _TOKEN.findall(plain_title(title))
    words = [t for t in tokens if _content(t)]
    size = 2 + number % 3
    if len(words) < 2 or variant >= len(words) - 1:
        return None
    chosen = words[variant:variant + size]
    text = " ".join(chosen)
    if number % 6 == 3:
        pairs = [(a, b) for a, b in zip(tokens, tokens[1:]) if _content(a) and _content(b)]
        if pairs:
            a, b = pairs[min(variant, len(pairs) - 1)]
            rest = [w for w in chosen if w not in (a, b)][:2]
            text = " ".join([f'"{a} {b}"', *rest])
    if number % 7 == 5:
        word = EXCLUSIONS[number % len(EXCLUSIONS)]
        if word not in text.lower():
            text += f" -{word}"
    return text


def make_topics(titles: Sequence[str], count: int, *, seed: int = 7) -> list[Topic]:
    """`count` distinct topics from `titles`, in an order drawn with a fixed seed (so the first ten are a
    mix of subjects, as are the first hundred); ValueError where the titles cannot give that many."""
    topics: list[Topic] = []
    seen: set[str] = set()
    number = 0
    for variant in range(4):
        for title in titles:
            text = _topic_from(title, number, variant)
            if text is None or text.lower() in seen:
                continue
            try:
                topic = Topic.parse(text)
            except ValueError:
                continue
            seen.add(text.lower())
            topics.append(topic)
            number += 1
        if len(topics) >= count:
            break
    if len(topics) < count:
        raise ValueError(f"only {len(topics)} distinct topics from {len(titles)} headlines; {count} wanted")
    random.Random(seed).shuffle(topics)
    return topics[:count]


# -- measuring -------------------------------------------------------------------------------------


class TimedMatcher:
    """The matcher as ingest calls it, timed; it keeps what ingest handed it (articles, chunk vectors)."""

    def __init__(self, inner: FollowMatcher) -> None:
        self.inner = inner
        self.seconds = 0.0
        self.batches: list[int] = []
        self.matches = 0
        self.added: list = []

    def run(self, added, **how):
        started = time.perf_counter()
        try:
            found = self.inner.run(added, **how)
        finally:
            self.seconds += time.perf_counter() - started
        self.batches.append(len(added))
        self.matches += len(found)
        self.added.extend(added)
        return found


def _config(config: Config, folder: Path) -> Config:
    clone = bench_config(config, folder)
    clone.store.backend = "sqlite"  # a store of its own in the temporary folder
    return clone


def _add_follows(store, topics: Sequence[Topic], vectors: np.ndarray, *, start: int = 0, limit: int,
                 level: str = "normal") -> None:
    for number in range(start, len(topics)):
        store.follows.add(guild_id=GUILD_ID, channel_id=CHANNEL_BASE + number % CHANNELS, topic=topics[number].text,
                          vector=vectors[number], level=level, created_by=1, limit=limit)


def _ingest_once(config: Config, embedder: Embedder, corpus_slice: Path, topics: Sequence[Topic], vectors: np.ndarray,
                 *, threshold: float, delay: timedelta) -> dict:
    from bot.service import NewsService

    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-follows-") as folder:
        service = NewsService(_config(config, Path(folder) / "index"), embedder=embedder)
        try:
            _add_follows(service.store, topics, vectors, limit=max(len(topics), 1))
            matcher = TimedMatcher(FollowMatcher(service.store.follows, threshold=threshold, encode=embedder.encode,
                                                 delay=delay))
            service.ingestor.matcher = matcher
            outbox = service.store.outbox
            queue, queued = outbox.add, [0.0]

            def timed_add(announcement):
                started = time.perf_counter()
                try:
                    return queue(announcement)
                finally:
                    queued[0] += time.perf_counter() - started

            outbox.add = timed_add  # the matches' announcements, written when the batch commits
            started = time.perf_counter()
            report = service.ingest([str(corpus_slice)])
            seconds = time.perf_counter() - started
        finally:
            service.store.close()
    if report.failed:
        raise RuntimeError(f"ingest failed: {report.failed[0].source}: {report.failed[0].reason}")
    return {"follows": len(topics), "seconds": seconds, "articles": len(report.added), "chunks": report.chunks,
            "match_seconds": matcher.seconds, "queue_seconds": queued[0], "batches": matcher.batches,
            "matches": matcher.matches, "added": matcher.added}


def _match_alone(matcher: FollowMatcher, registry, added: list, batches: list[int], *, rounds: int) -> dict:
    """One article per call, then the batches as ingest made them; the registry read on its own."""
    matcher.run(added[:1])  # topics parsed once per follow, as a long-running ingest has them
    single, matches, articles_matched, follows_matched = [], 0, 0, set()
    for pair in added:
        started = time.perf_counter()
        found = matcher.run([pair])
        single.append((time.perf_counter() - started) * 1000)
        matches += len(found)
        articles_matched += bool(found)
        follows_matched.update(a.follow_id for a in found)
    batch_seconds = []
    for _ in range(rounds):
        started, offset, batch_matches = time.perf_counter(), 0, 0
        for size in batches:
            batch_matches += len(matcher.run(added[offset:offset + size]))
            offset += size
        batch_seconds.append(time.perf_counter() - started)
        if batch_matches != matches:
            raise RuntimeError(f"the batch found {batch_matches} matches, one article at a time {matches}")
    reads = []
    for _ in range(max(5, rounds)):
        started = time.perf_counter()
        registry.follows()
        reads.append((time.perf_counter() - started) * 1000)
    return {"single": latency_summary(single),
            "batch_ms_per_article": round(min(batch_seconds) / len(added) * 1000, 4),
            "batch_ms_per_article_median": round(statistics.median(batch_seconds) / len(added) * 1000, 4),
            "registry_read_ms": round(statistics.median(reads), 3),
            "matches": matches, "articles_matched": articles_matched, "follows_matched": len(follows_matched)}


def run(config: Config, embedder: Embedder, corpus: Path, *, articles: int = 300,
        follow_counts: Sequence[int] = (10, 100, 1000), rounds: int = 3, threshold: float = 0.54,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    counts = sorted({int(n) for n in follow_counts})
    if not counts or counts[0] < 1:
        raise ValueError("follow_counts: at least one count, each at least 1")
    if rounds < 1:
        raise ValueError("rounds must be at least 1")
    most = counts[-1]
    delay = timedelta(minutes=config.follows.delivery_window_minutes)
    topics_start = articles + WARM_ARTICLES
    titles = [a.title for a in read_articles(corpus, start=topics_start) if a.title.strip()]
    topics = make_topics(titles, most)
    progress(f"follow_matching: encoding {most} topics made from headlines {topics_start + 1}+ of {corpus.name}")
    vectors = np.asarray(embedder.encode([t.meaning for t in topics]), dtype=np.float32)

    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-slice-") as folder:
        corpus_slice = Path(folder) / "slice.jsonl"
        lines = write_slice(corpus, corpus_slice, count=articles)
        warm = Path(folder) / "warm.jsonl"
        write_slice(corpus, warm, start=articles, count=WARM_ARTICLES)
        progress(f"follow_matching: warming up on {WARM_ARTICLES} articles with {most} follows")
        _ingest_once(config, embedder, warm, topics, vectors, threshold=threshold, delay=delay)
        runs: list[dict] = []
        for number in range(rounds):
            order = (0, most) if number % 2 == 0 else (most, 0)
            for follows in order:
                result = _ingest_once(config, embedder, corpus_slice, topics[:follows], vectors[:follows],
                                      threshold=threshold, delay=delay)
                runs.append(result)
            pair = {r["follows"]: r for r in runs[-2:]}
            progress(f"follow_matching: ingest round {number + 1}/{rounds}: "
                     + ", ".join(f"{n} follows {pair[n]['chunks'] / pair[n]['seconds']:.1f} chunks/s"
                                 for n in (0, most))
                     + f"; matching {pair[most]['match_seconds'] / pair[most]['seconds'] * 100:.2f}% of the ingest")
    reference = runs[0]
    added, batches = reference["added"], reference["batches"]
    if not added:
        raise RuntimeError("the ingest added no articles to match")
    for result in runs:
        if result["articles"] != len(added) or result["batches"] != batches:
            raise RuntimeError("two ingests of the same slice wrote different batches")

    def side(follows: int) -> dict:
        mine = [r for r in runs if r["follows"] == follows]
        seconds = [r["seconds"] for r in mine]
        n, chunks = len(added), reference["chunks"]
        return {
            "follows": follows,
            "ms_per_article": round(min(seconds) / n * 1000, 3),
            "ms_per_article_median": round(statistics.median(seconds) / n * 1000, 3),
            "articles_per_s": round(n / min(seconds), 3),
            "chunks_per_s": round(chunks / min(seconds), 2),
            "seconds": [round(s, 3) for s in seconds],
            "match_ms_per_article": round(statistics.median(r["match_seconds"] for r in mine) / n * 1000, 4),
            "queue_ms_per_article": round(statistics.median(r["queue_seconds"] for r in mine) / n * 1000, 4),
            "match_share": round(statistics.median(r["match_seconds"] / r["seconds"] for r in mine), 5),
            "follows_share": round(statistics.median((r["match_seconds"] + r["queue_seconds"]) / r["seconds"]
                                                     for r in mine), 5),
            "matches": mine[0]["matches"],
        }

    without, with_most = side(0), side(most)
    difference = with_most["ms_per_article"] - without["ms_per_article"]

    from bot.service import NewsService

    points = []
    # The most follows once more, all broad: each article is weighed against the news sections too.
    for level, level_counts in (("normal", counts), ("broad", [most])):
        with tempfile.TemporaryDirectory(prefix="newsdesk-bench-follows-") as folder:
            service = NewsService(_config(config, Path(folder) / "index"), embedder=embedder)
            try:
                registry = service.store.follows
                held = 0
                for count in level_counts:
                    _add_follows(service.store, topics[:count], vectors[:count], start=held, limit=most, level=level)
                    held = count
                    matcher = FollowMatcher(registry, threshold=threshold, encode=embedder.encode, delay=delay)
                    point = {"follows": count, "level": level,
                             **_match_alone(matcher, registry, added, batches, rounds=rounds)}
                    point["single_share_of_ingest"] = round(point["single"]["mean_ms"] / without["ms_per_article"], 5)
                    point["batch_share_of_ingest"] = round(point["batch_ms_per_article"] / without["ms_per_article"], 5)
                    points.append(point)
                    progress(f"follow_matching: {count} follows ({level}): one article per call p50 "
                             f"{point['single']['p50_ms']:.2f} ms, mean {point['single']['mean_ms']:.2f} ms; in "
                             f"ingest's batches {point['batch_ms_per_article']:.3f} ms per article; "
                             f"{point['matches']} matches")
            finally:
                service.store.close()

    with_phrase = sum(bool(t.required) for t in topics)
    with_exclusion = sum(bool(t.excluded) for t in topics)
    return {
        "corpus": corpus.name if corpus.parent.name == "" else f"{corpus.parent.name}/{corpus.name}",
        "articles_read": lines,
        "articles": len(added),
        "chunks": reference["chunks"],
        "ingest_batches": batches,
        "model": embedder.name,
        "threshold": threshold,
        "rounds": rounds,
        "topics": {"count": most, "from_articles_after": topics_start, "with_phrase": with_phrase,
                   "with_exclusion": with_exclusion, "channels": min(CHANNELS, most),
                   "mean_words": round(statistics.mean(len(t.meaning.split()) for t in topics), 2),
                   "examples": [t.text for t in topics[:8]]},
        "points": points,
        "ingest": {
            "estimator": "best round of each side (ms per article); shares are medians over rounds",
            "without_follows": without,
            "with_follows": with_most,
            "difference_ms_per_article": round(difference, 3),
            "difference_share": round(difference / with_most["ms_per_article"], 5),
        },
        # The target's figure: matching and queueing its matches, as a share of the ingest with the most follows.
        "follows_share_of_ingest": with_most["follows_share"],
    }

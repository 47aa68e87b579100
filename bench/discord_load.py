"""Load through Discord: concurrent `/ask`s to the real bot while it ingests a feed.

The unmodified discord.py bot (bot.discordbot.create_bot over a NewsService with the real model)
logs into the local Discord emulator (bench.discord_emulator). Its index is a fresh temporary one,
seeded with a slice of a corpus; a local HTTP server serves the next slice as an RSS feed, listed
in the config as a shared feed, so the bot's own poller starts ingesting it when the bot is ready,
in a worker thread as in production. Once that ingest is under way, `questions` slash commands
from different members arrive at once (the per-member and per-server rate limits are switched off:
this measures capacity). Reported: whether every question got an answer, the time from each interaction
to the bot's first response (the defer) and to its answer, the longest event-loop stall (a 5 ms
tick's lateness; the same tick in an idle process beside it shows what the shared machine alone
adds), whether the ingest really ran alongside, and the peak resident memory.
"""

from __future__ import annotations

import asyncio
import html
import logging
import re
import statistics
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench.common import (
    Progress, bench_config, latency_summary, peak_rss_mb, read_articles, reset_peak_rss, rss_mb, sample_questions,
    write_slice,
)
from bot.config import Config, FeedSettings
from index.article import Article

TICK = 0.005


# -- a local RSS feed ------------------------------------------------------------------------------


def rss_feed(articles: list[Article], *, title: str = "Bench feed",
             site: str = "https://feed.bench.invalid/") -> bytes:
    """An RSS 2.0 document carrying each article's full text (HTML paragraphs) in its description.

    Item links are `site` + the item's number: feeds served side by side need sites of their own,
    since an article's id comes from its link."""
    now = datetime.now(timezone.utc)
    items = []
    for n, article in enumerate(articles):
        paragraphs = "".join(f"<p>{html.escape(p)}</p>" for p in article.text.split("\n\n") if p.strip())
        link = f"{site}{n}"
        items.append(
            f"<item><title>{html.escape(article.title)}</title><link>{link}</link><guid>{link}</guid>"
            f"<pubDate>{format_datetime(now - timedelta(minutes=n))}</pubDate>"
            f"<description>{html.escape(paragraphs)}</description></item>"
        )
    return (f'<?xml version="1.0" encoding="UTF-8"?><rss version="2.0"><channel><title>{title}</title>'
            f"<link>{site}</link><description>bench</description>{''.join(items)}"
            f"</channel></rss>").encode("utf-8")


class FeedServer:
    """Serves feed documents on 127.0.0.1, the n-th at /feed/<n>.xml, and logs every fetch.

    With `gate` above 1, the first fetches are held until `gate` of them have arrived (at most
    `gate_timeout` seconds): processes that load at different speeds, one fetch each, then start
    together. `opened_at` is when the first fetches went through (wall clock, as `fetches`).
    """

    def __init__(self, documents: list[bytes], *, gate: int = 1, gate_timeout: float = 300.0) -> None:
        self.documents = documents
        self.fetches: list[tuple[int, float]] = []  # (feed number, wall-clock time its document was sent)
        self.gate, self.gate_timeout = gate, gate_timeout
        self.opened_at: float | None = None
        self.gate_timed_out = False
        self._arrived = 0
        self._gate = threading.Condition()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802
                match = re.fullmatch(r"/feed/(\d+)\.xml", self.path.split("?")[0])
                if not match or int(match[1]) >= len(owner.documents):
                    self.send_error(404)
                    return
                n = int(match[1])
                owner._through_gate()
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("Content-Length", str(len(owner.documents[n])))
                self.end_headers()
                self.wfile.write(owner.documents[n])
                owner.fetches.append((n, time.time()))

            def log_message(self, format: str, *args) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def url(self, n: int = 0) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/feed/{n}.xml"

    def fetch_counts(self) -> list[int]:
        """How many times each feed was fetched."""
        return [sum(1 for fetched, _ in self.fetches if fetched == n) for n in range(len(self.documents))]

    def _through_gate(self) -> None:
        with self._gate:
            if self.opened_at is not None:
                return
            self._arrived += 1
            if self._arrived < self.gate and self._gate.wait_for(lambda: self.opened_at is not None,
                                                                 self.gate_timeout):
                return
            if self.opened_at is None:  # the last fetch the gate waited for, or the wait ran out
                self.gate_timed_out = self._arrived < self.gate
                self.opened_at = time.time()
                self._gate.notify_all()

    def __enter__(self) -> FeedServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


# -- measurement helpers ---------------------------------------------------------------------------


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(f"{record.name}: {record.getMessage()}"[:300])


class _RssSampler:
    """Resident memory every 50 ms in a thread: the peak of the scenario, whatever came before."""

    def __init__(self) -> None:
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_mb())
            self._stop.wait(0.05)

    def __enter__(self) -> _RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(2)
        self.peak = max(self.peak, rss_mb())


class _TrackedIngest:
    """Wraps service.ingest to note when the poller's ingest began and ended (monotonic seconds)."""

    def __init__(self, service) -> None:
        self.inner = service.ingest
        self.started = threading.Event()
        self.done = threading.Event()
        self.start_at = self.end_at = None
        self.report = None
        self.error: str | None = None

    def __call__(self, *args, **kwargs):
        self.start_at = time.monotonic()
        self.started.set()
        try:
            self.report = self.inner(*args, **kwargs)
            return self.report
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self.end_at = time.monotonic()
            self.done.set()


_TICKER = """
import sys, threading, time
late = []
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
while not stop.is_set():
    before = time.perf_counter()
    time.sleep(%(tick)r)
    late.append(time.perf_counter() - before - %(tick)r)
late.sort()
print(max(late) * 1000, late[int(len(late) * 0.99)] * 1000, len(late))
"""


class SchedulerProbe:
    """The same 5 ms tick in a separate, idle process: how late the machine itself wakes a sleeper.

    On a shared two-core machine the operating system alone can delay a thread by tens of ms; this
    tells that apart from a stall the bot's own work causes (which only the bot's loop sees).
    """

    def __init__(self) -> None:
        self.process = None
        self.result: dict = {}

    def __enter__(self) -> SchedulerProbe:
        import subprocess
        import sys

        self.process = subprocess.Popen([sys.executable, "-c", _TICKER % {"tick": TICK}], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        return self

    def __exit__(self, *exc) -> None:
        try:
            out, _ = self.process.communicate("", timeout=10)
            worst, p99, ticks = out.split()
            self.result = {"max_lateness_ms": round(float(worst), 2), "p99_lateness_ms": round(float(p99), 3),
                           "ticks": int(ticks)}
        except Exception as exc:  # a figure for context only: never fail the section for it
            self.process.kill()
            self.result = {"error": f"{type(exc).__name__}: {exc}"}


async def watch_loop(ticks: list[tuple[float, float]], stop: asyncio.Event) -> None:
    """Sleeps TICK again and again until `stop`, noting (monotonic time, lateness in s) of every
    wake-up: how long the event loop was kept from running a ready task."""
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK)
        ticks.append((time.monotonic(), time.perf_counter() - before - TICK))


async def wait_answered(emulator, payloads: list[dict], timeout: float) -> int:
    """Until every interaction has at least one follow-up (an answer may come in several); returns how
    many have none after `timeout` (reported, not raised: the figures still count)."""
    prefix = f"/webhooks/{emulator.application_id}/"
    tokens = {payload["token"] for payload in payloads}
    deadline = time.monotonic() + timeout
    while True:
        seen = {c.path[len(prefix):].split("/")[0] for c in emulator.find("POST", prefix)}
        if tokens <= seen or time.monotonic() > deadline:
            return len(tokens - seen)
        await asyncio.sleep(0.01)


def response_figures(emulator, sent: list[tuple[dict, float]]) -> dict:
    """Of interactions sent at known moments (monotonic): how many were answered, and the time to
    the first response (the defer) and to the answer."""
    app = emulator.application_id
    first_response, answered_after, cited = [], [], 0
    for payload, at in sent:
        callbacks = emulator.find("POST", f"/interactions/{payload['id']}/{payload['token']}/callback")
        replies = emulator.find("POST", f"/webhooks/{app}/{payload['token']}")
        if callbacks:
            first_response.append((callbacks[0].at - at) * 1000)
        if replies:
            answered_after.append((replies[0].at - at) * 1000)
            cited += "[1]" in (replies[0].body or {}).get("content", "")
    return {
        "questions": len(sent),
        "answered": len(answered_after),
        "answers_with_citation": cited,
        "all_answered": len(answered_after) == len(sent),
        "first_response": latency_summary(first_response),
        "answer": latency_summary(answered_after),
    }


async def _wait_event(event: threading.Event, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not event.is_set():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


# -- the section -----------------------------------------------------------------------------------


def run(config: Config, embedder, corpus: Path, *, seed_articles: int = 200, feed_articles: int = 150,
        questions: int = 50, lead_seconds: float = 1.0, timeout: float = 600.0,
        progress: Progress | None = None) -> dict:
    from bench.discord_emulator import DiscordEmulator
    from bot.discordbot import create_bot
    from bot.service import NewsService

    progress = progress or Progress(False)
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-discord-") as folder:
        seed_file = Path(folder) / "seed.jsonl"
        write_slice(corpus, seed_file, count=seed_articles)
        feed_items = read_articles(corpus, start=seed_articles, count=feed_articles)
        cfg = bench_config(config, Path(folder) / "index")
        service = NewsService(cfg, embedder=embedder)
        progress(f"discord_load: seeding the index with {seed_articles} articles of {corpus.name}")
        started = time.perf_counter()
        seeded = service.ingest([str(seed_file)])
        out["seed"] = {"articles": len(seeded.added), "chunks": seeded.chunks,
                       "seconds": round(time.perf_counter() - started, 1)}
        asked = sample_questions(service.store, questions, seed=7)
        if len(asked) < questions:
            raise ValueError(f"the seed slice has only {len(asked)} articles for {questions} questions")
        tracked = _TrackedIngest(service)
        service.ingest = tracked  # the bot's poller calls this, in a worker thread
        errors = _Errors()
        logging.getLogger().addHandler(errors)
        voice = logging.getLogger("discord.client")  # "PyNaCl is not installed": voice is not ours to measure
        voice_level = voice.level
        voice.setLevel(logging.ERROR)
        try:
            with FeedServer([rss_feed(feed_items)]) as feed, DiscordEmulator(guilds=1) as emulator:
                cfg.discord.api_base, cfg.discord.gateway_url = emulator.api_base, emulator.gateway_url
                # Capacity is measured, not the rate limits: 50 questions in a minute from one server
                # would be past them, so the per-member and per-server buckets are switched off.
                cfg.discord.user_requests = cfg.discord.server_requests = 0
                cfg.discord.dev_guild_ids = []
                cfg.discord.digest_time = ""
                cfg.fetch.fetch_linked_pages = False  # the items link to a host that does not exist
                cfg.feeds.sources = [FeedSettings(url=feed.url())]
                reset_peak_rss()
                rss_start = rss_mb()
                with _RssSampler() as sampler, SchedulerProbe() as machine:
                    scenario = _Scenario(emulator, tracked, asked, lead_seconds=lead_seconds, timeout=timeout,
                                         progress=progress)
                    asyncio.run(scenario.main(create_bot, cfg, service))
                out.update(scenario.figures(emulator))
                out["event_loop"]["idle_process_same_tick"] = machine.result
                out["memory"] = {"rss_start_mb": round(rss_start, 1), "peak_rss_mb": round(peak_rss_mb(), 1),
                                 "peak_rss_sampled_mb": round(sampler.peak, 1)}
                out["feed_url_fetched"] = bool(feed.fetches)
        finally:
            logging.getLogger().removeHandler(errors)
            voice.setLevel(voice_level)
            service.ingest = tracked.inner
    report = tracked.report
    out["feed_ingest"] = {
        "articles_in_feed": len(feed_items),
        "added": len(report.added) if report else 0,
        "chunks": report.chunks if report else 0,
        "seconds": round(tracked.end_at - tracked.start_at, 2) if tracked.end_at and tracked.start_at else None,
        "error": tracked.error,
    }
    out["error_log_records"] = len(errors.messages)
    out["error_log_examples"] = errors.messages[:3]
    out["model"] = embedder.name
    out["corpus"] = f"{corpus.parent.name}/{corpus.name}"
    return out


class _Scenario:
    def __init__(self, emulator, tracked: _TrackedIngest, asked: list[tuple[str, str]], *, lead_seconds: float,
                 timeout: float, progress: Progress) -> None:
        self.emulator, self.tracked, self.asked = emulator, tracked, asked
        self.lead_seconds, self.timeout, self.progress = lead_seconds, timeout, progress
        self.sent: list[tuple[dict, float]] = []  # (interaction payload, monotonic time it was injected)
        self.ticks: list[tuple[float, float]] = []  # (monotonic time, lateness in s) of the watcher's ticks
        self.window: tuple[float, float] | None = None  # first question sent .. last answer received
        self.ready_at = self.finished_at = 0.0

    async def main(self, create_bot, cfg, service) -> None:
        emulator = self.emulator
        bot = await create_bot(cfg, service, guild_ready_timeout=0.05)
        async with bot:
            await bot.login("bench-token")
            runner = asyncio.create_task(bot.connect())
            ready = asyncio.create_task(bot.wait_until_ready())
            stop = asyncio.Event()
            watcher = None
            try:
                done, _ = await asyncio.wait({runner, ready}, timeout=60, return_when=asyncio.FIRST_COMPLETED)
                if runner in done:
                    runner.result()
                if ready not in done:
                    raise RuntimeError("the bot did not become ready")
                self.ready_at = time.monotonic()
                watcher = asyncio.create_task(watch_loop(self.ticks, stop))
                # The poller starts the feed's first poll as soon as the bot is ready.
                if not await _wait_event(self.tracked.started, 60):
                    raise RuntimeError("the feed poller did not start ingesting")
                await asyncio.sleep(self.lead_seconds)  # into the ingest's embedding work
                self.progress(f"discord_load: feed ingest running; sending {len(self.asked)} questions at once")
                first = time.monotonic()
                for n, (question, _) in enumerate(self.asked):
                    at = time.monotonic()
                    payload = await emulator.interaction("ask", {"question": question},
                                                         user=emulator.user(f"reader{n}"))
                    self.sent.append((payload, at))
                unanswered = await wait_answered(emulator, [payload for payload, _ in self.sent], self.timeout)
                if unanswered:
                    self.progress(f"discord_load: {unanswered} of {len(self.sent)} questions unanswered "
                                  f"after {self.timeout:.0f} s")
                self.window = (first, time.monotonic())
                self.progress("discord_load: every question answered; waiting for the feed ingest to finish")
                await _wait_event(self.tracked.done, self.timeout)
                self.finished_at = time.monotonic()
            finally:
                stop.set()
                if watcher is not None:
                    await watcher
                ready.cancel()
                await bot.close()
                await runner

    def figures(self, emulator) -> dict:
        window = self.window or (0.0, 0.0)
        in_window = [late for when, late in self.ticks if window[0] <= when <= window[1]]
        all_lates = [late for _, late in self.ticks]
        tracked = self.tracked
        overlap = 0.0
        if tracked.start_at and tracked.end_at and window[1] > window[0]:
            overlap = max(0.0, min(window[1], tracked.end_at) - max(window[0], tracked.start_at)) / (window[1] - window[0])
        unknown = [f"{c.method} {c.path}" for c in emulator.calls if c.unknown]
        return {
            **response_figures(emulator, self.sent),
            "questions_window_s": round(window[1] - window[0], 2),
            "ingest_overlap_share": round(overlap, 3),  # of the questions' window, with the ingest running
            "ingest_still_running_after_answers": bool(tracked.end_at is None or tracked.end_at > window[1]),
            "event_loop": {
                "tick_ms": TICK * 1000,
                "max_stall_ms": round(max(all_lates) * 1000, 2) if all_lates else None,
                "max_stall_during_questions_ms": round(max(in_window) * 1000, 2) if in_window else None,
                "median_lateness_ms": round(statistics.median(all_lates) * 1000, 3) if all_lates else None,
                "ticks": len(all_lates),
            },
            "unknown_routes": unknown[:5],
        }

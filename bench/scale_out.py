"""Past one process: ingest by one and by two `newsdesk worker` processes, and `/ask` through two bot
processes holding shards 0 and 1 of 2 against one process holding both.

Everything runs as an operator runs it: separate processes (`python -m bot.cli --config X worker`,
`newsdesk serve` through bench.serve_probe) with the real model, given the bench's config with
`[store] backend = "postgres"` and `[feeds] poll_in_bot = false`; one PostgreSQL with pgvector (the
database [store] url_env names, else an embedded server the bench starts in a temporary folder).

Ingest: `feeds` RSS feeds on a local HTTP server, each with `articles_per_feed` articles of its own
(consecutive slices of the corpus after the questions' slice, the full text in the items,
`fetch_linked_pages` off), listed as shared feeds. One run per worker count, each on a fresh
PostgreSQL schema (the embedding cache lives there, so every run embeds from scratch) and fresh data
folders. What is timed: from the moment every worker has asked for its first feed (the server holds
the first fetches until all workers have asked, so loading the model is left out and the workers
start together) to the end of the last feed's poll (the latest `last_polled` the workers record,
after the feed's articles are committed). Reported per run: articles and chunks stored, articles/s
and chunks/s, each feed's fetches, and the load average before and after; then the ratio of two
workers' chunks/s to one's. Each worker's torch uses every core, so on a small machine two workers
share the same cores.

Questions: the first `ask_articles` articles of the corpus ingested once (NewsService, the same
model) into a schema of their own. Then, each on a fresh Discord emulator with two guilds (one per
shard): two processes holding shards 0 and 1 of 2, and one process holding both (`[discord]
shard_ids`; rate limits off: this measures capacity). After one warm-up question per guild,
`questions` `/ask`s arrive at once, alternating between the guilds. Reported per layout: questions
answered, time to the first response (the defer) and to the answer (p50/p95), whether each guild's
interactions reached only the process holding its shard, each process's longest event-loop stall (a
5 ms tick) while the questions were in flight and over its bot's whole life (connecting and the
warm-ups too), the same tick in an idle process beside them (what the machine alone adds), and the
load average before and after.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

from bench.backends import BenchDatabase
from bench.common import Progress, bench_config, read_articles, sample_questions, write_slice
from bench.discord_emulator import DiscordEmulator
from bench.discord_load import FeedServer, SchedulerProbe, response_figures, rss_feed, wait_answered
from bot.config import Config, FeedSettings
from index.store import drop_namespace, open_store, upgrade_database

ROOT = Path(__file__).resolve().parents[1]  # the processes run from the checkout, as `python -m bot.cli`
SHARDS = 2
LAYOUTS = (("two processes", ("0", "1")), ("one process", ("0-1",)))
GATE_TIMEOUT = 300.0  # seconds the first fetches wait for the other workers' (their model loads)


# -- the processes ---------------------------------------------------------------------------------


def _toml(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return repr(value)


def config_toml(config: Config) -> str:
    """The whole config as a config.toml, for a process of its own (paths should be absolute)."""
    lines = []
    for section in dataclasses.fields(config):
        settings = getattr(config, section.name)
        if not dataclasses.is_dataclass(settings):
            continue
        lines.append(f"[{section.name}]")
        tables = []
        for key in dataclasses.fields(settings):
            value = getattr(settings, key.name)
            if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
                tables += [(f"{section.name}.{key.name}", item) for item in value]
            else:
                lines.append(f"{key.name} = {_toml(value)}")
        for name, item in tables:
            lines.append(f"[[{name}]]")
            lines += [f"{k} = {_toml(v)}" for k, v in dataclasses.asdict(item).items()]
    return "\n".join(lines) + "\n"


class Processes:
    """The newsdesk processes of one run, each with its config file and its log in `folder`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.running: dict[str, subprocess.Popen] = {}

    def start(self, name: str, config: Config, *args: str, loop_report: Path | None = None) -> None:
        """`newsdesk --config <name>.toml ARGS`; with `loop_report`, through bench.serve_probe."""
        path = self.folder / f"{name}.toml"
        path.write_text(config_toml(config), encoding="utf-8")
        entry = ["bench.serve_probe", "--report", str(loop_report)] if loop_report else ["bot.cli"]
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DISCORD_TOKEN": f"bench-{name}"}
        with open(self.folder / f"{name}.log", "w") as log:
            self.running[name] = subprocess.Popen([sys.executable, "-m", *entry, "--config", str(path), *args],
                                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)

    def check(self) -> None:
        """RuntimeError, with the end of its log, if a process has exited."""
        for name, process in self.running.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with status {process.returncode}: {self.log_tail(name)}")

    def log_tail(self, name: str, chars: int = 1500) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.running.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until(predicate: Callable[[], object], processes: Processes, what: str, timeout: float) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        processes.check()
        time.sleep(0.1)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")


def _load_average() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _fresh_schema(settings, embedder) -> None:
    drop_namespace(settings)
    upgrade_database(settings, model_name=embedder.name, dim=embedder.dim)


def _open(settings, embedder):
    return open_store(settings, data_dir="", model_name=embedder.name, dim=embedder.dim)


# -- ingest by workers -----------------------------------------------------------------------------


def _ingest_run(config: Config, embedder, documents: list[bytes], *, workers: int, folder: Path, timeout: float,
                progress: Progress) -> dict:
    settings = dataclasses.replace(config.store, schema=f"bench_scale_out_{workers}w")
    _fresh_schema(settings, embedder)
    processes = Processes(folder / f"ingest-{workers}w")
    store = _open(settings, embedder)
    try:
        with FeedServer(documents, gate=workers, gate_timeout=GATE_TIMEOUT) as server:
            cfg = copy.deepcopy(config)
            cfg.store = settings
            cfg.feeds.sources = [FeedSettings(url=server.url(n)) for n in range(len(documents))]
            load_before = _load_average()
            started = time.time()
            for i in range(workers):
                cfg.index.dir = str(processes.folder / f"data-worker{i}")  # its own, empty
                processes.start(f"worker{i}", cfg, "worker")
            progress(f"scale_out: {workers} worker(s) polling {len(documents)} feeds")

            def polled():
                feeds = store.feeds.feeds()
                return feeds if len(feeds) == len(documents) and all(f.last_polled for f in feeds) else None

            feeds = _wait_until(polled, processes, f"{workers} worker(s) to poll every feed", timeout)
            load_after = _load_average()
            counts = store.counts()
            fetches = server.fetch_counts()
            opened_at, gate_timed_out = server.opened_at, server.gate_timed_out
    finally:
        processes.stop()
        store.close()
    errors = [f"{f.url}: {f.last_error}" for f in feeds if f.last_error]
    if errors:
        raise RuntimeError(f"feeds failed: {'; '.join(errors)}")
    finished = max(f.last_polled.timestamp() for f in feeds)
    seconds = finished - opened_at
    return {
        "workers": workers, "seconds": round(seconds, 3),
        "seconds_from_process_start": round(finished - started, 2),  # the model's loading too
        "articles": counts.articles, "chunks": counts.chunks,
        "articles_per_s": round(counts.articles / seconds, 2), "chunks_per_s": round(counts.chunks / seconds, 2),
        "fetches_per_feed": fetches, "start_gate_timed_out": gate_timed_out,
        "load_average_before": load_before, "load_average_after": load_after,
    }


def _ingest(config: Config, embedder, corpus: Path, *, start: int, feeds: int, articles_per_feed: int,
            workers: tuple[int, ...], folder: Path, timeout: float, progress: Progress) -> dict:
    articles = read_articles(corpus, start=start, count=feeds * articles_per_feed)
    documents = [rss_feed(articles[n * articles_per_feed:(n + 1) * articles_per_feed], title=f"Bench feed {n}",
                          site=f"https://feed{n}.bench.invalid/") for n in range(feeds)]
    runs = []
    for n in workers:
        runs.append(_ingest_run(config, embedder, documents, workers=n, folder=folder, timeout=timeout,
                                progress=progress))
        progress(f"scale_out: {n} worker(s): {runs[-1]['chunks']} chunks in {runs[-1]['seconds']} s, "
                 f"{runs[-1]['chunks_per_s']} chunks/s")
    by_workers = {run["workers"]: run for run in runs}
    ratio = None
    if 1 in by_workers and 2 in by_workers:
        ratio = round(by_workers[2]["chunks_per_s"] / by_workers[1]["chunks_per_s"], 3)
    return {
        "feeds": feeds, "items_in_feeds": len(articles), "runs": runs, "ratio_2_workers_to_1": ratio,
        "same_articles_every_run": len({(run["articles"], run["chunks"]) for run in runs}) == 1,
        "timed": "from the moment every worker had asked for its first feed (the feed server held the first "
                 "fetches until then: model loading left out) to the last feed's recorded end of poll, after "
                 "its articles were committed",
    }


# -- questions through two shards -----------------------------------------------------------------


async def _ask(emulator, asked: list[tuple[str, str]], *, timeout: float, progress: Progress):
    """Warm-up questions, then every question at once. Returns the warm-ups' payloads, the questions'
    (payload, monotonic time sent), and the window from the first question to the last answer."""
    app = emulator.application_id
    warm_ups = []
    for guild in range(SHARDS):  # each process embeds a query once before the measured ones
        for attempt in range(12):  # a process just connected may not take interactions yet
            warm = await emulator.interaction("ask", {"question": asked[0][0]}, user=emulator.user("warm-up"),
                                              guild=guild)
            warm_ups.append(warm)
            try:
                await emulator.wait_for("POST", f"/webhooks/{app}/{warm['token']}", timeout=10)
                break
            except TimeoutError:
                if attempt == 11:
                    raise
    progress(f"scale_out: sending {len(asked)} questions at once")
    sent = []
    first = time.monotonic()
    for n, (question, _) in enumerate(asked):
        at = time.monotonic()
        payload = await emulator.interaction("ask", {"question": question}, user=emulator.user(f"reader{n}"),
                                             guild=n % SHARDS)
        sent.append((payload, at))
    unanswered = await wait_answered(emulator, [payload for payload, _ in sent], timeout)
    if unanswered:
        progress(f"scale_out: {unanswered} of {len(sent)} questions unanswered after {timeout:.0f} s")
    return warm_ups, sent, (first, time.monotonic())


def _event_loop(report: dict, window: tuple[float, float]) -> dict:
    ticks = report["ticks"]
    during = [late for at, late in ticks if window[0] <= at <= window[1]]
    return {"tick_ms": report["tick_ms"], "ticks": len(ticks),
            "max_stall_during_questions_ms": max(during, default=None),
            # from the bot's creation (the model loaded) to the end: connecting and the warm-ups too
            "max_stall_ms": max((late for _, late in ticks), default=None)}


def _layout(config: Config, asked: list[tuple[str, str]], *, label: str, shard_sets: tuple[str, ...],
            folder: Path, timeout: float, progress: Progress) -> dict:
    processes = Processes(folder / label.replace(" ", "-"))
    reports, held = {}, {}
    with DiscordEmulator(guilds=SHARDS, shards=SHARDS) as emulator:
        cfg = copy.deepcopy(config)
        cfg.discord = dataclasses.replace(cfg.discord, api_base=emulator.api_base, gateway_url=emulator.gateway_url)
        try:
            for shards in shard_sets:
                name = f"serve-{shards}"
                cfg.index.dir = str(processes.folder / f"data-{name}")
                cfg.discord = dataclasses.replace(cfg.discord, shard_ids=shards)
                held[name] = cfg.discord.shards
                reports[name] = processes.folder / f"{name}-loop.json"
                processes.start(name, cfg, "serve", loop_report=reports[name])
            progress(f"scale_out: {label} (shards {', '.join(shard_sets)} of {SHARDS}) connecting")
            _wait_until(lambda: {(s, SHARDS) for s in range(SHARDS)} <= set(emulator.identified), processes,
                        "every shard to connect", timeout)
            _wait_until(lambda: emulator.find("PUT", f"/applications/{emulator.application_id}/commands"),
                        processes, "the slash commands to be registered", timeout)
            load_before = _load_average()
            with SchedulerProbe() as machine:
                warm_ups, sent, window = asyncio.run(_ask(emulator, asked, timeout=timeout, progress=progress))
            load_after = _load_average()
            processes.check()
        finally:
            processes.stop()
        figures = response_figures(emulator, sent)
        shard_of = {str(g): emulator.shard_of(g, SHARDS) for g in emulator.guild_ids}
    sent_by_guild = Counter(payload["guild_id"] for payload in warm_ups + [payload for payload, _ in sent])
    by_process = {}
    for name, path in reports.items():
        report = json.loads(path.read_text(encoding="utf-8"))
        by_process[name] = {
            "shards": list(held[name]),
            "interactions_received": report["interactions"],
            # every interaction of its shards' guilds (warm-ups included), none of the others'
            "received_its_shards_guilds_only": report["interactions"] == {
                g: n for g, n in sent_by_guild.items() if shard_of[g] in held[name]},
            "event_loop": _event_loop(report, window),
        }
    return {
        "layout": label, **figures, "warm_up_questions": len(warm_ups),
        "questions_window_s": round(window[1] - window[0], 2),
        "each_guild_answered_by_its_shards_process": all(p["received_its_shards_guilds_only"]
                                                         for p in by_process.values()),
        "processes": by_process, "idle_process_same_tick": machine.result,
        "load_average_before": load_before, "load_average_after": load_after,
    }


def _asks(config: Config, embedder, corpus: Path, *, ask_articles: int, questions: int, folder: Path,
          timeout: float, progress: Progress) -> dict:
    from bot.service import NewsService

    cfg = copy.deepcopy(config)
    cfg.store = dataclasses.replace(config.store, schema="bench_scale_out_ask")
    cfg.index.dir = str(folder / "ask-ingest")
    _fresh_schema(cfg.store, embedder)
    slice_file = folder / "ask-slice.jsonl"
    write_slice(corpus, slice_file, count=ask_articles)
    progress(f"scale_out: ingesting {ask_articles} articles of {corpus.name} for the questions")
    service = NewsService(cfg, embedder=embedder)
    try:
        report = service.ingest([str(slice_file)])
        asked = sample_questions(service.store, questions, seed=7)
    finally:
        service.store.close()
    if len(asked) < questions:
        raise ValueError(f"the slice has only {len(asked)} articles for {questions} questions")
    layouts = [_layout(cfg, asked, label=label, shard_sets=shard_sets, folder=folder, timeout=timeout,
                       progress=progress) for label, shard_sets in LAYOUTS]
    for layout in layouts:
        progress(f"scale_out: {layout['layout']}: {layout['answered']}/{layout['questions']} answered, answer p95 "
                 f"{layout['answer'].get('p95_ms')} ms")
    return {"index": {"articles": len(report.added), "chunks": report.chunks}, "questions": len(asked),
            "layouts": layouts}


# -- the section -----------------------------------------------------------------------------------


def run(config: Config, embedder, corpus: Path, *, feeds: int = 6, articles_per_feed: int = 50,
        workers: tuple[int, ...] = (1, 2), ask_articles: int = 200, questions: int = 50, timeout: float = 900.0,
        progress: Progress | None = None) -> dict:
    progress = progress or Progress(False)
    with tempfile.TemporaryDirectory(prefix="newsdesk-bench-scale-out-") as tmp:
        folder = Path(tmp)
        database = BenchDatabase(folder, config.store, progress, tune=False)
        try:
            base = bench_config(config, folder / "data")
            base.store = dataclasses.replace(base.store, backend="postgres", url_env=BenchDatabase.URL_ENV,
                                             read_url_env="")
            base.fetch.allow_hosts = ["127.0.0.1"]
            base.fetch.fetch_linked_pages = False  # the items link to hosts that do not exist
            base.fetch.timeout_seconds = max(base.fetch.timeout_seconds, GATE_TIMEOUT + 60)  # a held first fetch
            base.feeds.poll_in_bot = False
            base.feeds.poll_minutes = 24 * 60.0  # one poll per feed in a run
            base.feeds.sources = []
            base.discord = dataclasses.replace(base.discord, shard_count=SHARDS, user_requests=0, server_requests=0,
                                               dev_guild_ids=[], digest_time="", post_headlines=False)
            out = {"ingest": _ingest(base, embedder, corpus, start=ask_articles, feeds=feeds,
                                     articles_per_feed=articles_per_feed, workers=tuple(workers), folder=folder,
                                     timeout=timeout, progress=progress)}
            out["ask"] = _asks(base, embedder, corpus, ask_articles=ask_articles, questions=questions,
                               folder=folder, timeout=timeout, progress=progress)
            out["postgres"] = database.settings()
        finally:
            database.close()
    out["model"] = embedder.name
    out["corpus"] = f"{corpus.parent.name}/{corpus.name}"
    return out

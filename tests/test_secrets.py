"""The Discord token and the LLM API key never appear in logs, error messages, replies or exceptions.

Two full runs with distinctive secrets in the environment, everything they write captured and
searched: the Discord bot against the local emulator (every log record at DEBUG, discord.py's and
the openai client's included, with tracebacks; standard output and error; every request body the
emulator received), and the `newsdesk` command in a subprocess with `-v`. The runs go through the
error paths, where secrets usually slip out: a model endpoint that answers 401 and echoes the key
back (as OpenAI does, partly masked), 500s, a refused connection, a command that raises, a failing
feed, and a Discord API that rejects the token.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import logging
import os
import subprocess
import sys
import traceback
from pathlib import Path

import pytest
from bench.discord_emulator import MANAGE_GUILD, DiscordEmulator
from conftest import SEED
from http_fixture import LocalHTTPServer
from openai_fake import FakeOpenAI, Reply, closed_port
from test_discord_bot import with_bot

from bot.service import NewsService

TOKEN = "MTIzNDU2Nzg5MDEyMzQ1Njc4.GsEcRt.discord-token-that-must-never-leak-7Hq2"
API_KEY = "sk-proj-api-key-that-must-never-leak-9Zr4Wm"
# Fragments too: a log line that cut the secret short, or masked its middle, still leaks.
FRAGMENTS = [TOKEN, TOKEN[:24], TOKEN[-16:], API_KEY, API_KEY[:20], API_KEY[-12:]]
TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


def leaks(text: str) -> list[str]:
    return [fragment for fragment in FRAGMENTS if fragment in text]


def refused_with_the_key() -> Reply:
    """A 401 whose message repeats the key it was given, the way a careless proxy (or OpenAI, masked) does."""
    error = {"error": {"message": f"Incorrect API key provided: {API_KEY}. Authorization: Bearer {API_KEY}",
                       "type": "invalid_request_error", "code": "invalid_api_key"}}
    return Reply(status=401, body=json.dumps(error).encode())


class _Everything(logging.Handler):
    """Every record, formatted with its traceback and stack, whatever its level or logger."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.stream = io.StringIO()
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.stream.write(self.format(record) + "\n")
        if record.exc_info:  # the full chain, with every exception's message
            self.stream.write("".join(traceback.format_exception(*record.exc_info, chain=True)))
        self.stream.write(repr(record.args) + "\n")  # the raw arguments, not only the message


@pytest.fixture
def all_logs(monkeypatch):
    handler = _Everything()
    root = logging.getLogger()
    monkeypatch.setattr(root, "level", logging.DEBUG)
    root.addHandler(handler)
    # Loggers that set their own level would drop DEBUG records before the root saw them.
    for name in ("discord", "discord.http", "discord.gateway", "discord.client", "openai", "httpx", "httpcore",
                 "bot", "index", "asyncio", "aiohttp"):
        monkeypatch.setattr(logging.getLogger(name), "level", logging.DEBUG)
    try:
        yield handler.stream
    finally:
        root.removeHandler(handler)


@pytest.fixture
def secrets(monkeypatch):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    monkeypatch.setenv("OPENAI_API_KEY", API_KEY)


def test_the_bot_never_writes_its_secrets(secrets, all_logs, capfd, config, fake_embedder):
    replies = [refused_with_the_key(), Reply.server_error(), Reply.server_error(), Reply.server_error()]
    with DiscordEmulator(guilds=1) as emulator, FakeOpenAI(replies) as model, LocalHTTPServer() as web:
        config.discord.api_base = emulator.api_base
        config.discord.gateway_url = emulator.gateway_url
        config.discord.user_requests = config.discord.server_requests = 0  # no rate limits
        config.fetch.allow_hosts = ["127.0.0.1"]
        config.fetch.timeout_seconds = 2
        config.llm.base_url = model.base_url
        config.llm.model = "fake-model"
        config.llm.max_retries = 1
        config.llm.retry_backoff_seconds = 0
        web.add_status("/feed.xml", 500)
        service = NewsService(config, embedder=fake_embedder)  # the key is read from the environment here
        assert len(service.ingest([str(SEED)]).added) == 1
        real_stats = service.stats

        def exploding_stats(**kwargs):
            if kwargs.get("collections") and kwargs["collections"] != ("shared",):
                raise RuntimeError(f"the index is on fire (data in {config.data_dir})")
            return real_stats(**kwargs)

        owner = emulator.user("owner")
        sent: dict[str, dict] = {}

        async def answered(interaction: dict) -> None:
            """Until the interaction's answer (a follow-up, or an edit of the deferred response) is sent."""
            path = f"/webhooks/{emulator.application_id}/{interaction['token']}"
            for _ in range(2000):
                if any(c.path.startswith(path) and c.method in ("POST", "PATCH") for c in emulator.calls):
                    return
                await asyncio.sleep(0.01)
            raise TimeoutError(f"no answer to {interaction['data']['name']}")

        async def scenario(bot) -> None:
            assert bot.http.token == TOKEN  # the secret really was in use
            ask = "Why did NATO suspend its training mission in Iraq?"
            sent["ask-401"] = await emulator.interaction("ask", {"question": ask}, user=emulator.user("a"))
            await answered(sent["ask-401"])
            sent["ask-500"] = await emulator.interaction("ask", {"question": ask}, user=emulator.user("b"))
            await answered(sent["ask-500"])
            sent["feed"] = await emulator.interaction("feeds", {"url": web.url("/feed.xml")}, subcommand="add",
                                                      user=owner, permissions=MANAGE_GUILD)
            sent["ingest"] = await emulator.interaction("ingest", {"url": f"http://127.0.0.1:{closed_port()}/story"},
                                                        user=owner, permissions=MANAGE_GUILD)
            for kind in ("feed", "ingest"):
                await answered(sent[kind])
            for _ in range(500):  # the new feed's first poll runs in the background
                if bot.feeds.feeds()[0].last_error:
                    break
                await asyncio.sleep(0.01)
            sent["status"] = await emulator.interaction("status", {}, user=owner)
            await answered(sent["status"])
            service.stats = exploding_stats  # a command that raises: a bug, whose traceback goes to the log
            sent["boom"] = await emulator.interaction("status", {}, user=owner)
            await answered(sent["boom"])

        with_bot(emulator, config, service, scenario, token=os.environ["DISCORD_TOKEN"])
        calls = emulator.calls
        model_headers = list(model.headers)

    # The error paths were taken: the model refused the key, then failed; the feed and /ingest failed;
    # the exploding /status reached the log with its traceback.
    assert model_headers[0]["authorization"] == f"Bearer {API_KEY}"
    assert len(model_headers) == 3  # the 401 is not retried; the 500 is, once
    logs = all_logs.getvalue()
    assert "request refused with status 401" in logs and "server error 500" in logs
    assert "the index is on fire" in logs and "Traceback" in logs
    assert "HTTP 500" in logs and "connection refused" in " ".join(json.dumps(c.body) for c in calls)
    captured = capfd.readouterr()
    written = {
        "logs": logs,
        "stdout": captured.out,
        "stderr": captured.err,
        "requests to Discord": "\n".join(f"{c.method} {c.path} {c.query} {json.dumps(c.body)}" for c in calls),
        "messages in channels": json.dumps(emulator.messages),
    }
    assert {where: leaks(text) for where, text in written.items() if leaks(text)} == {}


def newsdesk(config: Path, *args: str) -> subprocess.CompletedProcess:
    """`newsdesk -v ARGS` in a subprocess with the secrets in its environment. The one change to the
    real command: NewsService gets the fake embedder, as loading the model takes longer than the rest."""
    runner = (
        "import sys; sys.path.insert(0, sys.argv.pop(1)); import bot.cli, bot.service; from fakes import FakeEmbedder\n"
        "class Service(bot.service.NewsService):\n"
        "    def __init__(self, config, **kwargs):\n"
        "        super().__init__(config, **{'embedder': FakeEmbedder(), **kwargs})\n"
        "bot.service.NewsService = Service\n"
        "sys.exit(bot.cli.main(sys.argv[1:]))"
    )
    env = {**os.environ, "DISCORD_TOKEN": TOKEN, "OPENAI_API_KEY": API_KEY, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-c", runner, str(TESTS), "-v", "--config", str(config), *args],
                          capture_output=True, text=True, timeout=120, env=env, cwd=ROOT)


def test_the_command_line_never_writes_its_secrets(tmp_path):
    with FakeOpenAI([refused_with_the_key()]) as refusing, FakeOpenAI([Reply.server_error()]) as failing, \
            LocalHTTPServer() as discord_api:
        discord_api.add("/api/v10/users/@me", b'{"message": "401: Unauthorized", "code": 0}', status=401,
                        content_type="application/json")
        endpoints = {"refusing": refusing.base_url, "failing": failing.base_url,
                     "unreachable": f"http://127.0.0.1:{closed_port()}/v1"}
        config = tmp_path / "config.toml"
        outputs = {}
        for name, base_url in endpoints.items():
            config.write_text(
                f'[index]\ndir = "data"\n[llm]\nbase_url = "{base_url}"\nmodel = "fake-model"\nmax_retries = 1\n'
                f'retry_backoff_seconds = 0\n[discord]\napi_base = "{discord_api.url("/api/v10")}"\n'
                f'gateway_url = "ws://127.0.0.1:{closed_port()}/"\n'
            )
            if name == "refusing":
                ingested = newsdesk(config, "ingest", "-q", str(SEED))
                assert ingested.returncode == 0, ingested.stderr
            asked = newsdesk(config, "ask", "--json", "Why did NATO suspend its training mission in Iraq?")
            assert asked.returncode == 0, asked.stderr
            answer = json.loads(asked.stdout)
            assert answer["mode"] == "extractive" and answer["note"].startswith("The language model failed")
            outputs[name] = asked.stdout + asked.stderr
        served = newsdesk(config, "serve")  # Discord answers 401 to the token
        assert served.returncode == 2 and "newsdesk: error: Improper token has been passed." in served.stderr
        outputs["serve"] = served.stdout + served.stderr
        assert refusing.headers[0]["authorization"] == f"Bearer {API_KEY}"  # the key was sent, where it belongs
    assert "request refused with status 401" in outputs["refusing"]
    assert "Traceback" in outputs["serve"]  # -v: the whole story is told, and still no secret in it
    assert {name: leaks(text) for name, text in outputs.items() if leaks(text)} == {}


FEED_PASSWORD = "feed-password-that-must-never-leak"
FEED_TOKEN = "feed-token-that-must-never-leak"


def test_credentials_in_source_urls_log_in_but_are_never_written(tmp_path):
    """A private page and a private feed read by `newsdesk ingest --json -v`: the credentials reach the
    server that asked for them and nowhere else, not the output and not the index on disk."""
    from test_hostile_input import rss, story_html

    with LocalHTTPServer() as news:
        news.add("/story", story_html())
        news.add("/feed", rss([("Harbour dredging starts", news.url(f"/dredging?token={FEED_TOKEN}"),
                                "Dredging of the harbour channel starts on Monday and lasts three weeks.")]),
                 content_type="application/rss+xml")
        news.add_status("/gone", 404)
        private = [news.url(f"{path}?token={FEED_TOKEN}&page=1").replace("://", f"://reader:{FEED_PASSWORD}@")
                   for path in ("/story", "/feed", "/gone")]
        config = tmp_path / "config.toml"
        config.write_text('[index]\ndir = "data"\n[fetch]\nfetch_linked_pages = false\n')

        ingested = newsdesk(config, "ingest", "--json", *private)
        asked = newsdesk(config, "ask", "--json", "When does the harbour dredging start?")

    assert ingested.returncode == 0, ingested.stderr
    report = json.loads(ingested.stdout)
    assert report["added"] == 2 and [f["reason"] for f in report["failed"]] == ["HTTP 404"]
    assert report["failed"][0]["source"].startswith("http://redacted@127.0.0.1:")
    login = "Basic " + base64.b64encode(f"reader:{FEED_PASSWORD}".encode()).decode()
    assert [h.get("Authorization") for h in news.request_headers] == [login] * 3
    answer = json.loads(asked.stdout)
    assert answer["citations"] and all(FEED_TOKEN not in c["url"] for c in answer["citations"])
    written = {"ingest": ingested.stdout + ingested.stderr, "ask": asked.stdout + asked.stderr}
    written |= {path.name: path.read_bytes().decode("latin-1") for path in (tmp_path / "data").iterdir()}
    assert {where: secret for where, text in written.items() for secret in (FEED_PASSWORD, FEED_TOKEN)
            if secret in text} == {}

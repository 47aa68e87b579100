"""End to end: the real, unpatched discord.py client logs into a local Discord emulator.

Each test starts a fresh bot over a real NewsService (a tmp data dir, the FakeEmbedder, a few
small articles written here), injects gateway events, and checks the REST calls the bot makes.
Any ERROR log record fails the test; so does a call to a route the emulator does not know, or a
message sent without `allowed_mentions` none.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone

import discord
import pytest
from aiohttp import web
from conftest import upgraded_database
from openai_fake import closed_port

from bench.discord_emulator import EPHEMERAL, MANAGE_GUILD, Call, DiscordEmulator
from bot.discordbot import create_bot
from bot.discordbot.digest import DailyDigest
from bot.discordbot.scope import filters_for
from bot.render import MESSAGE_LIMIT
from index.article import make_article_id
from index.store import FeedRegistry

NO_MENTIONS = {"parse": []}
RECENT = (datetime.now(timezone.utc) - timedelta(hours=3)).isoformat()

ARTICLES = [
    {"title": "NATO suspends training in Iraq after Soleimani killing", "url": "https://wire.test/nato-iraq",
     "outlet": "Test Wire", "published": RECENT,
     "text": "NATO has suspended its training mission in Iraq after the killing of Iranian commander Qassem "
             "Soleimani, an alliance spokesman said on Saturday.\n\nThe alliance suspended the training because "
             "the safety of its personnel in Iraq is paramount, the spokesman said. Several hundred NATO "
             "personnel train Iraqi security forces at the request of the government in Baghdad."},
    {"title": "Floods force thousands from homes in the river valley", "url": "https://river.test/floods",
     "outlet": "River Post", "published": RECENT,
     "text": "Heavy rains flooded the river valley on Tuesday, forcing thousands of residents to leave their "
             "homes. Emergency crews used boats to reach villages cut off by the water.\n\nThe regional "
             "governor declared a state of emergency and asked the army to help with the evacuation."},
    {"title": "Stadium evacuated before the cup final", "url": "https://sport.test/stadium",
     "outlet": "Sport Daily", "published": RECENT,
     "text": "The stadium was evacuated an hour before the cup final kicked off. Fans were told over the "
             "loudspeakers: @everyone please leave the stadium calmly <@&123456789012345678> and wait outside. "
             "Police later said a suspicious package had been found near the main stand."},
]
# Added by the second server's admins only: the first server must never see it.
PRIVATE = {"title": "Harbour crane contract awarded to local firm", "url": "https://harbour.test/crane",
           "outlet": "Harbour News", "published": RECENT,
           "text": "The port authority awarded the harbour crane contract to a local engineering firm on Monday. "
                   "The new cranes will double the harbour's container capacity by next spring."}


# -- fixtures ---------------------------------------------------------------------------------


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(autouse=True)
def error_records():
    """Every ERROR record logged during the test; the test fails unless it took them out itself."""
    handler = _Collect()
    logging.getLogger().addHandler(handler)
    try:
        yield handler.records
    finally:
        logging.getLogger().removeHandler(handler)
    assert not handler.records, [f"{r.name}: {r.getMessage()}" for r in handler.records]


@pytest.fixture
def emulator():
    with DiscordEmulator(guilds=2) as emu:
        yield emu


@pytest.fixture
def news(tmp_path):
    """The articles as JSONL, the way an operator would ingest a dump."""
    path = tmp_path / "news.jsonl"
    path.write_text("".join(json.dumps(a) + "\n" for a in ARTICLES), encoding="utf-8")
    private = tmp_path / "private.jsonl"
    private.write_text(json.dumps(PRIVATE) + "\n", encoding="utf-8")
    return path, private


@pytest.fixture
def bot_config(config, emulator):
    config.discord.api_base = emulator.api_base
    config.discord.gateway_url = emulator.gateway_url
    config.discord.ask_channels = [emulator.channel("ask", 0)]
    config.discord.admin_role = "News Admin"
    config.discord.user_requests = config.discord.server_requests = 0  # no limits unless a test sets them
    config.fetch.allow_hosts = ["127.0.0.1"]  # the test's own feed server
    config.fetch.fetch_linked_pages = False  # feed items link to hosts that do not exist
    return config


@pytest.fixture(params=["sqlite", "postgres"])
def any_backend(request, config, fake_embedder, monkeypatch) -> str:
    """Runs the test on both storage backends: name it before `indexed`, which builds the service."""
    if request.param == "postgres":
        monkeypatch.setenv("NEWSDESK_TEST_DISCORD_DATABASE", upgraded_database(request.getfixturevalue("postgres"),
                                                                               fake_embedder))
        config.store.backend, config.store.url_env = "postgres", "NEWSDESK_TEST_DISCORD_DATABASE"
    return request.param


@pytest.fixture
def indexed(bot_config, service, news, emulator):
    """The service with the articles in: three shared, one only the second server's admins added."""
    shared, private = news
    report = service.ingest([str(shared)])
    assert len(report.added) == len(ARTICLES), report.failed
    assert len(service.ingest([str(private)], collection=f"guild:{emulator.guild_ids[1]}").added) == 1
    return service


def with_bot(emulator: DiscordEmulator, config, service, scenario: Callable[[discord.Client], Awaitable[None]],
             *, token: str = "test-token") -> None:
    """Start a fresh bot, run `scenario`, stop the bot; then check what every REST call looked like."""

    async def main() -> None:
        bot = await create_bot(config, service, guild_ready_timeout=0.05)
        async with bot:
            # As `newsdesk serve` does: REST login, setup_hook (which syncs the commands), the gateway.
            runner = asyncio.create_task(bot.start(token))
            ready = asyncio.create_task(bot.wait_until_ready())
            try:
                done, _ = await asyncio.wait({runner, ready}, timeout=20, return_when=asyncio.FIRST_COMPLETED)
                if runner in done:
                    runner.result()  # the gateway connection failed: raise why
                assert ready in done, "the bot did not become ready"
                await asyncio.wait_for(scenario(bot), 60)
            finally:
                ready.cancel()
                await bot.close()
                await runner

    asyncio.run(main())
    unknown = [f"{c.method} {c.path}" for c in emulator.calls if c.unknown]
    assert not unknown, unknown
    for call, message in sent_messages(emulator):
        assert message.get("allowed_mentions") == NO_MENTIONS, call


def sent_messages(emulator: DiscordEmulator) -> list[tuple[Call, dict]]:
    """Every message the bot posted or edited, with the JSON describing it: channel messages,
    interaction responses that carry a message (types 4 and 7), follow-ups, and edits of any of them."""
    sent = []
    for call in emulator.calls:
        match call.method, call.path.strip("/").split("/"):
            case ("POST", ["channels", _, "messages"] | ["webhooks", _, _]) | (
                "PATCH", ["channels", _, "messages", _] | ["webhooks", _, _, "messages", _]
            ):
                sent.append((call, call.body))
            case "POST", ["interactions", _, _, "callback"] if call.body["type"] in (4, 7):
                sent.append((call, call.body["data"]))
    return sent


def followups(emulator: DiscordEmulator, interaction: dict) -> list[Call]:
    return emulator.find("POST", f"/webhooks/{emulator.application_id}/{interaction['token']}")


def callback(emulator: DiscordEmulator, interaction: dict) -> Call:
    (call,) = emulator.find("POST", f"/interactions/{interaction['id']}/{interaction['token']}/callback")
    return call


def source_links(embed: dict) -> list[tuple[str, str]]:
    """(label, url) of each markdown link in an embed's description."""
    return re.findall(r"\[([^\]]+)\]\((https?://[^)]+)\)", embed.get("description", ""))


def assert_links_resolve(service, links: list[tuple[str, str]]) -> None:
    """Each link names an ingested article by its URL, and its label begins with that article's title."""
    assert links
    for label, url in links:
        found = service.store.article(make_article_id(url=url))
        assert found is not None, url
        meta, _ = found
        assert label.startswith(meta.title) and meta.outlet in label, (label, meta)


# -- tests --------------------------------------------------------------------------------------


def test_slash_commands_are_synced_with_their_options(emulator, bot_config, service):
    async def scenario(bot):
        assert bot.allowed_mentions.to_dict() == NO_MENTIONS
        assert bot.intents.message_content

    with_bot(emulator, bot_config, service, scenario)
    (sync,) = emulator.find("PUT", f"/applications/{emulator.application_id}/commands")
    commands = {c["name"]: c for c in sync.body}
    assert set(commands) == {"ask", "summary", "search", "status", "feeds", "ingest", "expire", "remove", "follow",
                             "follows", "unfollow"}
    assert all(c["dm_permission"] is False for c in commands.values())
    assert all(c["description"] and len(c["description"]) <= 100 for c in commands.values())

    def options(command):
        return {o["name"]: o for o in command["options"]}

    assert options(commands["ask"])["question"]["required"] is True
    summary = options(commands["summary"])
    assert not any(o["required"] for o in summary.values())
    assert summary["since"]["autocomplete"] and summary["article"]["autocomplete"]
    assert options(commands["search"])["source"]["autocomplete"]
    assert options(commands["remove"])["article"]["autocomplete"]
    assert options(commands["expire"])["older_than"]["required"] is True
    feeds = options(commands["feeds"])
    assert set(feeds) == {"add", "remove", "list"} and all(o["type"] == 1 for o in feeds.values())
    assert options(feeds["add"])["channel"]["type"] == 7


def test_dev_guilds_get_their_commands_instantly(emulator, bot_config, service):
    bot_config.discord.dev_guild_ids = [emulator.guild_ids[0]]
    with_bot(emulator, bot_config, service, lambda bot: asyncio.sleep(0))
    (sync,) = emulator.find("PUT", "/applications/")
    assert sync.path == f"/applications/{emulator.application_id}/guilds/{emulator.guild_ids[0]}/commands"
    assert len(sync.body) == 11


def test_ask_defers_then_answers_with_links_to_the_articles(emulator, bot_config, indexed):
    sent = {}

    async def scenario(bot):
        sent["i"] = await emulator.interaction(
            "ask", {"question": "Why did NATO suspend its training mission in Iraq?"}, user=emulator.user("alice"))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['i']['token']}")

    with_bot(emulator, bot_config, indexed, scenario)
    interaction = sent["i"]
    defer = callback(emulator, interaction)
    assert defer.body == {"type": 5} and defer.query.get("with_response") == "1"
    (answer,) = followups(emulator, interaction)
    assert emulator.calls.index(defer) < emulator.calls.index(answer)
    assert "[1]" in answer.body["content"] and "NATO" in answer.body["content"]
    assert not answer.body.get("flags", 0) & EPHEMERAL
    (embed,) = answer.body["embeds"]
    links = source_links(embed)
    assert_links_resolve(indexed, links)
    assert links[0][1] == "https://wire.test/nato-iraq"


def test_summary_of_an_article_a_topic_and_the_day(emulator, bot_config, indexed):
    bob = emulator.user("bob")
    sent = {}

    async def scenario(bot):
        choices = await emulator.interaction("summary", {"article": "flood"}, user=bob, autocomplete="article")
        await emulator.wait_for("POST", f"/interactions/{choices['id']}/")
        article_title = callback(emulator, choices).body["data"]["choices"][0]["value"]
        sent["article"] = await emulator.interaction("summary", {"article": article_title}, user=bob)
        sent["topic"] = await emulator.interaction("summary", {"topic": "stadium evacuation"}, user=bob)
        sent["digest"] = await emulator.interaction("summary", {"since": "24h"}, user=bob)
        for interaction in sent.values():
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{interaction['token']}")
        sent["choices"] = choices

    with_bot(emulator, bot_config, indexed, scenario)
    choices = callback(emulator, sent["choices"]).body
    assert choices["type"] == 8 and 0 < len(choices["data"]["choices"]) <= 25
    assert choices["data"]["choices"][0]["name"] == ARTICLES[1]["title"]
    for kind in ("article", "topic", "digest"):
        assert callback(emulator, sent[kind]).body == {"type": 5}
        (reply,) = followups(emulator, sent[kind])
        assert reply.body["content"] and len(reply.body["content"]) <= MESSAGE_LIMIT
        assert_links_resolve(indexed, source_links(reply.body["embeds"][0]))
    assert {url for _, url in source_links(followups(emulator, sent["article"])[0].body["embeds"][0])} == {
        "https://river.test/floods"}
    digest_links = {url for _, url in source_links(followups(emulator, sent["digest"])[0].body["embeds"][0])}
    assert {a["url"] for a in ARTICLES} <= digest_links and PRIVATE["url"] not in digest_links


def test_a_server_never_sees_another_servers_articles(any_backend, emulator, bot_config, indexed):
    assert indexed.store.stats()["backend"] == any_backend
    sent: dict = {}
    general = emulator.channel("general", 0)
    bot_config.discord.digest_channel = general
    bot_config.discord.digest_time = "07:00"

    async def scenario(bot):
        for guild in (0, 1):
            user = emulator.user(f"user{guild}")
            sent[guild] = {
                "search": await emulator.interaction("search", {"query": "harbour crane contract"}, user=user,
                                                     guild=guild),
                "status": await emulator.interaction("status", {}, user=user, guild=guild),
                "sources": await emulator.interaction("search", {"query": "x", "source": ""}, user=user,
                                                      guild=guild, autocomplete="source"),
            }
            for interaction in sent[guild].values():
                await emulator.wait_for("POST", f"/interactions/{interaction['id']}/")
            for kind in ("search", "status"):
                await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[guild][kind]['token']}")
        await bot.get_cog("DailyDigest").post()  # what the daily task runs at 07:00 UTC, in guild 0's channel
        await bot.get_cog("DailyDigest").post()  # again the same day (a restart, a second process): nothing

    with_bot(emulator, bot_config, indexed, scenario)
    for guild, sees_private in ((0, False), (1, True)):
        (found,) = followups(emulator, sent[guild]["search"])
        urls = {url for _, url in source_links(found.body["embeds"][0])} if found.body.get("embeds") else set()
        assert (PRIVATE["url"] in urls) is sees_private
        (status,) = followups(emulator, sent[guild]["status"])
        assert status.body["flags"] & EPHEMERAL
        assert status.body["embeds"][0]["fields"][0] == {"name": "Articles", "value": str(3 + sees_private),
                                                         "inline": True}
        outlets = [c["value"] for c in callback(emulator, sent[guild]["sources"]).body["data"]["choices"]]
        assert ("Harbour News" in outlets) is sees_private and "Test Wire" in outlets and len(outlets) <= 25
    (digest,) = [c for c in emulator.calls if c.path == f"/channels/{general}/messages"]
    digest_urls = {url for _, url in source_links(digest.body["embeds"][0])}
    assert {a["url"] for a in ARTICLES} <= digest_urls and PRIVATE["url"] not in digest_urls


def test_the_daily_digest_is_scheduled_at_the_configured_time_and_posts_then(emulator, bot_config, indexed):
    general = emulator.channel("general", 0)
    bot_config.discord.digest_channel, bot_config.discord.digest_time = general, "07:00"
    seven = datetime(2026, 1, 1, 7, tzinfo=timezone.utc).timetz()
    sent = {}

    async def next_run(digest: DailyDigest) -> datetime:
        while digest.daily.next_iteration is None:  # set once the task has started
            await asyncio.sleep(0.01)
        return digest.daily.next_iteration

    async def scenario(bot):
        configured = bot.get_cog("DailyDigest")
        sent["configured"] = (configured.daily.time, await next_run(configured), datetime.now(timezone.utc))
        # The same scheduling, a moment from now, so the test can watch it fire.
        await bot.remove_cog("DailyDigest")
        soon = datetime.now(timezone.utc) + timedelta(seconds=2)
        digest = DailyDigest(bot, at=soon.timetz(), channel_id=general)
        await bot.add_cog(digest)
        sent["scheduled"] = (soon, await next_run(digest))
        await emulator.wait_for("POST", f"/channels/{general}/messages")

    with_bot(emulator, bot_config, indexed, scenario)
    times, first, now = sent["configured"]
    assert times == [seven] and first.timetz() == seven and now < first <= now + timedelta(days=1)
    soon, scheduled = sent["scheduled"]
    assert scheduled == soon  # not at once: at the time it was given
    (posted,) = [c for c in emulator.calls if c.path == f"/channels/{general}/messages"]
    assert {a["url"] for a in ARTICLES} <= {url for _, url in source_links(posted.body["embeds"][0])}


def test_a_failing_digest_is_logged_and_the_daily_task_keeps_running(emulator, bot_config, indexed, monkeypatch,
                                                                      error_records):
    general = emulator.channel("general", 0)
    bot_config.discord.digest_channel, bot_config.discord.digest_time = general, "07:00"
    state = {}

    def broken_digest(**_):
        raise RuntimeError("index on fire")

    async def scenario(bot):
        monkeypatch.setattr(bot.service, "digest", broken_digest)
        digest = bot.get_cog("DailyDigest")
        await digest.post()  # what the task runs: an exception escaping it would end tasks.loop for good
        state["running"] = digest.daily.is_running()

    with_bot(emulator, bot_config, indexed, scenario)
    assert state["running"]
    assert [r.getMessage() for r in error_records] == [f"could not write the digest for channel {general}"]
    error_records.clear()
    assert not emulator.find("POST", f"/channels/{general}/messages")


def test_an_article_saying_everyone_is_quoted_without_pinging(emulator, bot_config, indexed):
    sent = {}

    async def scenario(bot):
        sent["i"] = await emulator.interaction(
            "ask", {"question": "What were fans at the stadium told over the loudspeakers?"},
            user=emulator.user("carol"))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['i']['token']}")

    with_bot(emulator, bot_config, indexed, scenario)
    (reply,) = followups(emulator, sent["i"])
    content = reply.body["content"]
    assert "please leave the stadium" in content  # the sentence is quoted…
    assert "@\u200beveryone" in content and "@everyone" not in content  # …but cannot ping
    assert "<@&123456789012345678>" not in content
    assert reply.body["allowed_mentions"] == NO_MENTIONS


def test_a_mention_gets_a_thread_and_a_follow_up_there_remembers_the_question(emulator, bot_config, indexed):
    asked: list[tuple[str, tuple]] = []
    real_ask = indexed.ask

    def recording_ask(question, **kwargs):
        asked.append((question, tuple(kwargs.get("history", ()))))
        return real_ask(question, **kwargs)

    indexed.ask = recording_ask
    dave = emulator.user("dave")
    bot_user = emulator.bot_user
    sent = {}

    async def scenario(bot):
        first = await emulator.message(f"<@{bot_user['id']}> Why did NATO suspend training in Iraq?",
                                       user=dave, mentions=[bot_user])
        thread_id = first["id"]  # a thread opened on a message has the message's id
        await emulator.wait_for("POST", f"/channels/{thread_id}/messages")
        await emulator.message("Who trains the Iraqi security forces?", user=dave, channel=int(thread_id))
        await emulator.wait_for("POST", f"/channels/{thread_id}/messages", count=2)
        sent["first"] = first

    with_bot(emulator, bot_config, indexed, scenario)
    first = sent["first"]
    general = emulator.channel("general")
    (opened,) = emulator.find("POST", f"/channels/{general}/messages/{first['id']}/threads")
    assert opened.body["name"] == "Why did NATO suspend training in Iraq?"
    answer, follow_up = emulator.find("POST", f"/channels/{first['id']}/messages")
    assert "[1]" in answer.body["content"]
    assert_links_resolve(indexed, source_links(answer.body["embeds"][0]))
    assert asked == [("Why did NATO suspend training in Iraq?", ()),
                     ("Who trains the Iraqi security forces?", ("Why did NATO suspend training in Iraq?",))]
    links = source_links(follow_up.body["embeds"][0])
    assert_links_resolve(indexed, links)
    assert links[0][1] == "https://wire.test/nato-iraq"
    assert not [c for c in emulator.calls if c.path == f"/channels/{general}/messages"]  # only in the thread


def test_questions_in_an_ask_channel_need_no_mention_and_others_are_ignored(emulator, bot_config, indexed):
    bot_config.discord.user_requests = 1
    erin = emulator.user("erin")
    sent = {}

    async def scenario(bot):
        await emulator.message("just chatting about the weather", user=erin, channel="general")
        sent["question"] = await emulator.message("How did crews reach the flooded villages?", user=erin,
                                                  channel="ask")
        await emulator.wait_for("POST", f"/channels/{sent['question']['id']}/messages")
        sent["too_soon"] = await emulator.message("And the army?", user=erin, channel="ask")
        await emulator.wait_for("PUT", f"/channels/{emulator.channel('ask')}/messages/{sent['too_soon']['id']}/")

    with_bot(emulator, bot_config, indexed, scenario)
    (answer,) = [c for c in emulator.find("POST", "/channels/") if c.path.endswith("/messages")]
    assert answer.path == f"/channels/{sent['question']['id']}/messages"  # in the thread on the question
    assert "boats" in answer.body["content"]
    assert not emulator.find("POST", f"/channels/{emulator.channel('general')}/")
    (reaction,) = emulator.find("PUT", "/channels/")
    assert reaction.path.endswith("/reactions/⏳/@me")  # the rate limit is shown, not spoken


def test_feeds_add_is_refused_to_members_and_works_for_the_admin_role(emulator, bot_config, indexed):
    feed_items = [("Lighthouse restored on the north cape", "https://cape.test/lighthouse",
                   "The old lighthouse on the north cape was restored by volunteers and shines again.")]
    sent = {}

    async def scenario(bot):
        async with FeedServer(feed_items) as feed_url:
            member = emulator.user("frank")
            sent["refused"] = await emulator.interaction(
                "feeds", {"url": feed_url}, subcommand="add", user=member)
            await emulator.wait_for("POST", f"/interactions/{sent['refused']['id']}/")
            admin = emulator.user("grace")
            general = emulator.channels[emulator.channel("general")]
            sent["added"] = await emulator.interaction(
                "feeds", {"url": feed_url, "channel": general}, subcommand="add", user=admin,
                roles=[int(emulator.admin_role()["id"])])
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['added']['token']}")
            registry: FeedRegistry = bot.feeds
            for _ in range(1000):  # the first poll runs in the background; wait for it to be recorded
                if registry.feeds(collections=[f"guild:{emulator.guild_ids[0]}"])[0].last_polled:
                    break
                await asyncio.sleep(0.01)
            # A later poll finds a new item: its headline goes to the feed's channel.
            bot.config.discord.post_headlines = True
            feed_items.append(("Ferry timetable changes for winter", "https://cape.test/ferry",
                               "The ferry to the islands will sail twice a day from November, the operator said."))
            polling = bot.get_cog("FeedPolling")
            await polling.post_headlines(await polling.poller.run(feeds=registry.feeds(
                collections=[f"guild:{emulator.guild_ids[0]}"])))
            owner = emulator.user("owner")
            sent["owner"] = await emulator.interaction("feeds", {}, subcommand="list", user=owner,
                                                       permissions=MANAGE_GUILD)
            sent["ingest"] = await emulator.interaction("ingest", {"url": feed_url.replace("rss.xml", "story.html")},
                                                        user=owner, permissions=MANAGE_GUILD)
            sent["file"] = await emulator.interaction("ingest", {"url": "file:///etc/passwd"}, user=owner,
                                                      permissions=MANAGE_GUILD)
            for kind in ("owner", "ingest"):
                await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[kind]['token']}")
            await emulator.wait_for("POST", f"/interactions/{sent['file']['id']}/")
            sent["feed_url"] = feed_url

    with_bot(emulator, bot_config, indexed, scenario)
    refused = callback(emulator, sent["refused"]).body
    assert refused["type"] == 4 and refused["data"]["flags"] & EPHEMERAL
    assert "Manage Server" in refused["data"]["content"] and len(refused["data"]["content"]) < 200
    assert not followups(emulator, sent["refused"])

    assert callback(emulator, sent["added"]).body == {"type": 5, "data": {"flags": EPHEMERAL}}
    (added,) = followups(emulator, sent["added"])
    assert added.body["content"].startswith("Added") and added.body["flags"] & EPHEMERAL
    (feed,) = indexed.store.feeds.feeds(collections=[f"guild:{emulator.guild_ids[0]}"])
    assert feed.url == sent["feed_url"] and feed.channel_id == emulator.channel("general")
    assert feed.last_polled is not None and feed.last_error is None
    assert indexed.store.article(make_article_id(url="https://cape.test/lighthouse")) is not None

    (headline,) = emulator.find("POST", f"/channels/{emulator.channel('general')}/messages")
    assert headline.body["content"].startswith("📰 [Ferry timetable changes for winter](https://cape.test/ferry)")
    assert "lighthouse" not in headline.body["content"].lower()  # the first poll's backlog is not announced

    (listing,) = followups(emulator, sent["owner"])
    assert sent["feed_url"] in listing.body["embeds"][0]["description"]

    (ingested,) = followups(emulator, sent["ingest"])
    assert ingested.body["flags"] & EPHEMERAL and ingested.body["content"].startswith("Added 1 article")
    titles = {guild: {r.title for r in indexed.search("lighthouse keeper retires", filters=filters_for(guild))}
              for guild in emulator.guild_ids}
    assert STORY_TITLE in titles[emulator.guild_ids[0]] and STORY_TITLE not in titles[emulator.guild_ids[1]]
    refused_file = callback(emulator, sent["file"]).body
    assert refused_file["data"]["flags"] & EPHEMERAL and "http" in refused_file["data"]["content"]


def test_admins_expire_and_remove_their_own_servers_articles_only(emulator, bot_config, indexed, tmp_path):
    old = (datetime.now(timezone.utc) - timedelta(days=60)).isoformat()
    own, other = f"guild:{emulator.guild_ids[0]}", f"guild:{emulator.guild_ids[1]}"
    stories = {  # title: (collection, published)
        "Council approves the new tram line": (own, RECENT),
        "Library reopens after the renovation": (own, old),
        "Old shared report on the grain harvest": ("shared", old),
        "Old harbour dredging plan shelved": (other, old),
    }
    for n, (title, (collection, published)) in enumerate(stories.items()):
        path = tmp_path / f"story{n}.jsonl"
        path.write_text(json.dumps({"title": title, "url": f"https://local.test/{n}", "outlet": "Local Paper",
                                    "published": published,
                                    "text": f"{title}, officials said on Monday. " * 3}) + "\n", encoding="utf-8")
        assert indexed.ingest([str(path)], collection=collection).added
    ids = {title: make_article_id(url=f"https://local.test/{n}") for n, title in enumerate(stories)}
    private_id = make_article_id(url=PRIVATE["url"])
    shared_id = make_article_id(url=ARTICLES[0]["url"])
    admin = {"user": emulator.user("olga"), "permissions": MANAGE_GUILD}
    sent: dict = {}

    async def answered(kind: str, name: str, options: dict, **who) -> None:
        sent[kind] = await emulator.interaction(name, options, **who)
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[kind]['token']}")

    async def scenario(bot):
        member = emulator.user("pete")
        for kind, name, options in (("member_remove", "remove", {"article": "Council approves the new tram line"}),
                                    ("member_expire", "expire", {"older_than": "30d"})):
            sent[kind] = await emulator.interaction(name, options, user=member)
            await emulator.wait_for("POST", f"/interactions/{sent[kind]['id']}/")
        for kind, who in (("choices", admin), ("member_choices", {"user": member})):
            sent[kind] = await emulator.interaction("remove", {"article": ""}, autocomplete="article", **who)
            await emulator.wait_for("POST", f"/interactions/{sent[kind]['id']}/")
        await answered("remove", "remove", {"article": "Council approves the new tram line"}, **admin)
        await answered("private_title", "remove", {"article": PRIVATE["title"]}, **admin)
        await answered("private_id", "remove", {"article": private_id}, **admin)
        await answered("shared_id", "remove", {"article": shared_id}, **admin)
        await answered("expire", "expire", {"older_than": "30d"}, **admin)
        # Article ids are not secret: another server's id gets no summary either.
        await answered("summary", "summary", {"article": private_id}, user=member)

    with_bot(emulator, bot_config, indexed, scenario)
    for kind in ("member_remove", "member_expire"):
        refused = callback(emulator, sent[kind]).body
        assert refused["type"] == 4 and refused["data"]["flags"] & EPHEMERAL
        assert "Manage Server" in refused["data"]["content"]
    offered = {c["value"] for c in callback(emulator, sent["choices"]).body["data"]["choices"]}
    assert offered == {"Council approves the new tram line", "Library reopens after the renovation"}
    assert callback(emulator, sent["member_choices"]).body["data"]["choices"] == []  # not an admin: no titles

    def reply(kind: str) -> str:
        assert callback(emulator, sent[kind]).body == {"type": 5, "data": {"flags": EPHEMERAL}}
        (note,) = followups(emulator, sent[kind])
        assert note.body["flags"] & EPHEMERAL
        return note.body["content"]

    assert reply("remove") == "Removed 1 article from this server's news."
    for kind in ("private_title", "private_id", "shared_id"):
        assert reply(kind).startswith("Nothing was removed: that is not an article this server added")
    assert reply("expire") == "Removed 1 article from this server's news."
    (summary,) = followups(emulator, sent["summary"])
    assert summary.body["flags"] & EPHEMERAL and "No article" in summary.body["content"]
    store = indexed.store
    assert store.article(ids["Council approves the new tram line"]) is None
    assert store.article(ids["Library reopens after the renovation"]) is None
    for kept in (ids["Old shared report on the grain harvest"], ids["Old harbour dredging plan shelved"],
                 private_id, shared_id):
        assert store.article(kept) is not None


def test_a_feed_urls_credentials_are_not_shown_in_replies_or_logs(emulator, bot_config, indexed, caplog):
    url = f"http://reader:hunter2@127.0.0.1:{closed_port()}/rss.xml?token=tok123"
    admin = {"user": emulator.user("quinn"), "permissions": MANAGE_GUILD}
    sent = {}

    async def scenario(bot):
        sent["add"] = await emulator.interaction("feeds", {"url": url}, subcommand="add", **admin)
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['add']['token']}")
        for _ in range(1000):  # the first poll runs in the background; wait for its failure to be recorded
            if bot.feeds.feeds(collections=[f"guild:{emulator.guild_ids[0]}"])[0].last_polled:
                break
            await asyncio.sleep(0.01)
        for kind, name, sub in (("list", "feeds", "list"), ("status", "status", None)):
            sent[kind] = await emulator.interaction(name, {}, subcommand=sub, **admin)
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[kind]['token']}")

    with caplog.at_level(logging.INFO, logger="bot"):
        with_bot(emulator, bot_config, indexed, scenario)
    shown = [json.dumps(followups(emulator, sent[kind])[0].body) for kind in ("add", "list", "status")]
    assert all("127.0.0.1" in text for text in shown)
    for text in [*shown, caplog.text]:
        assert "hunter2" not in text and "tok123" not in text and "reader" not in text
    assert "http://redacted@127.0.0.1" in caplog.text  # the failed poll was logged, redacted


def explode_on_request(service) -> None:
    """Make the service fail, as a broken index would, on any question that says "explode"."""
    real_ask = service.ask

    def failing_ask(question, **kwargs):
        if "explode" in question:
            raise RuntimeError("index on fire")
        return real_ask(question, **kwargs)

    service.ask = failing_ask


def test_failures_reach_the_user_briefly_and_the_log_in_full(emulator, bot_config, indexed, error_records):
    bot_config.discord.user_requests = 1
    explode_on_request(indexed)
    heidi, ivan = emulator.user("heidi"), emulator.user("ivan")
    sent = {}

    async def scenario(bot):
        sent["bad_since"] = await emulator.interaction("search", {"query": "floods", "since": "next tuesday"},
                                                       user=heidi)
        await emulator.wait_for("POST", f"/interactions/{sent['bad_since']['id']}/")
        sent["first"] = await emulator.interaction("ask", {"question": "What flooded?"}, user=ivan)
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['first']['token']}")
        sent["again"] = await emulator.interaction("ask", {"question": "And then?"}, user=ivan)
        await emulator.wait_for("POST", f"/interactions/{sent['again']['id']}/")
        sent["boom"] = await emulator.interaction("ask", {"question": "Will it explode?"}, user=emulator.user("judy"))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['boom']['token']}")

    with_bot(emulator, bot_config, indexed, scenario)
    bad_since = callback(emulator, sent["bad_since"]).body
    assert bad_since["type"] == 4 and bad_since["data"]["flags"] & EPHEMERAL
    assert "24h" in bad_since["data"]["content"]

    limited = callback(emulator, sent["again"]).body
    assert limited["type"] == 4 and limited["data"]["flags"] & EPHEMERAL
    assert "Slow down" in limited["data"]["content"]

    assert callback(emulator, sent["boom"]).body == {"type": 5}
    token = sent["boom"]["token"]
    assert emulator.find("DELETE", f"/webhooks/{emulator.application_id}/{token}/messages/@original")
    (note,) = followups(emulator, sent["boom"])
    assert note.body["flags"] & EPHEMERAL and "log" in note.body["content"]
    assert "index on fire" not in note.body["content"]
    (record,) = error_records
    assert record.exc_info and "index on fire" in str(record.exc_info[1])
    error_records.clear()


def test_a_5000_character_answer_arrives_as_several_messages(emulator, bot_config, indexed):
    from bot.answer_types import Answer

    sentence = "The alliance kept several hundred people in the country to train its forces [1]. "
    long_text = (sentence * 70)[:5000]
    real_ask = indexed.ask

    def long_ask(question, **kwargs):
        answer = real_ask(question, **kwargs)
        return Answer(long_text + "\n\n" + answer.text, answer.mode, answer.citations)

    indexed.ask = long_ask
    sent = {}

    async def scenario(bot):
        sent["i"] = await emulator.interaction("ask", {"question": "Why did NATO suspend training?"},
                                               user=emulator.user("kim"))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['i']['token']}", count=3)

    with_bot(emulator, bot_config, indexed, scenario)
    parts = followups(emulator, sent["i"])
    contents = [p.body["content"] for p in parts]
    assert len(parts) >= 3 and all(len(c) <= MESSAGE_LIMIT for c in contents)
    assert all(c.rstrip().endswith(("[1].", "[1]", ".")) for c in contents[:-1])
    assert sum(c.count("[1]") for c in contents) >= long_text.count("[1]")
    assert [bool(p.body.get("embeds")) for p in parts] == [False] * (len(parts) - 1) + [True]


def test_fifty_questions_at_once_are_all_answered_without_stalling_the_loop(emulator, bot_config, indexed, capsys):
    questions = ["Why did NATO suspend training in Iraq?", "How did crews reach the flooded villages?",
                 "Why was the stadium evacuated?", "Who declared a state of emergency?",
                 "What did police find near the main stand?"]
    sent: list[dict] = []
    stats = {}

    async def scenario(bot):
        stalls: list[float] = []
        stop = asyncio.Event()

        async def watch(interval=0.005):
            while not stop.is_set():
                before = time.perf_counter()
                await asyncio.sleep(interval)
                stalls.append(time.perf_counter() - before - interval)

        watcher = asyncio.create_task(watch())
        started = time.perf_counter()
        for n in range(50):
            sent.append(await emulator.interaction(
                "ask", {"question": questions[n % len(questions)]}, user=emulator.user(f"reader{n}")))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/", count=50, timeout=90)
        stats["seconds"] = time.perf_counter() - started
        stop.set()
        await watcher
        stats["stall_ms"] = max(stalls) * 1000
        stats["median_stall_ms"] = sorted(stalls)[len(stalls) // 2] * 1000

    with_bot(emulator, bot_config, indexed, scenario)
    for interaction in sent:
        assert callback(emulator, interaction).body == {"type": 5}
        (answer,) = followups(emulator, interaction)
        assert "[1]" in answer.body["content"]
    with capsys.disabled():  # a measurement to report, not a pass/fail threshold
        print(f"\n50 questions answered in {stats['seconds']:.2f} s; longest event-loop stall "
              f"{stats['stall_ms']:.1f} ms (median lateness of a 5 ms tick {stats['median_stall_ms']:.2f} ms)")


# -- a feed server ------------------------------------------------------------------------------------


class FeedServer:
    """An RSS feed on 127.0.0.1 whose items the test can change between polls."""

    def __init__(self, items: list[tuple[str, str, str]]) -> None:
        self.items = items
        self.runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/rss.xml", self._feed)
        app.router.add_get("/story.html", self._story)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{site._server.sockets[0].getsockname()[1]}/rss.xml"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()

    async def _feed(self, request: web.Request) -> web.Response:
        published = datetime.now(timezone.utc).strftime("%a, %d %b %Y %H:%M:%S +0000")
        entries = "".join(
            f"<item><title>{title}</title><link>{url}</link><guid>{url}</guid><pubDate>{published}</pubDate>"
            f"<description>{text}</description></item>"
            for title, url, text in self.items
        )
        body = (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Cape News</title>'
                f"<link>https://cape.test/</link><description>news</description>{entries}</channel></rss>")
        return web.Response(body=body.encode(), headers={"Content-Type": "application/rss+xml"})

    async def _story(self, request: web.Request) -> web.Response:
        paragraphs = "".join(f"<p>{p}</p>" for p in STORY)
        body = (f"<html><head><title>{STORY_TITLE}</title></head><body><article><h1>{STORY_TITLE}</h1>"
                f"{paragraphs}</article></body></html>")
        return web.Response(body=body.encode(), headers={"Content-Type": "text/html; charset=utf-8"})


STORY_TITLE = "Lighthouse keeper retires after forty years"
STORY = [
    "The keeper of the north cape lighthouse retired on Friday after forty years of climbing its 120 steps "
    "every evening to check the lamp.",
    "Villagers gathered at the harbour to thank him, and the coastguard presented a model of the lighthouse "
    "built by local schoolchildren.",
    "The lamp has been automatic since the restoration, but the keeper said he would still walk up the cape "
    "each evening to watch the ships pass.",
]

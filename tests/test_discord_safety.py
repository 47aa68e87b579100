"""Discord safety end to end, through the local emulator: no pings, no foreign links, no markup from
quoted text, admin commands refused to members, and rate limits that hold under a burst.

The bot, fixtures and wire checks are those of test_discord_bot (every message it sends must carry
`allowed_mentions` with nothing allowed, checked after each scenario by `with_bot`).
"""

from __future__ import annotations

import asyncio
import json
import re

from test_discord_bot import (  # noqa: F401 - bot_config, emulator, error_records, indexed, news are fixtures
    ARTICLES, NO_MENTIONS, PRIVATE, STORY_TITLE, FeedServer, bot_config, callback, emulator, error_records,
    explode_on_request, followups, indexed, news, sent_messages, with_bot,
)
from test_render import MASKED_LINK, markup_left

from bench.discord_emulator import EPHEMERAL, MANAGE_GUILD
from bot.feeds import PollResult
from index.article import make_article_id
from index.store import Feed

HOSTILE_MARKUP = ("```py\nimport os\n``` > quoted # heading ||spoiler|| **bold** __underline__ ~~struck~~ "
                  "back\\slash -# subtext")
PINGS = "@everyone @here <@&123456789012345678> <@123456789012345678>"
TRAP = {
    "title": "Council budget vote [prize](https://evil.example/title) @everyone", "url": "https://council.test/vote",
    "outlet": "Council **Wire** @here",
    "text": f"The council voted to cut the budget ```on Monday``` ||after a debate|| {PINGS} "
            "[click here](https://evil.example/login).\n\n"
            "# The budget vote passed by **nine** votes to __four__ ~~five~~ [1](https://evil.example/fake-source), "
            f"the council said.\n\n> The council budget now goes to the mayor {HOSTILE_MARKUP}.\n\n"
            "-# Councillors who opposed the budget vote said they would appeal.",
}
QUESTION = f"What did the council budget vote decide? {PINGS} [see](https://evil.example/question)"
# Links the bot makes itself: to the articles it cites, nothing else.
ARTICLE_URLS = {a["url"] for a in [*ARTICLES, PRIVATE, TRAP]}


def ingest_trap(service, tmp_path) -> None:
    path = tmp_path / "trap.jsonl"
    path.write_text(json.dumps(TRAP) + "\n", encoding="utf-8")
    assert len(service.ingest([str(path)]).added) == 1


def shown_texts(message: dict) -> list[str]:
    """The parts of a message Discord renders as markdown: its text, and its embeds' descriptions and fields."""
    texts = [message.get("content") or ""]
    for embed in message.get("embeds") or []:
        texts += [embed.get("title", ""), embed.get("description", "")]
        texts += [field["value"] for field in embed.get("fields", [])]
    return texts


def assert_inert(text: str) -> None:
    """No ping, no mention, and no link but the bot's own links to the articles it cites."""
    assert not re.search(r"@(everyone|here)", text), text
    assert not re.search(r"(?<!\\)<@", text), text
    assert {url for _, url in MASKED_LINK.findall(text)} <= ARTICLE_URLS, text


def test_nothing_the_bot_sends_pings_links_elsewhere_or_takes_markup_from_quoted_text(
    emulator, bot_config, indexed, tmp_path, error_records
):
    ingest_trap(indexed, tmp_path)
    general, ask = emulator.channel("general"), emulator.channel("ask")
    bot_config.discord.digest_channel, bot_config.discord.digest_time = general, "07:00"
    bot_config.discord.post_headlines = True
    explode_on_request(indexed)
    mallory = emulator.user("mallory @everyone")
    sent = {}

    async def scenario(bot):
        sent["ask"] = await emulator.interaction("ask", {"question": QUESTION}, user=mallory)
        sent["search"] = await emulator.interaction(
            "search", {"query": f"council budget {PINGS} [x](https://evil.example/s)"}, user=mallory)
        sent["summary"] = await emulator.interaction("summary", {"topic": "council budget vote"}, user=mallory)
        sent["boom"] = await emulator.interaction("ask", {"question": f"Will it explode? {PINGS}"}, user=mallory)
        sent["bad_since"] = await emulator.interaction("search", {"query": "council", "since": f"{PINGS} **"},
                                                       user=mallory)
        for kind in ("ask", "search", "summary", "boom"):
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[kind]['token']}")
        await emulator.wait_for("POST", f"/interactions/{sent['bad_since']['id']}/")
        sent["channel"] = await emulator.message(QUESTION, user=mallory, channel="ask")
        await emulator.wait_for("POST", f"/channels/{sent['channel']['id']}/messages")
        sent["channel_boom"] = await emulator.message(f"explode {PINGS}", user=mallory, channel="ask")
        await emulator.wait_for("POST", f"/channels/{ask}/messages", lambda c: c.path.endswith("/messages"))
        await bot.get_cog("DailyDigest").post()
        feed = Feed("https://council.test/rss", "shared", channel_id=general)
        await bot.get_cog("FeedPolling").post_headlines([PollResult(feed, added=[make_article_id(url=TRAP["url"])])])

    with_bot(emulator, bot_config, indexed, scenario)
    assert len(error_records) == 2  # the two explosions, logged in full
    error_records.clear()

    messages = sent_messages(emulator)
    routes = {re.sub(r"\d+|token-\d+", "N", call.path) for call, _ in messages}
    assert routes >= {"/webhooks/N/N", "/interactions/N/N/callback", "/channels/N/messages"}
    assert len(messages) >= 9  # five slash replies, two channel replies, the digest and the headlines
    for call, message in messages:
        assert message["allowed_mentions"] == NO_MENTIONS, call
        for text in shown_texts(message):
            assert_inert(text)

    # The answer quotes the trap article, markup and all, as plain text; its structure survives, and
    # the article's "[1](…)" is shown as "(1)", neither a link nor one of the answer's citations.
    (answer,) = followups(emulator, sent["ask"])
    content = answer.body["content"]
    for quoted in ("\\`\\`\\`on Monday\\`\\`\\`", "\\|\\|after a debate\\|\\|", "\\# The budget vote",
                   "\\*\\*nine\\*\\*", "(1)(<https://evil.example/fake-source>)"):
        assert quoted in content
    assert re.search(r"said\. \[\d\](?: |$)", content)
    assert markup_left(content) == []
    (embed,) = answer.body["embeds"]
    assert all(re.match(r"\*\*\[\d+\]\*\* \[", line) for line in embed["description"].split("\n"))
    assert TRAP["url"] in {url for _, url in MASKED_LINK.findall(embed["description"])}
    (thread_answer,) = emulator.find("POST", f"/channels/{sent['channel']['id']}/messages")
    assert markup_left(thread_answer.body["content"]) == []
    headline = emulator.find("POST", f"/channels/{general}/messages")[-1]
    assert headline.body["content"].startswith("📰 [Council budget vote \\[prize\\]")
    (note,) = emulator.find("POST", f"/channels/{ask}/messages", lambda c: c.path.endswith("/messages"))
    assert str(note.body["message_reference"]["message_id"]) == sent["channel_boom"]["id"]  # a reply that pings no one


def test_every_admin_command_is_refused_to_members_and_changes_nothing(emulator, bot_config, indexed):
    registry = indexed.store.feeds
    registry.add("https://feeds.test/kept.xml", collection=f"guild:{emulator.guild_ids[0]}", added_by=1)

    def state():
        """What the commands could change (not the poll times: the bot's poller may read the feed meanwhile)."""
        feeds = [(f.url, f.collection, f.channel_id, f.added_by) for f in registry.feeds()]
        return feeds, indexed.stats()

    before = state()
    general = emulator.channels[emulator.channel("general")]
    sent, offered = {}, {}

    async def scenario(bot):
        async with FeedServer([("Lighthouse", "https://cape.test/l", "A lighthouse.")]) as feed_url:
            member = emulator.user("frank")
            other_role = [int(emulator.admin_role(1)["id"])]  # the admin role of another server is no admin here
            story = feed_url.replace("rss.xml", "story.html")
            sent["add"] = await emulator.interaction("feeds", {"url": feed_url, "channel": general}, subcommand="add",
                                                     user=member)
            sent["remove"] = await emulator.interaction("feeds", {"url": "https://feeds.test/kept.xml"},
                                                        subcommand="remove", user=member, roles=other_role)
            sent["list"] = await emulator.interaction("feeds", {}, subcommand="list", user=member)
            sent["ingest"] = await emulator.interaction("ingest", {"url": story}, user=member)
            for interaction in sent.values():
                await emulator.wait_for("POST", f"/interactions/{interaction['id']}/")
            # Autocomplete runs no checks in discord.py: it must refuse on its own, for either option.
            for name, option, sub in (("feeds", "url", "remove"), ("remove", "article", None)):
                offered[name] = await emulator.interaction(name, {option: ""}, subcommand=sub, user=member,
                                                           autocomplete=option)
                await emulator.wait_for("POST", f"/interactions/{offered[name]['id']}/")
            offered["admin"] = await emulator.interaction("feeds", {"url": ""}, subcommand="remove", user=member,
                                                          permissions=MANAGE_GUILD, autocomplete="url")
            await emulator.wait_for("POST", f"/interactions/{offered['admin']['id']}/")

    with_bot(emulator, bot_config, indexed, scenario)
    choices = {name: callback(emulator, payload).body["data"]["choices"] for name, payload in offered.items()}
    assert choices == {"feeds": [], "remove": [],
                       "admin": [{"name": "https://feeds.test/kept.xml", "value": "https://feeds.test/kept.xml"}]}
    for kind, interaction in sent.items():
        refusal = callback(emulator, interaction).body
        assert refusal["type"] == 4 and refusal["data"]["flags"] & EPHEMERAL, kind
        assert "Manage Server" in refusal["data"]["content"], kind
        assert not followups(emulator, interaction), kind
    assert state() == before
    assert not any(r.title == STORY_TITLE for r in indexed.search("lighthouse keeper retires"))


def test_a_burst_gets_exactly_the_allowed_answers_per_member_and_per_server(emulator, bot_config, indexed):
    settings = bot_config.discord
    settings.ask_channels.append(emulator.channel("ask", 1))
    # Hour-long windows: within the scenario's minute no request's worth refills, so the counts are exact.
    settings.user_requests, settings.user_window_seconds = 3, 3600.0
    settings.server_requests, settings.server_window_seconds = 20, 3600.0
    alice = emulator.user("alice")
    readers = [emulator.user(f"reader{n}") for n in range(10)]
    ask_1 = emulator.channel("ask", 1)
    sent: dict = {}

    async def scenario(bot):
        slash = [emulator.interaction("ask", {"question": f"Why did NATO suspend training? ({n})"}, user=alice)
                 for n in range(20)]
        channel = [emulator.message(f"How did crews reach the flooded villages? ({n})", user=reader, guild=1,
                                    channel="ask")
                   for reader in readers for n in range(6)]
        fired = await asyncio.gather(*slash, *channel)
        sent["slash"], sent["channel"] = fired[:20], fired[20:]
        await emulator.wait_for("POST", "/interactions/", count=20)
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/", count=3)
        await emulator.wait_for("POST", "/channels/", lambda c: c.path.endswith("/threads"), count=20)
        await emulator.wait_for("PUT", f"/channels/{ask_1}/messages/", count=40)
        threads = [c.path.split("/")[4] for c in emulator.find("POST", f"/channels/{ask_1}/messages/")]
        for thread in threads:
            await emulator.wait_for("POST", f"/channels/{thread}/messages")
        # The server is out of requests now: a newcomer there is told so, politely.
        sent["late"] = await emulator.interaction("ask", {"question": "What happened?"}, user=emulator.user("late"),
                                                  guild=1)
        await emulator.wait_for("POST", f"/interactions/{sent['late']['id']}/")

    with_bot(emulator, bot_config, indexed, scenario)
    responses = [callback(emulator, interaction).body for interaction in sent["slash"]]
    assert sum(r == {"type": 5} for r in responses) == 3
    refusals = [r for r in responses if r["type"] == 4]
    assert len(refusals) == 17
    assert all(r["data"]["flags"] & EPHEMERAL and "Slow down" in r["data"]["content"] for r in refusals)
    answered = [i for i in sent["slash"] if followups(emulator, i)]
    assert len(answered) == 3 and all("[1]" in followups(emulator, i)[0].body["content"] for i in answered)

    opened = {c.path.split("/")[4] for c in emulator.find("POST", f"/channels/{ask_1}/messages/")
              if c.path.endswith("/threads")}
    reacted = {c.path.split("/")[4] for c in emulator.find("PUT", f"/channels/{ask_1}/messages/")}
    assert len(opened) == 20 and len(reacted) == 40 and not opened & reacted
    assert all(c.path.endswith("/reactions/⏳/@me") for c in emulator.find("PUT", "/channels/"))
    assert all(len(emulator.find("POST", f"/channels/{thread}/messages")) == 1 for thread in opened)
    per_reader = {}
    for message in sent["channel"]:
        if message["id"] in opened:
            per_reader[message["author"]["id"]] = per_reader.get(message["author"]["id"], 0) + 1
    assert sum(per_reader.values()) == 20 and max(per_reader.values()) <= 3  # who got them depends on arrival
    late = callback(emulator, sent["late"]).body
    assert late["type"] == 4 and late["data"]["flags"] & EPHEMERAL and "this server" in late["data"]["content"]

"""Topic follows end to end: the real discord.py client against the local Discord emulator.

An admin follows a topic; articles arrive (a polled feed, the operator's ingest); the bot posts each
matching story once, in its channel, within Discord's limits and without pings. The fake embedder's
similarities are bags of words, so the match threshold is set for it (the bundled model's is
measured by `newsdesk eval follow`).
"""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta

import pytest
from test_discord_bot import (  # noqa: F401 (fixtures)
    ARTICLES, FeedServer, any_backend, bot_config, callback, emulator, error_records, followups, indexed, news,
    sent_messages, with_bot,
)

from bench.discord_emulator import EPHEMERAL, MANAGE_GUILD
from bot.discordbot.delivery import AnnouncementDelivery
from bot.render import EMBED_DESCRIPTION_LIMIT, EMBED_TITLE_LIMIT, MESSAGE_LIMIT

TOPIC = "river floods evacuation"
FLOOD = ("Floods: river valley evacuation ordered", "https://cape.test/flood-evacuation",
         "The river burst its banks overnight and floods reached the valley villages. The evacuation of "
         "two thousand residents began at dawn, @everyone was told to leave, officials said.")
HARBOUR = ("Harbour crane contract awarded", "https://cape.test/crane",
           "The port authority awarded the crane contract to a local engineering firm on Monday.")


@pytest.fixture
def follow_config(bot_config):
    bot_config.follows.match_threshold = 0.3  # for the fake embedder's bag-of-words cosines
    bot_config.follows.delivery_window_minutes = 0
    return bot_config


def admin(emulator, guild: int = 0) -> dict:
    return {"user": emulator.user(f"admin{guild}"), "permissions": MANAGE_GUILD, "guild": guild}


def posts_in(emulator, channel_id: int) -> list[dict]:
    return [c.body for c in emulator.find("POST", f"/channels/{channel_id}/messages")]


def write_jsonl(path, rows) -> str:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return str(path)


def assert_within_limits(emulator) -> None:
    for call, message in sent_messages(emulator):
        assert len(message.get("content") or "") <= MESSAGE_LIMIT, call
        for embed in message.get("embeds") or []:
            assert len(embed.get("title", "")) <= EMBED_TITLE_LIMIT, call
            assert len(embed.get("description", "")) <= EMBED_DESCRIPTION_LIMIT, call


def test_a_followed_topic_gets_its_matching_stories_once_and_other_servers_never(
        any_backend, emulator, follow_config, indexed):
    general = [emulator.channel("general", g) for g in (0, 1)]
    # The feed's backlog, on its first read, is not news even where it matches.
    feed_items = [("Floods: last year's evacuation remembered", "https://cape.test/old-flood",
                   "A year after the river floods, villagers remembered the evacuation of the valley at a service.")]
    sent = {}

    async def scenario(bot):
        for guild in (0, 1):
            sent[guild] = await emulator.interaction("follow", {"topic": TOPIC}, **admin(emulator, guild))
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[guild]['token']}")
        async with FeedServer(feed_items) as url:
            # The first server's own feed, polled three times: its backlog, two new items, nothing new.
            own = f"guild:{emulator.guild_ids[0]}"
            await asyncio.to_thread(bot.feeds.add, url, collection=own, guild_id=emulator.guild_ids[0])
            polling = bot.get_cog("FeedPolling")
            for items in ([FLOOD, HARBOUR], [FLOOD, HARBOUR], None):
                await polling.poller.run(feeds=bot.feeds.feeds(collections=[own]))
                if items:
                    feed_items[:] = items
            await emulator.wait_for("POST", f"/channels/{general[0]}/messages")
            await asyncio.sleep(2.5)  # a delivery round or more: nothing else may come

    with_bot(emulator, follow_config, indexed, scenario)
    reply = followups(emulator, sent[0])[0].body
    assert TOPIC in reply["content"] and f"<#{general[0]}>" in reply["content"]
    (story,) = posts_in(emulator, general[0])
    embed = story["embeds"][0]
    assert TOPIC in story["content"] and embed["title"] == FLOOD[0] and embed["url"] == FLOOD[1]
    assert "[1]" in embed["description"] and f"]({FLOOD[1]})" in embed["description"]
    assert "evacuation" in embed["description"] and "@everyone" not in embed["description"].replace("@\u200beveryone", "")
    assert posts_in(emulator, general[1]) == []  # the other server follows it too, but the feed is not its
    assert_within_limits(emulator)


def test_syndicated_copies_fold_into_one_story_that_names_the_other_outlet(emulator, follow_config, indexed, tmp_path):
    original = {"title": FLOOD[0], "url": FLOOD[1], "outlet": "Cape News", "text": FLOOD[2]}
    copy = {**original, "url": "https://other.test/floods", "outlet": "Other Wire"}

    async def scenario(bot):
        command = await emulator.interaction("follow", {"topic": TOPIC}, **admin(emulator))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{command['token']}")
        report = await asyncio.to_thread(indexed.ingest, [write_jsonl(tmp_path / "wire.jsonl", [original, copy])])
        assert len(report.added) == 1 and len(report.duplicates) == 1
        await emulator.wait_for("POST", f"/channels/{emulator.channel('general')}/messages")
        await asyncio.sleep(2.5)

    with_bot(emulator, follow_config, indexed, scenario)
    (story,) = posts_in(emulator, emulator.channel("general"))
    assert "also Other Wire" in story["embeds"][0]["description"]


def test_another_outlets_write_up_within_the_delivery_window_is_named_in_the_story(
        emulator, follow_config, indexed, tmp_path):
    follow_config.follows.delivery_window_minutes = 0.05  # 3 s
    first = {"title": "River floods force valley evacuation", "url": "https://cape.test/first", "outlet": "Cape News",
             "text": "The river burst its banks and floods forced the evacuation of valley villages on Tuesday, "
                     "officials said. Boats carried residents to safety."}
    # The same story in other words: not a copy (ingest keeps both), but its opening passage is as close.
    second = {"title": "Valley villages evacuated as river floods", "url": "https://other.test/second",
              "outlet": "Other Wire",
              "text": "Officials said on Tuesday that valley villages were evacuated after the river burst its "
                      "banks. Residents were carried to safety by boats as floods rose."}
    general = emulator.channel("general")

    async def scenario(bot):
        command = await emulator.interaction("follow", {"topic": TOPIC}, **admin(emulator))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{command['token']}")
        assert len((await asyncio.to_thread(indexed.ingest, [write_jsonl(tmp_path / "a.jsonl", [first])])).added) == 1
        await asyncio.sleep(1.0)
        assert len((await asyncio.to_thread(indexed.ingest, [write_jsonl(tmp_path / "b.jsonl", [second])])).added) == 1
        await emulator.wait_for("POST", f"/channels/{general}/messages")
        await asyncio.sleep(5)  # past the second write-up's own time: it is not posted again

    with_bot(emulator, follow_config, indexed, scenario)
    (story,) = posts_in(emulator, general)
    assert story["embeds"][0]["url"] == first["url"] and "also Other Wire" in story["embeds"][0]["description"]


def test_past_the_hourly_cap_the_rest_wait_and_come_as_one_message(emulator, follow_config, indexed, tmp_path):
    follow_config.follows.max_posts_per_hour = 2
    # Four different stories (not one story told four times, which would fold into one message).
    texts = ["Ashford farmers counted drowned sheep in soaked meadows near orchards",
             "Brampton commuters faced cancelled trains because tracks collapsed under mud",
             "Carlow hospital moved patients upstairs while generators failed at midnight",
             "Dunmore brewery lost barley stocks and insurers sent assessors on Thursday"]
    stories = [{"title": " ".join(text.split()[:4]), "url": f"https://cape.test/{i}",
                "outlet": "Cape News", "text": f"{text}. River floods forced an evacuation."}
               for i, text in enumerate(texts)]
    general = emulator.channel("general")

    async def scenario(bot):
        await bot.remove_cog("AnnouncementDelivery")
        await bot.add_cog(AnnouncementDelivery(bot, every=0.2, cap_window=timedelta(seconds=3)))
        command = await emulator.interaction("follow", {"topic": TOPIC}, **admin(emulator))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{command['token']}")
        report = await asyncio.to_thread(indexed.ingest, [write_jsonl(tmp_path / "four.jsonl", stories)])
        assert len(report.added) == 4
        await emulator.wait_for("POST", f"/channels/{general}/messages", count=2)
        await asyncio.sleep(1.0)
        assert len(posts_in(emulator, general)) == 2  # the cap holds within its window
        await emulator.wait_for("POST", f"/channels/{general}/messages", count=3, timeout=10)
        await asyncio.sleep(1.0)

    with_bot(emulator, follow_config, indexed, scenario)
    first, second, grouped = posts_in(emulator, general)
    assert [first["embeds"][0]["title"], second["embeds"][0]["title"]] == [s["title"] for s in stories[:2]]
    assert grouped["content"].startswith(f"📌 2 more stories on *{TOPIC}*")
    assert all(f"(<{s['url']}>)" in grouped["content"] for s in stories[2:])
    assert_within_limits(emulator)


def test_a_match_made_while_the_bot_was_down_is_posted_when_it_returns_once(emulator, follow_config, indexed, tmp_path):
    general = emulator.channel("general")

    async def follow(bot):
        command = await emulator.interaction("follow", {"topic": TOPIC}, **admin(emulator))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{command['token']}")

    with_bot(emulator, follow_config, indexed, follow)
    # The bot is down: a worker (or the CLI) ingests a matching story.
    flood = {"title": FLOOD[0], "url": FLOOD[1], "outlet": "Cape News", "text": FLOOD[2]}
    assert len(indexed.ingest([write_jsonl(tmp_path / "flood.jsonl", [flood])]).added) == 1
    assert posts_in(emulator, general) == []

    async def back(bot):
        await emulator.wait_for("POST", f"/channels/{general}/messages")
        await asyncio.sleep(2.5)

    with_bot(emulator, follow_config, indexed, back)

    async def again(bot):
        await asyncio.sleep(2.5)

    with_bot(emulator, follow_config, indexed, again)
    (story,) = posts_in(emulator, general)
    assert story["embeds"][0]["url"] == FLOOD[1]


def test_follows_are_for_admins_and_bad_topics_get_a_clear_answer(emulator, follow_config, indexed):
    follow_config.follows.max_per_server = 1
    member = {"user": emulator.user("member")}
    notices = emulator.channels[emulator.channel("notices")]
    sent = {}

    async def scenario(bot):
        cases = {
            "member": ("follow", {"topic": TOPIC}, member),
            "empty": ("follow", {"topic": "   "}, admin(emulator)),
            "long": ("follow", {"topic": "floods " * 715}, admin(emulator)),
            "only_minus": ("follow", {"topic": "-football"}, admin(emulator)),
            "notices": ("follow", {"topic": TOPIC, "channel": notices}, admin(emulator)),
            "ok": ("follow", {"topic": TOPIC}, admin(emulator)),
            "second": ("follow", {"topic": "harbour cranes"}, admin(emulator)),
            "list_member": ("follows", {}, member),
            "list": ("follows", {}, admin(emulator)),
        }
        for name, (command, options, who) in cases.items():
            sent[name] = await emulator.interaction(command, options, **who)
            await emulator.wait_for("POST", f"/interactions/{sent[name]['id']}/{sent[name]['token']}/callback")
            if name in ("ok", "second", "list"):
                await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[name]['token']}")
        sent["choices"] = await emulator.interaction("unfollow", {"follow": "riv"}, autocomplete="follow",
                                                     **admin(emulator))
        sent["member_choices"] = await emulator.interaction("unfollow", {"follow": ""}, autocomplete="follow",
                                                            **member)
        for key in ("choices", "member_choices"):
            await emulator.wait_for("POST", f"/interactions/{sent[key]['id']}/{sent[key]['token']}/callback")
        (follow,) = await asyncio.to_thread(indexed.store.follows.follows, guild_id=emulator.guild_ids[0])
        sent["unfollow"] = await emulator.interaction("unfollow", {"follow": str(follow.id)}, **admin(emulator))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['unfollow']['token']}")

    with_bot(emulator, follow_config, indexed, scenario)

    def said(name) -> str:
        call = callback(emulator, sent[name])
        if call.body["type"] == 4:
            assert call.body["data"]["flags"] & EPHEMERAL
            return call.body["data"]["content"]
        return " ".join(c.body.get("content") or "" for c in followups(emulator, sent[name]))

    assert "Manage Server" in said("member") and "Manage Server" in said("list_member")
    assert "Give a topic" in said("empty")
    assert "at most 200 characters" in said("long")
    assert "not only what to leave out" in said("only_minus")
    assert "can't post in" in said("notices")
    assert "Following *river floods evacuation*" in said("ok")
    assert "1 follows already" in said("second")
    (listing,) = followups(emulator, sent["list"])
    assert TOPIC in listing.body["embeds"][0]["description"]
    choices = callback_choices(emulator, sent["choices"])
    assert [c["name"] for c in choices] == [f"{TOPIC} (#general)"]
    assert callback_choices(emulator, sent["member_choices"]) == []
    assert "Stopped following" in said("unfollow")
    assert indexed.store.follows.follows(guild_id=emulator.guild_ids[0]) == []
    assert_within_limits(emulator)


def callback_choices(emulator, interaction) -> list[dict]:
    return callback(emulator, interaction).body["data"]["choices"]


def test_a_follow_without_a_level_is_broad_when_its_topic_names_a_section(emulator, follow_config, indexed):
    general = emulator.channel("general")
    sent = {}

    async def scenario(bot):
        for name, options in (("section", {"topic": "weather and natural disasters"}), ("story", {"topic": TOPIC}),
                              ("asked", {"topic": "energy and power", "level": "normal"})):
            sent[name] = await emulator.interaction("follow", options, **admin(emulator))
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent[name]['token']}")
        async with FeedServer([FLOOD]) as url:  # a feed's filter is read the same way
            sent["feed"] = await emulator.interaction("feeds", {"url": url, "channel": emulator.channels[general],
                                                                "filter": "weather"}, subcommand="add", **admin(emulator))
            await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['feed']['token']}")
            for _ in range(1000):  # its first poll (the backlog) runs in the background
                if all(f.last_polled for f in bot.feeds.feeds(collections=[f"guild:{emulator.guild_ids[0]}"])):
                    break
                await asyncio.sleep(0.01)

    with_bot(emulator, follow_config, indexed, scenario)
    said = {name: followups(emulator, sent[name])[0].body["content"] for name in sent}
    assert "(broad: it names a whole section of the news)" in said["section"]
    assert f"*{TOPIC}* (normal)" in said["story"] and "*energy and power* (normal)" in said["asked"]
    assert "items on *weather* (broad: it names a whole section of the news)" in said["feed"]
    levels = {f.topic: f.level for f in indexed.store.follows.follows(guild_id=emulator.guild_ids[0])}
    assert levels == {"weather and natural disasters": "broad", TOPIC: "normal", "energy and power": "normal",
                      "weather": "broad"}


def test_a_follow_since_a_time_posts_the_matching_stories_already_indexed(emulator, follow_config, indexed):
    general = emulator.channel("general")
    sent = {}

    async def scenario(bot):
        sent["bad"] = await emulator.interaction("follow", {"topic": TOPIC, "since": "the day after"},
                                                 **admin(emulator))
        sent["ok"] = await emulator.interaction("follow", {"topic": '"river valley" floods evacuation', "since": "24h"},
                                                **admin(emulator))
        await emulator.wait_for("POST", f"/channels/{general}/messages")
        await asyncio.sleep(2.5)

    with_bot(emulator, follow_config, indexed, scenario)
    assert callback(emulator, sent["bad"]).body["data"]["content"].startswith("Can't read the date 'the day after'")
    assert "1 already indexed since 24h matched" in followups(emulator, sent["ok"])[0].body["content"]
    (story,) = posts_in(emulator, general)  # the indexed flood story; the others lack "river valley"
    assert story["embeds"][0]["url"] == ARTICLES[1]["url"]


def test_a_feed_with_a_filter_announces_only_its_matching_new_items_in_its_format(emulator, follow_config, indexed):
    general = emulator.channel("general")
    flood_feed = [("Old harbour story", "https://a.test/old", "The harbour board met on Monday to discuss fees.")]
    harbour_feed = [("Old flood story", "https://b.test/old", "River floods and an evacuation last year.")]
    sent = {}

    async def scenario(bot):
        async with FeedServer(flood_feed) as a_url, FeedServer(harbour_feed) as b_url:
            sent["a"] = await emulator.interaction("feeds", {"url": a_url, "channel": emulator.channels[general],
                                                             "filter": TOPIC, "format": "summary"},
                                                   subcommand="add", **admin(emulator))
            sent["b"] = await emulator.interaction("feeds", {"url": b_url, "channel": emulator.channels[general],
                                                             "filter": "harbour crane contract", "format": "headline"},
                                                   subcommand="add", **admin(emulator))
            for _ in range(1000):  # both first polls (their backlogs) run in the background
                feeds = bot.feeds.feeds(collections=[f"guild:{emulator.guild_ids[0]}"])
                if len(feeds) == 2 and all(f.last_polled for f in feeds):
                    break
                await asyncio.sleep(0.01)
            # New items in both: each feed announces only those on its own filter.
            flood_feed[:] = [FLOOD, ("Market prices steady", "https://a.test/market", "Market prices held steady.")]
            harbour_feed[:] = [HARBOUR, ("Flood warning", "https://b.test/flood", FLOOD[2])]
            await bot.get_cog("FeedPolling").poller.run(feeds=feeds)
            await emulator.wait_for("POST", f"/channels/{general}/messages", count=2)
            await asyncio.sleep(2.5)

    with_bot(emulator, follow_config, indexed, scenario)
    assert "as summaries" in followups(emulator, sent["a"])[0].body["content"]
    story, headlines = sorted(posts_in(emulator, general), key=lambda body: bool(body.get("embeds")), reverse=True)
    assert story["embeds"][0]["url"] == FLOOD[1] and "[1]" in story["embeds"][0]["description"]
    assert HARBOUR[1] in headlines["content"] and "a.test" not in headlines["content"]
    assert "b.test/flood" not in headlines["content"] and not headlines.get("embeds")
    assert_within_limits(emulator)

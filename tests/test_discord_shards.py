"""A bot process that holds some of the gateway's shards, in this process against the emulator: it
connects only its shards, registers the commands only if it holds shard 0, polls no feed when
workers do, and posts the announcements of its shards' servers (a channel that is gone is given up,
an article not yet readable waited for). The multi-process deployment is in test_scale_out.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from test_discord_bot import (  # noqa: F401 (bot_config, emulator, error_records, indexed and news are fixtures)
    ARTICLES, bot_config, emulator, error_records, indexed, news, with_bot,
)

from bot.config import ConfigError
from bot.discordbot import create_bot
from index.article import make_article_id
from index.store import Announcement, Shards


def holding(config, shards: str):
    config.discord.shard_count, config.discord.shard_ids = 2, shards
    config.feeds.poll_in_bot = False
    config.discord.post_headlines = True
    return config


def test_a_process_holding_shard_0_posts_its_servers_announcements_once(emulator, bot_config, indexed):
    holding(bot_config, "0")
    outbox = indexed.store.outbox
    ids = [make_article_id(url=a["url"]) for a in ARTICLES]
    general = {g: emulator.channel("general", g) for g in (0, 1)}
    mine = outbox.add(Announcement(emulator.guild_ids[0], general[0], tuple(ids[:2])))
    theirs = outbox.add(Announcement(emulator.guild_ids[1], general[1], tuple(ids[2:])))
    outbox.add(Announcement(emulator.guild_ids[0], 999, tuple(ids[:1])))  # a channel deleted since
    outbox.add(Announcement(emulator.guild_ids[0], general[0], ("not-readable-yet",)))
    seen = {}

    async def scenario(bot):
        seen["cogs"] = sorted(bot.cogs)
        seen["shards"] = sorted(bot.shards)
        await emulator.wait_for("POST", f"/channels/{general[0]}/messages")
        await emulator.wait_for("POST", "/channels/999/messages")
        # The emulator has answered the deleted channel's post with a 404; the bot gives it up once
        # that answer reaches it, which may be a moment later.
        for _ in range(200):
            if outbox.unsent() <= 2:
                break
            await asyncio.sleep(0.05)
        seen["posted"] = await bot.get_cog("AnnouncementDelivery").deliver()  # again: nothing new to post

    with_bot(emulator, bot_config, indexed, scenario)
    assert "AnnouncementDelivery" in seen["cogs"] and "FeedPolling" not in seen["cogs"]  # workers poll
    assert seen["shards"] == [0] and emulator.identified == [(0, 2)] and seen["posted"] == 0
    assert emulator.find("PUT", f"/applications/{emulator.application_id}/commands")  # shard 0 registers them
    (posted,) = [m for m in emulator.messages_in(general[0]) if m["content"].startswith("📰")]
    assert ARTICLES[0]["url"] in posted["content"] and ARTICLES[1]["url"] in posted["content"]
    (call,) = emulator.find("POST", f"/channels/{general[0]}/messages")
    assert call.body["nonce"] == f"nd{mine}-0" and call.body["enforce_nonce"] is True
    assert not emulator.find("POST", f"/channels/{general[1]}/messages")  # shard 1's server: not ours
    # Left: shard 1's, for its process, and the one whose article is not readable yet (a replica
    # catching up), leased to this process, which tries again when the lease runs out. The deleted
    # channel's was given up: it counts as done.
    assert outbox.unsent() == 2
    assert [a.id for a in outbox.take(holder="shard-1", shards=Shards((1,), 2), lease=timedelta(seconds=1))] == [theirs]
    assert outbox.take(holder="check", shards=Shards((0,), 2), lease=timedelta(seconds=1)) == []  # still leased


def test_a_process_without_shard_0_registers_no_commands(emulator, bot_config, service):
    holding(bot_config, "1")
    seen = {}

    async def scenario(bot):
        seen["shards"] = sorted(bot.shards)

    with_bot(emulator, bot_config, service, scenario)
    assert seen["shards"] == [1] and emulator.identified == [(1, 2)]
    assert not emulator.find("PUT", f"/applications/{emulator.application_id}/commands")


def test_a_process_with_some_shards_must_leave_the_feeds_to_workers(bot_config, service):
    bot_config.discord.shard_count, bot_config.discord.shard_ids = 2, "0"
    with pytest.raises(ConfigError, match="poll_in_bot = false"):
        asyncio.run(create_bot(bot_config, service))
    for bad in ("2", "1-0", "a", "0,,1"):
        with pytest.raises(ConfigError, match="shard_ids"):
            type(bot_config.discord)(shard_count=2, shard_ids=bad).shards

"""A language model's answer shown in Discord while it is written.

The throttle and the thread-to-loop bridge are tested on their own with a fake clock; then the real
discord.py client, against the local Discord emulator and a local OpenAI-compatible server that
writes one word at a time, shows drafts and replaces them with the checked answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import SimpleNamespace

import discord
import pytest
from fakes import FakeClock
from openai_fake import FakeOpenAI, Reply as ModelReply
from test_discord_bot import (  # noqa: F401 (bot_config, emulator, error_records and news are fixtures)
    ARTICLES,
    EPHEMERAL,
    assert_links_resolve,
    bot_config,
    callback,
    emulator,
    error_records,
    followups,
    news,
    source_links,
    with_bot,
)

from bot.config import ConfigError, DiscordSettings
from bot.discordbot.streaming import DraftThrottle, StreamingDraft
from bot.render import DRAFT_NOTE, MESSAGE_LIMIT, safe_text
from bot.service import NewsService

NATO_QUESTION = "Why did NATO suspend its training mission in Iraq?"
SUPPORTED = (
    "NATO has suspended its training mission in Iraq after the killing of Iranian commander Qassem Soleimani [1]. "
    "The alliance suspended the training because the safety of its personnel in Iraq is paramount [1]."
)
# Untrue to its sources, and it repeats a ping an article might carry.
UNSUPPORTED = "@everyone Once upon a time there was a little girl named Lily [1]. She loved to play in the park [2]."
WORD_SECONDS = 0.02  # the fake model's pace: an answer takes about half a second to write
DRAFT_SECONDS = 0.05


def draft_text(content: str) -> str:
    assert content.endswith(DRAFT_NOTE), content
    return content.removesuffix(DRAFT_NOTE)


# -- the throttle -----------------------------------------------------------------------------------


def test_the_first_text_shows_at_once_then_at_most_one_draft_per_interval():
    clock = FakeClock()
    throttle = DraftThrottle(1.0, clock=clock)

    assert draft_text(throttle.run("NATO").content) == "NATO"
    assert throttle.run("NATO has") is None
    clock.now += 0.999
    assert throttle.run("NATO has suspended") is None
    clock.now += 0.001
    assert draft_text(throttle.run("NATO has suspended its").content) == "NATO has suspended its"
    clock.now += 5
    assert throttle.run("NATO has suspended its ") is None  # looks the same: not worth an edit


def test_a_draft_is_escaped_and_clipped_to_one_message_and_stops_changing_there():
    clock = FakeClock()
    throttle = DraftThrottle(1.0, clock=clock)
    text = "Fans were told: @everyone <@&123456789012345678> leave the stadium calmly [1]. " * 40

    content = throttle.run(text).content

    assert len(content) <= MESSAGE_LIMIT
    assert draft_text(content).endswith("…")
    assert "@everyone" not in content and "@\u200beveryone" in content
    assert "<@&" not in content
    clock.now += 10
    assert throttle.run(text + "More words past the limit change nothing that shows.") is None


def test_the_interval_must_be_positive():
    with pytest.raises(ValueError, match="positive"):
        DraftThrottle(0)
    with pytest.raises(ConfigError, match="draft_edit_seconds"):
        DiscordSettings(draft_edit_seconds=0)


# -- from the worker thread to the event loop ---------------------------------------------------------


async def until(condition) -> None:
    """Lets the event loop run until `condition` holds (a bounded number of turns, no clock)."""
    for _ in range(10_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("the event loop never got there")


def test_drafts_cross_from_the_worker_thread_one_edit_at_a_time_and_leaving_waits_for_the_last():
    clock = FakeClock()
    shown: list[str] = []
    finished = [0]

    async def main() -> None:
        release = asyncio.Event()

        async def show(replies):
            shown.append(draft_text(replies[0].content))
            await release.wait()
            finished[0] += 1

        draft = StreamingDraft(show, interval=1.0, clock=clock)

        async def answer() -> int:
            async with draft:
                await asyncio.to_thread(draft.push, "NATO")  # pushed from a worker thread, as service.ask does
                await until(lambda: shown == ["NATO"])
                clock.now += 10
                await asyncio.to_thread(draft.push, "NATO has suspended")  # an edit is in flight: dropped
                release.set()
                await until(lambda: finished[0] == 1)
                release.clear()
                clock.now += 10
                await asyncio.to_thread(draft.push, "NATO has suspended its training")
                await until(lambda: len(shown) == 2)
            return finished[0]

        answering = asyncio.create_task(answer())
        await until(lambda: len(shown) == 2)
        release.set()
        assert await answering == 2  # the block was left only once the edit in flight was done
        draft.push("a late piece")  # a worker may keep streaming after the command gave up on it
        for _ in range(10):
            await asyncio.sleep(0)

    asyncio.run(main())
    assert shown == ["NATO", "NATO has suspended its training"]


def test_a_failed_edit_is_logged_and_the_next_draft_still_shows(caplog):
    clock = FakeClock()
    shown: list[str] = []

    async def flaky_show(replies):
        shown.append(draft_text(replies[0].content))
        if len(shown) == 1:
            raise discord.HTTPException(SimpleNamespace(status=500, reason="Server Error"), "try later")

    async def main() -> None:
        async with StreamingDraft(flaky_show, interval=1.0, clock=clock) as draft:
            await asyncio.to_thread(draft.push, "NATO")
            await until(lambda: "could not show a draft" in caplog.text)
            clock.now += 10
            await asyncio.to_thread(draft.push, "NATO has suspended")

    with caplog.at_level(logging.WARNING, logger="bot.discordbot.streaming"):
        asyncio.run(main())
    assert shown == ["NATO", "NATO has suspended"]


# -- end to end: the real client, the Discord emulator and a model writing word by word -----------------


@pytest.fixture
def llm_service(bot_config, fake_embedder, news):
    """Call it with the model's scripted replies: a NewsService whose answers a local fake model writes."""
    with contextlib.ExitStack() as stack:

        def start(replies: list[ModelReply]) -> NewsService:
            fake = stack.enter_context(FakeOpenAI(replies))
            bot_config.llm.base_url, bot_config.llm.model = fake.base_url, "test-model"
            bot_config.discord.draft_edit_seconds = DRAFT_SECONDS
            service = NewsService(bot_config, embedder=fake_embedder)
            shared, _ = news
            assert len(service.ingest([str(shared)]).added) == len(ARTICLES)
            return service

        yield start


def original_path(emulator, interaction: dict) -> str:
    return f"/webhooks/{emulator.application_id}/{interaction['token']}/messages/@original"


def has_embed(call) -> bool:
    return bool(call.body.get("embeds"))


def is_a_post(call) -> bool:
    """A message posted, not a thread opened on one."""
    return call.path.endswith("/messages")


def test_slash_answers_show_while_written_then_the_checked_answer_or_the_fallback_replaces_them(
    emulator, bot_config, llm_service
):
    service = llm_service([ModelReply(SUPPORTED, pace=WORD_SECONDS), ModelReply(UNSUPPORTED, pace=WORD_SECONDS)])
    sent = {}

    async def scenario(bot):
        for key in ("checked", "fallback"):
            sent[key] = await emulator.interaction("ask", {"question": NATO_QUESTION}, user=emulator.user(key))
            await emulator.wait_for("PATCH", original_path(emulator, sent[key]), has_embed)

    with_bot(emulator, bot_config, service, scenario)
    for key, written in (("checked", SUPPORTED), ("fallback", UNSUPPORTED)):
        interaction = sent[key]
        defer = callback(emulator, interaction)
        assert defer.body == {"type": 5}
        *drafts, final = emulator.find("PATCH", original_path(emulator, interaction))
        assert drafts, "the answer was done before any draft showed"
        assert emulator.calls.index(defer) < emulator.calls.index(drafts[0])
        texts = [draft_text(d.body["content"]) for d in drafts]
        assert all(safe_text(written).startswith(t) for t in texts)  # the model's words so far, escaped
        assert [len(t) for t in texts] == sorted({len(t) for t in texts})  # growing, no edit repeated
        assert not any(has_embed(d) for d in drafts)
        assert DRAFT_NOTE not in final.body["content"]
        assert not followups(emulator, interaction)  # the answer took the draft's place, no second message
        assert_links_resolve(service, source_links(final.body["embeds"][0]))

    checked = emulator.find("PATCH", original_path(emulator, sent["checked"]))[-1].body
    assert checked["content"].startswith("NATO has suspended its training mission in Iraq")
    assert checked["embeds"][0]["footer"]["text"] == "llm answer"
    fallback_drafts = emulator.find("PATCH", original_path(emulator, sent["fallback"]))
    assert draft_text(fallback_drafts[0].body["content"]) == "@\u200beveryone"  # the first word, made harmless
    fallback = fallback_drafts[-1].body
    assert "Lily" not in fallback["content"] and "not supported by its sources" in fallback["content"]
    assert fallback["embeds"][0]["footer"]["text"] == "extractive answer"


def test_a_channel_question_is_answered_in_one_message_edited_as_it_is_written(emulator, bot_config, llm_service):
    service = llm_service([ModelReply(SUPPORTED, pace=WORD_SECONDS)])
    sent = {}

    async def scenario(bot):
        sent["question"] = await emulator.message(NATO_QUESTION, user=emulator.user("nia"), channel="ask")
        thread = sent["question"]["id"]  # a thread opened on a message has the message's id
        await emulator.wait_for("PATCH", f"/channels/{thread}/messages/", has_embed)

    with_bot(emulator, bot_config, service, scenario)
    thread = sent["question"]["id"]
    (posted,) = emulator.find("POST", f"/channels/{thread}/messages")
    assert draft_text(posted.body["content"]) == "NATO"  # the first draft opens the message
    *drafts, final = emulator.find("PATCH", f"/channels/{thread}/messages/")
    assert drafts and all(safe_text(SUPPORTED).startswith(draft_text(d.body["content"])) for d in drafts)
    assert final.body["content"].startswith("NATO has suspended its training mission in Iraq")
    assert_links_resolve(service, source_links(final.body["embeds"][0]))
    (message,) = emulator.messages_in(thread)
    assert final.path.endswith(f"/messages/{message['id']}")
    assert (message["content"], message["embeds"]) == (final.body["content"], final.body["embeds"])


def test_a_failure_after_a_draft_takes_the_draft_back(emulator, bot_config, llm_service, error_records):
    service = llm_service([ModelReply(SUPPORTED)])

    def failing_ask(question, *, on_text=None, **kwargs):
        on_text("NATO has suspended")
        raise RuntimeError("index on fire")

    service.ask = failing_ask
    sent = {}

    async def scenario(bot):
        sent["slash"] = await emulator.interaction("ask", {"question": NATO_QUESTION}, user=emulator.user("olga"))
        await emulator.wait_for("POST", f"/webhooks/{emulator.application_id}/{sent['slash']['token']}")
        sent["channel"] = await emulator.message(NATO_QUESTION, user=emulator.user("piet"), channel="ask")
        await emulator.wait_for("POST", f"/channels/{emulator.channel('ask')}/messages", is_a_post)

    with_bot(emulator, bot_config, service, scenario)
    (draft,) = emulator.find("PATCH", original_path(emulator, sent["slash"]))
    assert draft_text(draft.body["content"]) == "NATO has suspended"
    (deleted,) = emulator.find("DELETE", original_path(emulator, sent["slash"]))
    (note,) = followups(emulator, sent["slash"])
    assert emulator.calls.index(draft) < emulator.calls.index(deleted) < emulator.calls.index(note)
    assert note.body["flags"] & EPHEMERAL and "index on fire" not in note.body["content"]

    thread = sent["channel"]["id"]
    (posted,) = emulator.find("POST", f"/channels/{thread}/messages")
    assert draft_text(posted.body["content"]) == "NATO has suspended"
    (deleted,) = emulator.find("DELETE", f"/channels/{thread}/messages/")
    assert deleted.status == 204 and emulator.messages_in(thread) == []
    (note,) = emulator.find("POST", f"/channels/{emulator.channel('ask')}/messages", is_a_post)
    assert str(note.body["message_reference"]["message_id"]) == sent["channel"]["id"]  # replying to the question
    assert len(error_records) == 2 and all("index on fire" in str(r.exc_info[1]) for r in error_records)
    error_records.clear()

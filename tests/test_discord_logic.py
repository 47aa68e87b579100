"""The Discord side's plain logic, without Discord: permissions, rate limits, tenancy, autocomplete,
channel-question rules, the feed registry and the poller."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import datetime, time, timedelta, timezone

import pytest
from fakes import FakeClock

from bot.config import ConfigError, DiscordSettings, FeedSettings, FeedsSettings
from bot.discordbot.ask import is_for_bot, question_text, thread_name, without_discord_markup
from bot.discordbot.autocomplete import MAX_CHOICES, pick_article, since_choices, title_choices
from bot.discordbot.digest import parse_clock
from bot.discordbot.errors import NotAdmin, RateLimited, UserError, user_message
from bot.discordbot.permissions import is_admin
from bot.discordbot.ratelimit import RateLimiter, Refusal, RequestLimits
from bot.discordbot.scope import filters_for
from bot.feeds import FeedPoller, config_feeds
from index.article import Failure
from index.ingest import IngestReport
from index.store import StoreError
from index.store.sqlite_feeds import SQLiteFeedRegistry
from index.urls import check_feed_url, public_url, redact_url

NOW = datetime(2026, 1, 7, 12, tzinfo=timezone.utc)


def test_admins_have_manage_server_or_the_configured_role_by_name_or_id():
    roles = [(11, "News Admin"), (12, "Member")]
    assert is_admin(manage_guild=True, roles=[], admin_role="")
    assert is_admin(manage_guild=False, roles=roles, admin_role="News Admin")
    assert is_admin(manage_guild=False, roles=roles, admin_role="11")
    assert not is_admin(manage_guild=False, roles=roles, admin_role="")
    assert not is_admin(manage_guild=False, roles=roles, admin_role="Moderator")
    assert not is_admin(manage_guild=False, roles=[(13, "news admin")], admin_role="News Admin")


def test_a_rate_limiter_allows_a_burst_then_refills_steadily_per_key():
    clock = FakeClock()
    limiter = RateLimiter(3, 60, clock=clock)
    for _ in range(3):
        assert limiter.wait("alice") == 0
        limiter.take("alice")
    assert limiter.wait("alice") == pytest.approx(20)  # one request's worth refills every 60/3 s
    assert limiter.wait("bob") == 0  # keys are independent
    clock.now += 5
    assert limiter.wait("alice") == pytest.approx(15)
    clock.now += 15
    assert limiter.wait("alice") == 0
    limiter.take("alice")
    assert limiter.wait("alice") == pytest.approx(20)
    clock.now += 3600  # a long pause refills the bucket only up to the burst size
    for _ in range(3):
        limiter.take("alice")
    assert limiter.wait("alice") == pytest.approx(20)


def test_a_rate_limiter_forgets_full_buckets_to_bound_memory_without_changing_answers():
    clock = FakeClock()
    limiter = RateLimiter(1, 60, clock=clock)
    for user in range(10_000):
        limiter.take(user)
    limiter.take("late")  # 10,000 buckets, none full yet: all are kept
    assert limiter.wait(0) == pytest.approx(60) and limiter.wait("late") == pytest.approx(60)
    clock.now += 60  # every bucket is full again
    limiter.take("hot")
    assert len(limiter._buckets) == 1  # the full ones were forgotten…
    assert limiter.wait(0) == 0 and limiter.wait("hot") == pytest.approx(60)  # …which changes no answer


def test_a_rate_limiter_of_zero_requests_never_limits_and_bad_settings_are_refused():
    unlimited = RateLimiter(0, 60, clock=FakeClock())
    for _ in range(1000):
        unlimited.take(1)
    assert unlimited.wait(1) == 0
    with pytest.raises(ValueError, match="requests"):
        RateLimiter(-1, 60)
    with pytest.raises(ValueError, match="window_seconds"):
        RateLimiter(3, 0)


def test_a_request_counts_against_the_member_and_the_server_or_neither():
    clock = FakeClock()
    limits = RequestLimits(user=RateLimiter(2, 60, clock=clock), server=RateLimiter(5, 50, clock=clock))
    answered = {user: sum(limits.try_acquire(user, 7) is None for _ in range(4)) for user in (1, 2, 3)}
    assert answered == {1: 2, 2: 2, 3: 1}  # five for the server in all, at most two each
    assert limits.try_acquire(1, 7) == Refusal("user", pytest.approx(30))  # user 1's own wait is the longer
    assert limits.try_acquire(3, 7) == Refusal("server", pytest.approx(10))
    assert limits.try_acquire(5, 8) is None  # another server has its own allowance
    clock.now += 10  # one request's worth back for server 7; user 3 still has one left
    assert limits.try_acquire(3, 7) is None
    assert limits.try_acquire(4, 7) == Refusal("server", pytest.approx(10))


def test_limits_come_from_the_discord_settings():
    limits = RequestLimits.from_settings(DiscordSettings(user_requests=1, user_window_seconds=30, server_requests=0),
                                         clock=FakeClock())
    assert limits.try_acquire(1, 7) is None
    assert limits.try_acquire(1, 7) == Refusal("user", pytest.approx(30))
    assert all(limits.try_acquire(user, 7) is None for user in range(2, 200))  # no server limit


def test_user_messages_for_refusals_and_none_for_bugs():
    assert "Manage Server" in user_message(NotAdmin("x"))
    assert user_message(RateLimited(Refusal("user", 6.6))) == "Slow down a little: you can ask again in 7 s."
    assert user_message(RateLimited(Refusal("server", 0.2))) == (
        "Lots of questions in this server right now: please ask again in 1 s.")
    with pytest.raises(ValueError, match="scope"):
        Refusal("channel", 1.0)
    assert user_message(UserError("Bad date.")) == "Bad date."
    assert user_message(RuntimeError("boom")) is None
    # A database that is restarting is neither a bug nor the member's to fix; its details stay in the log.
    unavailable = user_message(StoreError("PostgreSQL is unavailable: connection refused"))
    assert "try again" in unavailable and "PostgreSQL" not in unavailable


def test_a_server_sees_the_shared_collection_and_its_own_only():
    filters = filters_for(42, since="24h", source=" Test Wire ", now=NOW)
    assert filters.collections == ("shared", "guild:42")
    assert filters.since == NOW - timedelta(hours=24)
    assert filters.outlets == ("Test Wire",)
    assert filters_for(42).since is None and filters_for(42).outlets == ()
    with pytest.raises(UserError, match="24h"):
        filters_for(42, since="next tuesday")


def test_since_choices_stay_within_discords_limit_and_offer_what_parses():
    assert 0 < len(since_choices("")) <= MAX_CHOICES
    assert [c.value for c in since_choices("week")] == ["this week"]
    assert since_choices("36h")[0].value == "36h"
    assert since_choices("blah") == []


def test_title_choices_fit_discord_and_lead_back_to_the_article():
    long_title = "A" * 150
    rows = [("id-1", "Floods in the valley"), ("id-2", long_title), ("id-3", "Floods in the valley")]
    choices = title_choices(rows * 20)
    assert len(choices) == 2
    assert all(len(c.name) <= 100 and len(c.value) <= 100 for c in choices)
    assert pick_article(rows, choices[1].value) == "id-2"
    assert pick_article(rows, "floods in the VALLEY") == "id-1"
    assert pick_article([], "anything") is None
    # For removal, only a whole title (or a choice's value) names an article: no guessing.
    assert pick_article(rows, choices[1].value, exact=True) == "id-2"
    assert pick_article(rows, "floods in the VALLEY", exact=True) == "id-1"
    assert pick_article(rows, "Floods", exact=True) is None and pick_article(rows, "Floods") == "id-1"


def test_channel_questions_are_mentions_ask_channels_and_the_bots_threads():
    assert question_text("<@99> what   happened <@!99> today?", 99) == "what happened today?"
    assert question_text("<@99>", 99) == ""
    assert is_for_bot(mentioned=True, channel_id=1, ask_channels=[], in_own_thread=False)
    assert is_for_bot(mentioned=False, channel_id=5, ask_channels=[5], in_own_thread=False)
    assert is_for_bot(mentioned=False, channel_id=7, ask_channels=[5], in_own_thread=True)
    assert not is_for_bot(mentioned=False, channel_id=7, ask_channels=[5], in_own_thread=False)
    assert len(thread_name("word " * 100)) <= 90 and thread_name("") == "question"


def test_a_thread_is_named_after_the_question_without_discord_markup():
    assert thread_name("@everyone <@&123> what did NATO suspend?") == "what did NATO suspend?"
    assert without_discord_markup("<@1>, <@!2> and <#3>: who won?") == "and : who won?"
    assert without_discord_markup("<#3>: who won?") == "who won?"  # the punctuation a mention left
    assert without_discord_markup("see </feeds add:42> at <t:1700000000:R> <t:1700000000>") == "see at"
    assert without_discord_markup("<:wave:11> hi <a:dance:22> @here") == ":wave: hi :dance:"
    assert without_discord_markup("- -5 degrees, mail bob@here.com?") == "-5 degrees, mail bob@here.com?"
    # Nothing left: the default name; mentions do not count towards the length limit.
    assert thread_name("<@1> <@&2> @everyone ?!") == "question"
    long = thread_name("<@&123> " * 20 + "why " * 40)
    assert long.startswith("why why") and long.endswith("…") and len(long) <= 90


def test_feed_urls_must_be_http():
    assert check_feed_url(" https://feeds.test/rss ") == "https://feeds.test/rss"
    for bad in ("file:///etc/passwd", "/etc/passwd", "ftp://x.test/f", "https://", "x" * 3000):
        with pytest.raises(ValueError):
            check_feed_url(bad)


class IngestingService:
    """Records which thread each ingest ran on and whether it was guarded; fails for URLs containing 'broken'."""

    def __init__(self):
        self.calls: list[tuple[list[str], str, str]] = []
        self.untrusted: dict[tuple[str, str], bool] = {}
        self.backlog: dict[tuple[str, str], bool] = {}

    def ingest(self, sources, *, collection="shared", progress=False, untrusted=False, backlog=False):
        self.calls.append((sources, collection, threading.current_thread().name))
        self.untrusted[(sources[0], collection)] = untrusted
        self.backlog[(sources[0], collection)] = backlog
        if "broken" in sources[0]:
            raise OSError("connection refused")
        if "partial" in sources[0]:
            return IngestReport(failed=[Failure(sources[0], "HTTP 404")])
        return IngestReport(added=[f"{sources[0]}#1", f"{sources[0]}#2"])


def test_poller_ingests_due_feeds_off_the_event_loop_and_records_failures(tmp_path):
    registry = SQLiteFeedRegistry(tmp_path / "feeds.sqlite3")
    registry.sync_config(config_feeds(FeedSettings(u) for u in ("https://ok.test/rss", "https://broken.test/rss",
                                                                 "https://partial.test/rss")))
    registry.add("https://ok.test/rss", collection="guild:1")
    service = IngestingService()
    poller = FeedPoller(registry, service, every=timedelta(minutes=30), clock=lambda: NOW)

    results = asyncio.run(poller.run())
    assert {(r.feed.url, r.feed.collection, len(r.added), r.first_poll) for r in results} == {
        ("https://ok.test/rss", "shared", 2, True), ("https://ok.test/rss", "guild:1", 2, True),
        ("https://broken.test/rss", "shared", 0, True), ("https://partial.test/rss", "shared", 0, True)}
    assert all(thread != threading.main_thread().name for _, _, thread in service.calls)
    # A server's own feed came from its members: fetched with the private-address guard.
    assert service.untrusted[("https://ok.test/rss", "guild:1")] is True
    assert service.untrusted[("https://ok.test/rss", "shared")] is False
    assert all(service.backlog.values())  # every feed's first read: its own announcements skip it
    errors = {f.url: f.last_error for f in registry.feeds()}
    assert errors["https://broken.test/rss"] == "OSError: connection refused"
    assert errors["https://partial.test/rss"] == "HTTP 404"
    assert errors["https://ok.test/rss"] is None
    assert asyncio.run(poller.run()) == []  # nothing is due again within the interval
    again = asyncio.run(FeedPoller(registry, service, every=timedelta(minutes=30),
                                   clock=lambda: NOW + timedelta(hours=1)).run())
    assert len(again) == 4 and not any(r.first_poll for r in again)


class UnreachableRegistry:
    """A feed registry whose database is down until `up` is set."""

    def __init__(self, registry):
        self.registry, self.up = registry, False

    def __getattr__(self, name):
        if not self.up:
            raise StoreError("PostgreSQL is unavailable: connection refused")
        return getattr(self.registry, name)


def test_a_database_outage_skips_polling_rounds_without_ending_the_loop(tmp_path, caplog):
    from types import SimpleNamespace

    from bot.config import Config
    from bot.discordbot.polling import FeedPolling

    registry = UnreachableRegistry(SQLiteFeedRegistry(tmp_path / "feeds.sqlite3"))
    service = IngestingService()
    async def ready() -> None:
        pass

    bot = SimpleNamespace(feeds=registry, service=service, config=Config(), wait_until_ready=ready)
    polling = FeedPolling(bot)
    with caplog.at_level(logging.WARNING, logger="bot.discordbot.polling"):
        asyncio.run(polling.poll_due())  # raises nothing: tasks.loop would stop for good on an exception
    assert "skipped a round: PostgreSQL is unavailable" in caplog.text and service.calls == []
    registry.up = True
    registry.add("https://ok.test/rss", collection="guild:1")
    asyncio.run(polling.poll_due())
    assert [call[:2] for call in service.calls] == [(["https://ok.test/rss"], "guild:1")]


def test_settings_are_checked_when_loaded():
    assert parse_clock("07:30") == time(7, 30, tzinfo=timezone.utc)
    for bad, message in (({"digest_time": "7:3"}, "digest_time"), ({"digest_time": "25:00"}, "digest_time"),
                         ({"user_requests": -1}, "user_requests"), ({"server_requests": -5}, "server_requests"),
                         ({"user_window_seconds": 0.0}, "user_window_seconds"),
                         ({"server_window_seconds": -1.0}, "server_window_seconds"),
                         ({"api_base": "discord.com"}, "api_base"),
                         ({"gateway_url": "https://gateway.test"}, "gateway_url")):
        with pytest.raises(ConfigError, match=f"discord.{message}: "):
            DiscordSettings(**bad)
    with pytest.raises(ConfigError):
        FeedsSettings(poll_minutes=0)


def test_credentials_in_urls_are_redacted_for_display():
    assert redact_url("https://user:pa@ss@feeds.test:8080/rss.xml?token=abc&page=2&API_KEY=x#top") == (
        "https://redacted@feeds.test:8080/rss.xml?token=redacted&page=2&API_KEY=redacted#top")
    assert redact_url("https://feeds.test/rss?access_token=a&apikey=b&key=c&keyword=d") == (
        "https://feeds.test/rss?access_token=redacted&apikey=redacted&key=redacted&keyword=d")
    assert redact_url("http://[broken/rss?token=t") == "http://[broken/rss?token=redacted"  # does not parse
    for unchanged in ("https://feeds.test/rss.xml?page=2", "https://feeds.test/a@b", "/srv/news/feed.xml", ""):
        assert redact_url(unchanged) == unchanged


def test_public_urls_leave_credentials_out():
    assert public_url("https://user:pa@ss@news.test:8080/story?token=abc&page=2&API_KEY=x#top") == (
        "https://news.test:8080/story?page=2#top")
    assert public_url("https://news.test/story?key=c") == "https://news.test/story"
    for unchanged in ("https://news.test/story?page=2&keyword=d", "https://news.test/a@b", "/srv/news/story.html"):
        assert public_url(unchanged) == unchanged


def test_the_poller_logs_a_failing_feed_without_its_credentials(tmp_path, caplog):
    registry = SQLiteFeedRegistry(tmp_path / "feeds.sqlite3")
    registry.add("https://reader:hunter2@broken.test/rss?token=tok123", collection="guild:1")
    poller = FeedPoller(registry, IngestingService(), every=timedelta(minutes=30), clock=lambda: NOW)
    with caplog.at_level(logging.INFO, logger="bot.feeds"):
        (result,) = asyncio.run(poller.run())
    assert result.error and "broken.test" in caplog.text
    assert "hunter2" not in caplog.text and "tok123" not in caplog.text and "reader" not in caplog.text

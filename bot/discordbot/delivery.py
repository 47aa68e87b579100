"""Posting what the outbox holds: follows' matches, and the headlines that feed workers announce
([feeds] poll_in_bot = false).

Ingest queues a follow's matches in the store's outbox, as workers queue headlines; each bot
process takes those of the servers on its own shards, under a lease, posts them (a channel's
matches as bot.follow_delivery plans them) and marks them sent. A process killed after taking some
leaves them to the next holder of those shards once the lease runs out: it posts them again with
the same nonce, which Discord matches within a few minutes (enforce_nonce) to the message the dead
process may have sent already. So a kill lands on the "at least once" side, and the nonce turns
that into once.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

import discord
from discord.ext import commands, tasks

from bot.discordbot.polling import headline_items
from bot.discordbot.replies import send_to
from bot.feeds import OutboxPruning, this_process
from bot.follow_delivery import HOUR, CatchUp, ChannelPlan, Headlines, Story, plan_channel
from bot.render import Reply, render_catch_up, render_headlines, render_story
from index.store import Announcement, StoreError

if TYPE_CHECKING:
    from bot.discordbot.client import NewsBot

log = logging.getLogger(__name__)

CHECK_SECONDS = 2.0
# An article missing from the store is waited for this long (a read replica catching up), then left out.
REPLICA_PATIENCE = timedelta(minutes=5)


class AnnouncementDelivery(commands.Cog):
    def __init__(self, bot: NewsBot, *, every: float = CHECK_SECONDS, cap_window: timedelta = HOUR) -> None:
        """`cap_window`: the period [follows] max_posts_per_hour counts over (shorter in tests)."""
        self.bot, self.cap_window = bot, cap_window
        self.outbox = bot.service.store.outbox
        self.holder = this_process()
        self.lease = timedelta(seconds=bot.config.discord.delivery_lease_seconds)
        self.check = tasks.loop(seconds=every)(self.deliver)
        self.check.before_loop(self.bot.wait_until_ready)
        self._unavailable = False
        self.pruning = OutboxPruning(self.outbox)

    async def cog_load(self) -> None:
        self.check.start()

    async def cog_unload(self) -> None:
        self.check.cancel()

    async def deliver(self) -> int:
        """Post what is due on this process's shards; returns how many announcements were posted."""
        try:
            await self.pruning.run()
            taken = await asyncio.to_thread(self.outbox.take, holder=self.holder, shards=self.bot.shards_held,
                                            lease=self.lease)
        except StoreError as exc:
            # The database is away: an exception would end this loop for good; the next round retries.
            self._report_outage(exc)
            return 0
        self._unavailable = False
        posted = 0
        matches: dict[int, list[Announcement]] = {}
        for announcement in taken:
            if announcement.follow_id:
                matches.setdefault(announcement.channel_id, []).append(announcement)
            else:
                posted += await self._post(announcement)
        for channel_id, found in matches.items():
            try:
                posted += await self._post_matches(channel_id, found)
            except StoreError as exc:
                self._report_outage(exc)  # what was taken comes back when the lease ends
            except Exception:  # a bug must not end the loop (and every other channel's deliveries) for good
                log.exception("delivering follows in channel %s failed; its matches come back when the lease ends",
                              channel_id)
        return posted

    async def _post_matches(self, channel_id: int, matches: list[Announcement]) -> int:
        """One channel's follow matches, as plan_channel folds and caps them; returns the messages posted."""
        service, cap = self.bot.service, self.bot.config.follows.max_posts_per_hour
        now = datetime.now(timezone.utc)

        def plan() -> ChannelPlan:
            follows = {f.id: f for f in service.store.follows.follows(guild_id=matches[0].guild_id)}
            waiting = self.outbox.waiting(channel_id)
            ledes = service.store.lede_vectors([m.article_ids[0] for m in (*matches, *waiting)])
            # Ages by the store's clock, placed on this process's: processes' clocks differ.
            posted = [now - age for age in self.outbox.recent_posts(channel_id, self.cap_window)]
            return plan_channel(matches, follows, posted, ledes=ledes, cap=cap, now=now, window=self.cap_window,
                                waiting=waiting)

        plan = await asyncio.to_thread(plan)
        if plan.hold:
            await asyncio.to_thread(self.outbox.hold, plan.hold, wait=plan.until - now)
        posted = 0
        for unit in plan.posts:
            replies, left = await asyncio.to_thread(follow_reply, service, unit, cap=cap)
            if not replies:
                if any(_recent(m) for m in unit.matches):
                    continue  # a read replica behind: tried again when the lease ends
            else:
                sent = await self._send(channel_id, replies, nonce=f"nf{unit.matches[0].id}",
                                        what=f"follow {unit.follow.id}")
                if sent is None:
                    continue
                if sent:
                    await asyncio.to_thread(self.outbox.record_post, channel_id)
                    posted += 1
            if left:  # the next catch-up lists them
                await asyncio.to_thread(self.outbox.hold, [m.id for m in left], wait=timedelta(0))
            for match in unit.matches:
                if match not in left:
                    await asyncio.to_thread(self.outbox.mark_sent, match.id)
        for match_id in plan.dropped:
            await asyncio.to_thread(self.outbox.mark_sent, match_id)
        return posted

    def _channel(self, channel_id: int) -> discord.abc.Messageable:
        channel = self.bot.get_channel(channel_id)
        if not isinstance(channel, discord.abc.Messageable):
            # Not in this process's cache (a config feed whose server is not known): REST still reaches it.
            channel = self.bot.get_partial_messageable(channel_id)
        return channel

    async def _send(self, channel_id: int, replies: list[Reply], *, nonce: str, what: str) -> bool | None:
        """Post `replies` with `nonce`: True once posted; None for Discord's trouble (429, 5xx: the
        lease runs out and it is tried again); False for a channel that is gone or closed to the
        bot, where posting again would not help (logged)."""
        try:
            await send_to(self._channel(channel_id), replies, nonce=nonce)
        except discord.HTTPException as exc:
            if exc.status == 429 or exc.status >= 500:
                return None
            log.warning("could not post %s in channel %s: %s", what, channel_id, exc)
            return False
        return True

    async def _post(self, announcement: Announcement) -> bool:
        try:
            items = await asyncio.to_thread(headline_items, self.bot.service, announcement)
            if len(items) < len(announcement.article_ids) and _recent(announcement):
                return False  # a read replica that has not caught up yet: the lease runs out, it is tried again
            if items and await self._send(announcement.channel_id, render_headlines(items),
                                          nonce=f"nd{announcement.id}", what=f"announcement {announcement.id}") is None:
                return False
        except StoreError as exc:
            self._report_outage(exc)
            return False
        try:
            await asyncio.to_thread(self.outbox.mark_sent, announcement.id)
        except StoreError as exc:  # posted; the nonce keeps the retry from posting it twice
            self._report_outage(exc)
            return False
        return True

    def _report_outage(self, exc: StoreError) -> None:
        """One line per outage: the next round that reaches the database ends it."""
        if not self._unavailable:
            log.warning("announcements wait: %s", exc)
        self._unavailable = True


def follow_reply(service, unit: Story | CatchUp, *, cap: int) -> tuple[list[Reply], list[Announcement]]:
    """The message for a story (what happened, quoted and cited, with the outlets of copies folded
    into it), for a follow's kept-back stories, or for a headline-format follow's new ones; none
    if its articles are gone from the store. Also the matches it leaves for a later message (a
    catch-up whose links do not all fit in one)."""
    if isinstance(unit, CatchUp):
        found = [(story, service.article(story.article_id)) for story in unit.stories]
        present = [(story, article[0]) for story, article in found if article is not None]
        if not present:
            return [], []
        metas = [meta for _, meta in present]
        if isinstance(unit, Headlines):
            return render_headlines([(m.title, m.url, m.outlet) for m in metas]), []
        reply, shown = render_catch_up(unit.follow.topic or "this feed", metas, cap=cap)
        return [reply], [m for story, _ in present[shown:] for m in story.matches]
    found = service.article(unit.article_id)
    if found is None:
        return [], []
    meta, text = found
    copies = [service.article(article_id) for article_id in unit.folded]
    also = [copy[0].outlet for copy in copies if copy and copy[0].outlet and copy[0].outlet != meta.outlet]
    return [render_story(unit.follow.topic or meta.outlet or "a feed", service.story_summary(meta, text),
                         title=meta.title, url=meta.url, also_reported_by=also)], []


def _recent(announcement: Announcement) -> bool:
    """Queued recently enough that a read replica may not have its articles yet."""
    return announcement.age is None or announcement.age < REPLICA_PATIENCE

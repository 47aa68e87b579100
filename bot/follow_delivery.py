"""What a channel is sent of its follows' matches: one message per story, at most so many an hour.

Pure: given the matches taken from the outbox for one channel, the follows, when the channel's
last posts were made and the matched articles' lede vectors, it plans which stories are posted,
which matches fold into them (the same article found by two follows, another outlet's write-up of
the same story), and which wait for the hourly cap. Matches kept back once are posted later
together, one message per follow ("5 more stories on Iran"); nothing is dropped but the matches
of a follow removed meanwhile.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np

from bot.summarize import SAME_STORY
from index.store import Announcement, Follow

HOUR = timedelta(hours=1)
CATCH_UP_STORIES = 6  # a catch-up message lists at most these; more kept back make more messages


@dataclass(frozen=True)
class Story:
    """One article to post, with the matches it answers: its own, and copies folded into it."""

    follow: Follow
    matches: tuple[Announcement, ...]

    @property
    def article_id(self) -> str:
        return self.matches[0].article_ids[0]

    @property
    def folded(self) -> tuple[str, ...]:
        """The other articles found to be the same story (their outlets are named with it)."""
        ids = dict.fromkeys(m.article_ids[0] for m in self.matches[1:])
        ids.pop(self.article_id, None)
        return tuple(ids)


@dataclass(frozen=True)
class CatchUp:
    """Stories of one follow that the hourly cap kept back: one message listing them."""

    follow: Follow
    stories: tuple[Story, ...]

    @property
    def matches(self) -> tuple[Announcement, ...]:
        return tuple(m for story in self.stories for m in story.matches)


class Headlines(CatchUp):
    """A headline-format follow's stories (a feed announced as headlines): one list of links."""


@dataclass
class ChannelPlan:
    posts: list[Story | CatchUp] = field(default_factory=list)
    hold: list[int] = field(default_factory=list)  # announcement ids that wait for the cap
    until: datetime | None = None  # when the cap has room again
    dropped: list[int] = field(default_factory=list)  # matches of follows removed since


def plan_channel(matches: Sequence[Announcement], follows: Mapping[int, Follow], posted: Sequence[datetime], *,
                 ledes: Mapping[str, np.ndarray], cap: int, now: datetime, window: timedelta = HOUR,
                 waiting: Sequence[Announcement] = ()) -> ChannelPlan:
    """The plan for one channel's `matches` (oldest first), given the times of its posts in the last
    `window` (an hour: the cap is per hour). `waiting`: the channel's matches not yet due; those
    that tell a story posted now are folded into it (another outlet's write-up, arrived within
    the delivery window), the others wait on."""
    plan = ChannelPlan()
    stories: list[Story] = []
    listed: dict[int, list[Story]] = {}
    # Kept-back matches first, so that a story is told once whichever follows found it, and when.
    for match in sorted(matches, key=lambda m: not m.held):
        follow = follows.get(match.follow_id)
        if follow is None or follow.channel_id != match.channel_id:
            plan.dropped.append(match.id)  # its follow was removed since
        elif follow.format == "headline":
            _add_to_stories(listed.setdefault(follow.id, []), follow, match, ledes)
        else:
            _add_to_stories(stories, follow, match, ledes)
    kept_back: dict[int, list[Story]] = {}
    for story in stories:
        if story.matches[0].held:
            kept_back.setdefault(story.follow.id, []).append(story)
    units: list[Story | CatchUp] = []
    for follow_id, group in kept_back.items():  # what waited longest goes first
        if len(group) == 1:
            units += group
        else:
            units += [CatchUp(follows[follow_id], tuple(group[i:i + CATCH_UP_STORIES]))
                      for i in range(0, len(group), CATCH_UP_STORIES)]
    units += [Headlines(follows[f], tuple(group)) for f, group in listed.items()]
    units += [story for story in stories if not story.matches[0].held]
    room = max(cap - len(posted), 0)
    plan.posts = units[:room]
    for unit in units[room:]:
        plan.hold += [m.id for m in unit.matches]
    for match in waiting:
        follow = follows.get(match.follow_id)
        if follow is None or follow.channel_id != match.channel_id:
            continue
        for index, unit in enumerate(plan.posts):
            if isinstance(unit, Story) and _same_story(unit.article_id, match.article_ids[0], ledes):
                plan.posts[index] = Story(unit.follow, (*unit.matches, match))
                break
    if plan.hold:
        times = sorted([*posted, *[now] * len(plan.posts)])
        plan.until = times[-cap] + window  # the post whose hour ends first among the last `cap`
    return plan


def _add_to_stories(stories: list[Story], follow: Follow, match: Announcement, ledes: Mapping[str, np.ndarray]) -> None:
    for index, story in enumerate(stories):
        if _same_story(story.article_id, match.article_ids[0], ledes):
            stories[index] = Story(story.follow, (*story.matches, match))
            return
    stories.append(Story(follow, (match,)))


def _same_story(article_id: str, other_id: str, ledes: Mapping[str, np.ndarray]) -> bool:
    """The same article, or two whose opening passages are as close as the digest's same story."""
    if article_id == other_id:
        return True
    lede, other = ledes.get(article_id), ledes.get(other_id)
    return lede is not None and other is not None and float(lede @ other) >= SAME_STORY

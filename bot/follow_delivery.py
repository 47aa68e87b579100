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
    """A follow's matches that the hourly cap kept back: one message listing them all."""

    follow: Follow
    matches: tuple[Announcement, ...]

    @property
    def article_ids(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(m.article_ids[0] for m in self.matches))


class Headlines(CatchUp):
    """A headline-format follow's new matches (a feed announced as headlines): one list of links."""


@dataclass
class ChannelPlan:
    posts: list[Story | CatchUp] = field(default_factory=list)
    hold: list[int] = field(default_factory=list)  # announcement ids that wait for the cap
    until: datetime | None = None  # when the cap has room again
    dropped: list[int] = field(default_factory=list)  # matches of follows removed since


def plan_channel(matches: Sequence[Announcement], follows: Mapping[int, Follow], posted: Sequence[datetime], *,
                 ledes: Mapping[str, np.ndarray], cap: int, now: datetime, window: timedelta = HOUR) -> ChannelPlan:
    """The plan for one channel's `matches` (oldest first), given the times of its posts in the last
    `window` (an hour: the cap is per hour)."""
    plan = ChannelPlan()
    fresh: list[Story] = []
    kept_back: dict[int, list[Announcement]] = {}
    listed: dict[int, list[Announcement]] = {}
    for match in matches:
        follow = follows.get(match.follow_id)
        if follow is None:
            plan.dropped.append(match.id)
        elif match.held:
            kept_back.setdefault(follow.id, []).append(match)
        elif follow.format == "headline":
            listed.setdefault(follow.id, []).append(match)
        else:
            _add_to_stories(fresh, follow, match, ledes)
    waiting: list[Story | CatchUp] = [
        CatchUp(follows[follow_id], tuple(group)) if len({m.article_ids[0] for m in group}) > 1
        else Story(follows[follow_id], tuple(group))
        for follow_id, group in kept_back.items()
    ]
    units = waiting + [Headlines(follows[f], tuple(group)) for f, group in listed.items()] + fresh
    # what waited longest goes first
    room = max(cap - len(posted), 0)
    plan.posts = units[:room]
    for unit in units[room:]:
        plan.hold += [m.id for m in unit.matches]
    if plan.hold:
        times = sorted([*posted, *[now] * len(plan.posts)])
        plan.until = times[-cap] + window  # the post whose hour ends first among the last `cap`
    return plan


def _add_to_stories(stories: list[Story], follow: Follow, match: Announcement, ledes: Mapping[str, np.ndarray]) -> None:
    article_id = match.article_ids[0]
    lede = ledes.get(article_id)
    for index, story in enumerate(stories):
        other = ledes.get(story.article_id)
        same = story.article_id == article_id or (
            lede is not None and other is not None and float(lede @ other) >= SAME_STORY)
        if same:
            stories[index] = Story(story.follow, (*story.matches, match))
            return
    stories.append(Story(follow, (match,)))

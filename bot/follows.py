"""Topic follows: what a follow's text asks for, and matching new articles against every follow.

A follow's topic is free text ("crude oil prices and production"), with "quoted phrases" that must
appear in an article and -words (or -"phrases") that must not. An article matches when the topic's
meaning is close to its passages (the passage embeddings ingest computed anyway) and its words
are in the article, past the follow's threshold. A `broad` follow names a section of the news
("technology", "politics"), and a story belongs to a section when it is nearer to it than to the
other sections (NEWS_SECTIONS). Matching runs inside ingest, once per batch of new articles: one
matrix product over every follow, not one search per follow.
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

import numpy as np

from bot.extractive import content_stems
from bot.feeds import collections_for
from index.article import Article
from index.sources.common import one_line
from index.store import FOLLOW_LEVELS, Announcement, Follow, FollowRegistry
from index.urls import redact_url

MAX_TOPIC_CHARS = 200
# score = the topic's mean cosine over the article's passages + LEXICAL_WEIGHT × the share of the
# topic's words found in the article; at `broad`, plus the margin of that cosine over the article's
# nearest rival section. Chosen with `newsdesk eval follow` on Reuters-21578 (14 topics) and BBC
# (5 categories), README "Following topics": the mean over passages beat the best passage (a story
# that mentions oil once is not about oil), and the words add a little. Each level is the lowest
# threshold whose macro precision reaches a mark on the topics it is for: "normal" ([follows]
# match_threshold, 0.54) 0.85 on Reuters' subjects ("crude oil prices"); "strict" 0.92 there;
# "broad" 0.85 on BBC's sections ("technology, computers, the internet"), on the margin's scale.
LEXICAL_WEIGHT = 0.2
REFRESH_SECONDS = 10.0  # how stale the matcher's copy of the follows may be
LEVEL_STEPS = {"strict": 0.06, "normal": 0.0, "broad": -0.42}
assert tuple(LEVEL_STEPS) == FOLLOW_LEVELS
# The sections of a general news site, written once as a newspaper's sections and not changed to
# fit an evaluation. A broad follow's rivals are those further than SECTION_KINSHIP (cosine) from
# it: "UK politics, government and elections" is not in rivalry with "politics and government".
NEWS_SECTIONS = (
    "politics and government", "elections and voting", "war and military conflict", "crime, police and courts",
    "sport and athletes", "football matches", "technology and the internet", "science and research",
    "health and medicine", "film, music and entertainment", "business and companies", "stock markets and shares",
    "banks and finance", "the economy and economic growth", "energy and power", "agriculture and farming",
    "transport, cars and airlines", "weather and natural disasters", "education and schools", "religion",
    "travel and tourism", "property and housing", "jobs, unions and employment", "laws and regulation",
    "diplomacy and international relations", "environment and climate",
)
SECTION_KINSHIP = 0.5
_SECTION_WORDS = tuple((name, frozenset(content_stems(name))) for name in NEWS_SECTIONS)


def thresholds(normal: float) -> dict[str, float]:
    """Each level's threshold, from the normal one."""
    return {level: round(normal + step, 4) for level, step in LEVEL_STEPS.items()}


_QUOTED = r"[\"“”]([^\"“”]+)[\"“”]"
_PART = re.compile(rf"(-?){_QUOTED}|(-?)(\S+)")
_WORD_EDGE = r"(?<!\w){}(?!\w)"


@dataclass(frozen=True)
class Topic:
    """A follow's text, read: its meaning (what is embedded and whose words are looked for), the
    phrases an article must contain, and the words or phrases it must not."""

    text: str
    meaning: str
    required: tuple[str, ...]
    excluded: tuple[str, ...]

    @classmethod
    def parse(cls, text: str) -> Topic:
        """ValueError, with a message for the admin, for a topic that is empty, too long, or only exclusions."""
        text = one_line(text)
        if not text:
            raise ValueError("Give a topic to follow, e.g. `crude oil prices`.")
        if len(text) > MAX_TOPIC_CHARS:
            raise ValueError(f"A topic is at most {MAX_TOPIC_CHARS} characters; that one has {len(text)}. "
                             "Name the subject, e.g. `Iran nuclear talks`.")
        words, required, excluded = [], [], []
        for match in _PART.finditer(text):
            minus_phrase, phrase, minus_word, word = match.groups()
            value = (phrase or word or "").strip().lower()
            if not value or value == "-":
                continue
            if minus_phrase or minus_word:
                excluded.append(value)
                continue
            words.append(value)
            if phrase:
                required.append(value)
        if not words:
            raise ValueError("Say what to follow, not only what to leave out: e.g. `Iran -football`.")
        return cls(text, " ".join(words), tuple(required), tuple(excluded))

    @classmethod
    def every_story(cls) -> Topic:
        """A feed's announcements without a filter: each of its new items matches."""
        return cls("", "", (), ())

    @classmethod
    def of(cls, follow: Follow) -> Topic:
        return cls.parse(follow.topic) if follow.topic else cls.every_story()

    @property
    def stems(self) -> frozenset[str]:
        return frozenset(content_stems(self.meaning))

    @property
    def section(self) -> str | None:
        """The news section (NEWS_SECTIONS) that the topic names, if any: one whose name holds every
        word of the topic ("technology", "film and music"). Followed at `normal`, such a topic would
        get next to nothing (BBC's categories by their one-word names: macro recall .004, against
        .593 at broad). Words, not cosines, decide: a cosine cut-off fell between "entertainment"
        and "Ukraine war" (.65 and .63), on one side or the other as the embedding backend went."""
        stems = self.stems
        return next((name for name, words in _SECTION_WORDS if stems and stems <= words), None)

    def allows(self, haystack: str) -> bool:
        """Whether an article's lower-cased text has every required phrase and no excluded one."""
        return all(contains_words(haystack, p) for p in self.required) and not any(contains_words(haystack, e) for e in self.excluded)


def contains_words(haystack: str, needle: str) -> bool:
    """A whole-word (or whole-phrase) match, so -war does not exclude "software"."""
    pattern = _WORD_EDGE.format(r"\s+".join(map(re.escape, needle.split())))
    return re.search(pattern, haystack) is not None


def sees(follow: Follow, article: Article) -> bool:
    """A follow sees what its server's questions see: the shared news and the server's own; a
    feed's follow, only that feed's items."""
    if article.collection not in collections_for(follow.guild_id):
        return False
    return not follow.feed_url or article.source == redact_url(follow.feed_url)


class FollowScorer:
    """Every follow's score for one article; the step the matcher and the evaluation share.

    `broad[i]`: topic i names a section of the news, and is scored with its margin over the
    article's nearest rival among NEWS_SECTIONS, whose vectors (`sections`, by the same embedder)
    it then needs."""

    def __init__(self, topics: Sequence[Topic], vectors: np.ndarray, *, broad: Sequence[bool] = (),
                 sections: np.ndarray | None = None) -> None:
        if len(topics) != len(vectors):
            raise ValueError("one vector per topic")
        if len(broad) and len(broad) != len(topics):
            raise ValueError("one broad flag per topic")
        self.topics = list(topics)
        self.vectors = np.asarray(vectors, dtype=np.float32).reshape(len(topics), -1) if topics else np.zeros((0, 1))
        self.broad = np.array(broad, dtype=bool) if len(broad) else np.zeros(len(topics), dtype=bool)
        if self.broad.any() and (sections is None or not len(sections)):
            raise ValueError("a broad topic is scored against the news sections: give their vectors")
        self.sections = np.asarray(sections, dtype=np.float32) if sections is not None else np.zeros((0, 1))
        self._rivals = np.zeros((len(topics), len(self.sections)), dtype=bool)
        if self.broad.any():
            # Each broad topic's rivals: the sections not akin to it; one akin to them all (a model
            # whose cosines run high) is weighed against the nearest of them all.
            rivals = self.vectors @ self.sections.T < SECTION_KINSHIP
            rivals[~rivals.any(axis=1)] = True
            self._rivals = self.broad[:, None] & rivals
        self._stems = [topic.stems for topic in self.topics]

    def run(self, article: Article, chunk_vectors: np.ndarray, among: Sequence[int] | None = None, *,
            floors: np.ndarray | None = None) -> np.ndarray:
        """Scores of the topics at `among` (all by default), in that order; -inf where the article
        lacks a required phrase or has an excluded word. With `floors` (one per row), a topic whose
        meaning alone cannot reach its floor gets a score below it without the word checks, which
        cost most (a matcher needs no more; an evaluation's curve needs every score)."""
        among = list(range(len(self.topics)) if among is None else among)
        if not among:
            return np.zeros(0, dtype=np.float32)
        chunk_vectors = np.asarray(chunk_vectors, dtype=np.float32)
        meaning = (self.vectors[among] @ chunk_vectors.T).mean(axis=1)
        broad = self.broad[among]
        if broad.any():
            section_means = (self.sections @ chunk_vectors.T).mean(axis=1)
            rival = np.where(self._rivals[among][broad], section_means[None, :], -np.inf).max(axis=1)
            meaning[broad] += meaning[broad] - rival
        haystack = f"{article.title}\n{article.text}".lower()
        words = content_stems(haystack)
        scores = np.empty(len(among), dtype=np.float32)
        for row, index in enumerate(among):
            topic, stems = self.topics[index], self._stems[index]
            if floors is not None and topic.meaning and meaning[row] + LEXICAL_WEIGHT < floors[row]:
                scores[row] = meaning[row]
            elif not topic.allows(haystack):
                scores[row] = -np.inf
            elif not topic.meaning:
                scores[row] = np.inf  # Topic.every_story
            else:
                share = len(stems & words) / len(stems) if stems else 0.0
                scores[row] = meaning[row] + LEXICAL_WEIGHT * share
        return scores


class FollowMatcher:
    """At ingest: the outbox announcements of new articles that match a follow (ingest's ArticleMatcher).

    The follows are read from the registry at most every `refresh_seconds` (a follow made in
    another process starts matching within that time); `forget` makes the next batch read them.
    """

    def __init__(self, registry: FollowRegistry, *, threshold: float, encode: Callable[[list[str]], np.ndarray],
                 delay: timedelta = timedelta(0), max_age: timedelta = timedelta(hours=48),
                 refresh_seconds: float = REFRESH_SECONDS) -> None:
        """`threshold`: a normal follow's; the other levels are steps from it. `encode`: the
        embedder the follows' vectors came from, for the news sections a broad follow is weighed
        against. Articles published longer than `max_age` ago are not news, whenever they are
        ingested (an archive, a feed's old items)."""
        if delay < timedelta(0) or max_age <= timedelta(0):
            raise ValueError("delay: must not be negative; max_age: must be positive")
        self.registry, self.delay, self.max_age, self.refresh_seconds = registry, delay, max_age, refresh_seconds
        self.encode = encode
        self.thresholds = thresholds(threshold)
        self._read: tuple[float, _Follows] | None = None

    def forget(self) -> None:
        """A follow was added or removed: the next batch reads them again."""
        self._read = None

    def run(self, added: Sequence[tuple[Article, np.ndarray]], *, follows: Sequence[Follow] | None = None,
            any_age: bool = False) -> list[Announcement]:
        """The matches of `added` (articles with their chunk vectors) for `follows` (default: every
        follow in the registry). `any_age`: older articles too (a new follow's `since` asks for them)."""
        if not added:
            return []
        current = self._current() if follows is None else self._prepare(list(follows))
        if not current.follows:
            return []
        oldest = datetime.now(timezone.utc) - self.max_age
        matches = []
        for article, chunk_vectors in added:
            if not any_age and (article.published or article.fetched) < oldest:
                continue
            among = [i for i, follow in enumerate(current.follows) if sees(follow, article)]
            floors = current.limits[among]
            scores = current.scorer.run(article, chunk_vectors, among, floors=floors)
            for index, score, floor in zip(among, scores, floors):
                if score >= floor:
                    follow = current.follows[index]
                    matches.append(Announcement(follow.guild_id, follow.channel_id, (article.id,),
                                                follow_id=follow.id, delay=self.delay))
        return matches

    def _current(self) -> _Follows:
        now = time.monotonic()
        if self._read is None or now - self._read[0] > self.refresh_seconds:
            self._read = (now, self._prepare(self.registry.follows()))
        return self._read[1]

    def _prepare(self, follows: list[Follow]) -> _Follows:
        broad = [f.level == "broad" for f in follows]
        return _Follows(follows, self.thresholds, broad, self._section_vectors if any(broad) else None)

    @functools.cached_property
    def _section_vectors(self) -> np.ndarray:
        """NEWS_SECTIONS' vectors, made once, when a broad follow first needs them."""
        return self.encode(list(NEWS_SECTIONS))


class _Follows:
    """Follows as the matcher uses them: parsed, their vectors stacked, each one's threshold."""

    def __init__(self, follows: list[Follow], levels: dict[str, float], broad: list[bool],
                 sections: np.ndarray | None) -> None:
        self.follows = follows
        self.scorer = FollowScorer([Topic.of(f) for f in follows], np.array([f.vector for f in follows], np.float32),
                                   broad=broad, sections=sections)
        self.limits = np.array([levels.get(f.level, levels["normal"]) for f in follows], dtype=np.float32)

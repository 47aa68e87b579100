"""Answers, search results and status as Discord messages that fit Discord's limits.

Pure functions from the answer types to `Reply` values (text plus an optional embed); nothing here
talks to Discord. Article text is untrusted: it is escaped so that it can neither format the
message nor ping anyone, even if `allowed_mentions` were forgotten somewhere.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote, urlsplit

import discord
from discord.utils import escape_mentions

from bot.answer_types import CITATION, CLOSEST_STORIES, Answer, Citation, SearchResult, source_label
from index.article import DEFAULT_COLLECTION, ArticleMeta
from index.sentences import sentence_spans
from index.store import Feed, Follow
from index.urls import redact_url

MESSAGE_LIMIT = 2000
EMBED_DESCRIPTION_LIMIT = 4096
EMBED_TOTAL_LIMIT = 6000
EMBED_TITLE_LIMIT = 256
EMBED_FIELDS_LIMIT = 25

_BARE_URL = re.compile(r"\bhttps?://[^\s<>]+[^\s<>.,:;\"')\]]")
_MARKDOWN_CHARS = re.compile(r"([\\*_~`|\[\]<])")
_LINE_START_MARKUP = re.compile(r"^([ \t]*)([#>-])", re.MULTILINE)
_LINE_START_NUMBER = re.compile(r"^([ \t]*\d+)\.(?=\s)", re.MULTILINE)
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")
_AFTER_SENTENCE = re.compile(rf"(?:\s*{CITATION.pattern})*[.,;:!?]*")
_ACCENT = 0x5865F2  # Discord blurple: one colour for every embed the bot sends


@dataclass(frozen=True)
class Reply:
    """One Discord message: text (at most 2,000 characters) and at most one embed."""

    content: str = ""
    embed: discord.Embed | None = None

    def __post_init__(self) -> None:
        if len(self.content) > MESSAGE_LIMIT:
            raise ValueError(f"message text of {len(self.content)} characters exceeds {MESSAGE_LIMIT}")
        if not self.content and self.embed is None:
            raise ValueError("a reply needs text or an embed")


def safe_text(text: str) -> str:
    """Untrusted text made inert: markdown escaped, mentions broken, link previews suppressed.

    `[n]` citation markers are kept as they are, so the answer still points at its sources.
    """
    pieces = []
    last = 0
    for match in CITATION.finditer(text):
        pieces.append(_escape(text[last : match.start()]))
        pieces.append(match.group())
        last = match.end()
        if text.startswith("(", last):  # "[1](https://…)" would be a masked link dressed as a citation
            pieces.append("\\(")
            last += 1
    pieces.append(_escape(text[last:]))
    return "".join(pieces)


def _escape(text: str) -> str:
    pieces = []
    last = 0
    for match in _BARE_URL.finditer(text):
        # A bare URL in quoted text would make Discord unfurl a preview of someone else's page.
        pieces.append(_escape_markdown(text[last : match.start()]))
        pieces.append(f"<{match.group()}>")
        last = match.end()
    pieces.append(_escape_markdown(text[last:]))
    # Last, over everything (URLs too): "@everyone" and "<@id>" get a zero-width space after the "@".
    return escape_mentions("".join(pieces))


def _escape_markdown(text: str) -> str:
    """Backslashes before everything Discord would read as formatting.

    "[" and "]" are escaped so article text cannot dress up a masked link, and "<" so it cannot
    make a timestamp, an emoji or a channel link; "#", ">", "-" and "1." only where they start a line.
    """
    return _escape_line_starts(_MARKDOWN_CHARS.sub(r"\\\1", text))


def _escape_line_starts(text: str) -> str:
    """Headings, quotes, subtext and list markers escaped where they start a line (idempotent: an
    escaped line starts with a backslash)."""
    text = _LINE_START_MARKUP.sub(r"\1\\\2", text)
    return _LINE_START_NUMBER.sub(r"\1\\.", text)


def clip(text: str, limit: int) -> str:
    """Text cut to `limit` characters at a word boundary, with an ellipsis, never inside `[n]`."""
    if len(text) <= limit:
        return text
    room = limit - 1  # one character for the ellipsis
    cut = text.rfind(" ", 0, room + 1)
    if cut < room // 2:  # no space in the second half: cut the long word instead
        cut = room
    return text[: _safe_cut(text, cut, floor=0)].rstrip() + "…"


def split_message(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Text in pieces of at most `limit` characters.

    It breaks at the last paragraph break that fits, else the last sentence end (keeping a
    sentence's `[n]` markers with it), else the last space, and only for a single word longer
    than a message at a character; never inside a `[n]` marker or after an escaping backslash.
    """
    if limit < 16:
        raise ValueError("limit too small to split text sensibly")
    text = text.strip()
    pieces: list[str] = []
    start = 0
    while len(text) - start > limit:
        end = start + limit
        cut = (
            _last_paragraph_break(text, start, end)
            or _last_sentence_end(text, start, end)
            or _last_space(text, start, end)
            or _safe_cut(text, end, floor=start + 1)
        )
        pieces.append(text[start:cut].rstrip())
        start = cut
        while start < len(text) and text[start].isspace():
            start += 1
    if start < len(text):
        pieces.append(text[start:])
    return [p for p in pieces if p]


def _last_paragraph_break(text: str, start: int, end: int) -> int | None:
    cuts = [m.start() for m in _PARAGRAPH_BREAK.finditer(text, start, end + 1) if start < m.start() <= end]
    return cuts[-1] if cuts else None


def _last_sentence_end(text: str, start: int, end: int) -> int | None:
    best = None
    for _, stop in sentence_spans(text, start, min(len(text), end + 200)):
        # A sentence's citations ("… rose. [2]") travel with it, not with the next sentence.
        stop = _AFTER_SENTENCE.match(text, stop).end()
        if start < stop <= end and stop < len(text):
            best = stop
    return best


def _last_space(text: str, start: int, end: int) -> int | None:
    for cut in range(end, start, -1):
        if text[cut].isspace() and not CITATION.match(text, cut + 1) and _inside_citation(text, cut) is None:
            return cut
    return None


def _safe_cut(text: str, cut: int, *, floor: int) -> int:
    """`cut` moved left until it falls outside any `[n]` marker and not just after a backslash."""
    while cut > floor:
        inside = _inside_citation(text, cut)
        if inside is not None:
            cut = inside
        elif text[cut - 1] == "\\":
            cut -= 1
        else:
            break
    return max(cut, floor)


def _inside_citation(text: str, cut: int) -> int | None:
    """The start of the `[n]` marker that `cut` would split, or None."""
    bracket = text.rfind("[", max(0, cut - 24), cut)
    if bracket == -1:
        return None
    match = CITATION.match(text, bracket)
    return bracket if match and match.end() > cut else None


def link(label: str, url: str | None, *, unfurl: bool = True) -> str:
    """A markdown link with an escaped label; the plain label when the URL is not http(s). In a
    message's text Discord shows a preview of a linked page unless the URL is in <>."""
    label = safe_text(label)
    if not url or urlsplit(url).scheme not in ("http", "https"):
        return label
    # Characters that would end the link's (...) early are percent-encoded.
    target = quote(url, safe=':/?#@!$&*+,;=%~._-[]')
    return f"[{label}]({target})" if unfurl else f"[{label}](<{target}>)"


def source_line(citation: Citation) -> str:
    """'[1] [Title — Outlet, 4 Jan 2020](url)', with other outlets that ran the story."""
    line = f"**[{citation.n}]** {link(clip(citation.label(), 300), citation.url)}"
    if citation.also_reported_by:
        line += " · also " + safe_text(", ".join(citation.also_reported_by[:5]))
    return line


def render_answer(answer: Answer) -> list[Reply]:
    """The answer text split into messages; the sources embed goes with the last one. An answer
    that found nothing lists the closest stories as links in its text, with no sources embed.

    A split can make a mid-line "# " or "1. " of the quoted text the first characters of a
    message, where Discord would read it as markup: each piece's line starts are escaped again
    (one character more at most, hence the smaller limit). The note is the bot's own subtext line,
    added after that so it stays subtext.
    """
    text = safe_text(answer.text)
    if answer.closest:
        # Search results, not sources: nothing in them answers the question. Their links are not
        # unfurled (<url>), so the reply stays a short message.
        text += f" {CLOSEST_STORIES}\n" + "\n".join(f"• {link(clip(r.label(), 300), r.url, unfurl=False)}"
                                                     for r in answer.closest)
    pieces = [_escape_line_starts(p) for p in split_message(text, MESSAGE_LIMIT - 1)]
    if answer.note:
        note = f"-# {safe_text(clip(answer.note, 500))}"
        if pieces and len(pieces[-1]) + 2 + len(note) <= MESSAGE_LIMIT:
            pieces[-1] += "\n\n" + note
        else:
            pieces.append(note)
    pieces = pieces or ["(no answer)"]
    embed = _sources_embed(answer) if answer.citations else None
    return [Reply(content=piece) for piece in pieces[:-1]] + [Reply(content=pieces[-1], embed=embed)]


DRAFT_NOTE = "\n\n-# ✍️ still writing: the citations are checked when it is done"


def render_draft(text: str) -> Reply:
    """A language model's answer while it is written: escaped like any answer (the model may repeat
    article text), clipped to one message, and marked as a draft, since it is not yet checked."""
    return Reply(content=clip(safe_text(text.strip()), MESSAGE_LIMIT - len(DRAFT_NOTE)) + DRAFT_NOTE)


def _sources_embed(answer: Answer) -> discord.Embed:
    lines = _fit_lines([source_line(c) for c in answer.citations], EMBED_DESCRIPTION_LIMIT, "sources")
    embed = discord.Embed(title="Sources", description="\n".join(lines), colour=_ACCENT)
    embed.set_footer(text=f"{answer.mode} answer")
    return embed


def _fit_lines(lines: Sequence[str], limit: int, noun: str) -> list[str]:
    """As many whole lines as fit in `limit` characters, then a note of how many were left out."""
    kept: list[str] = []
    size = 0
    for index, line in enumerate(lines):
        rest = len(lines) - index
        reserve = len(f"\n… and {rest} more {noun}")
        if size + len(line) + 1 + (reserve if rest > 1 else 0) > limit:
            kept.append(f"… and {rest} more {noun}")
            break
        kept.append(line)
        size += len(line) + 1
    return kept


def render_search(results: Sequence[SearchResult], *, query: str) -> list[Reply]:
    """Matching articles as numbered links with a short quoted snippet each."""
    if not results:
        return [Reply(content=f"No indexed articles match {_quoted(query)}.")]
    lines = []
    for number, result in enumerate(results, 1):
        line = f"**{number}.** {link(clip(result.label(), 300), result.url)}"
        if result.snippet:
            line += "\n> " + safe_text(clip(" ".join(result.snippet.split()), 200))
        lines.append(line)
    embed = discord.Embed(
        title=clip(f"Results for {_quoted(query)}", EMBED_TITLE_LIMIT),
        description="\n".join(_fit_lines(lines, EMBED_DESCRIPTION_LIMIT, "results")),
        colour=_ACCENT,
    )
    return [Reply(embed=embed)]


def render_status(stats: dict, feeds: Sequence[Feed]) -> list[Reply]:
    """What is indexed and how each feed is doing, as an embed with one field per fact."""
    embed = discord.Embed(title="newsdesk status", colour=_ACCENT)
    embed.add_field(name="Articles", value=str(stats.get("articles", 0)))
    embed.add_field(name="Outlets", value=str(stats.get("outlets", 0)))
    newest = stats.get("newest")
    embed.add_field(name="Newest article", value=_timestamp(newest) if newest else "none yet")
    lines = [_feed_line(feed) for feed in feeds] or ["No feeds yet. Admins can add one with `/feeds add`."]
    embed.description = "\n".join(_fit_lines(lines, EMBED_DESCRIPTION_LIMIT - 100, "feeds"))
    return [Reply(embed=embed)]


def render_feeds(feeds: Sequence[Feed]) -> list[Reply]:
    """The feeds a server reads, with where their headlines go."""
    if not feeds:
        return [Reply(content="No feeds yet. Add one with `/feeds add`.")]
    return _listing("Feeds", [_feed_line(feed) for feed in feeds], "feeds")


def _listing(title: str, lines: Sequence[str], noun: str) -> list[Reply]:
    """One embed of lines, as many as fit."""
    description = "\n".join(_fit_lines(lines, EMBED_DESCRIPTION_LIMIT, noun))
    return [Reply(embed=discord.Embed(title=title, description=description, colour=_ACCENT))]


def _feed_line(feed: Feed) -> str:
    """One feed: its URL (credentials redacted), who shares it, where headlines go, and the last poll's outcome."""
    origin = "config (all servers)" if feed.collection == DEFAULT_COLLECTION else "this server"
    shown = redact_url(feed.url)
    parts = [link(clip(shown, 200), shown), origin]
    if feed.channel_id:
        parts.append(f"headlines in <#{feed.channel_id}>")
    parts.append(f"polled {_timestamp(feed.last_polled)}" if feed.last_polled else "not polled yet")
    line = " · ".join(parts)
    if feed.last_error:
        line += f"\n  ⚠ {safe_text(clip(feed.last_error, 200))}"
    return line


def render_headlines(items: Sequence[tuple[str, str | None, str | None]]) -> list[Reply]:
    """New articles from a feed as a short list of links: (title, url, outlet) each."""
    lines = [f"📰 {link(clip(title, 250), url)}" + (f" — {safe_text(outlet)}" if outlet else "")
             for title, url, outlet in items]
    text = "\n".join(lines)
    return [Reply(content=piece) for piece in split_message(text)] if text else []


def render_story(topic: str, summary: Answer, *, title: str, url: str | None,
                 also_reported_by: Sequence[str] = ()) -> Reply:
    """A followed topic's new story: what happened, quoted from the article with its citation, and
    the source line (title, outlet, date, link, other outlets that ran it)."""
    embed = discord.Embed(title=clip(title, EMBED_TITLE_LIMIT), url=url if url and url.startswith("http") else None,
                          colour=_ACCENT)
    lines = [source_line(dataclasses.replace(c, also_reported_by=(*c.also_reported_by, *also_reported_by)))
             for c in summary.citations]
    sources = "\n".join(_fit_lines(lines, 1200, "sources"))
    embed.description = clip(safe_text(summary.text), EMBED_DESCRIPTION_LIMIT - len(sources) - 2) + "\n\n" + sources
    embed.set_footer(text=clip(f"Following: {topic}", 2048))
    return Reply(content=f"📌 New on *{safe_text(clip(topic, 200))}*", embed=embed)


def render_catch_up(topic: str, items: Sequence[ArticleMeta], *, cap: int) -> tuple[Reply, int]:
    """Stories a channel's hourly cap kept back, as one message of links (no previews), and how
    many of `items` it shows: the first ones, as many as fit."""
    def head(count: int) -> str:
        return (f"📌 {count} more {'story' if count == 1 else 'stories'} on *{safe_text(clip(topic, 200))}* "
                f"(kept back: this channel gets at most {cap} an hour)")

    labels = [clip(source_label(m.title, m.outlet, m.published), 150) for m in items]
    shown: list[str] = []
    room = MESSAGE_LIMIT - len(head(len(items)))
    for label, meta in zip(labels, items):
        line = f"\n• {link(label, meta.url, unfurl=False)}"
        if len(line) > room:
            if shown:
                break
            line = f"\n• {safe_text(label)}"  # a link too long for a message: its title alone
        shown.append(line)
        room -= len(line)
    return Reply(content=head(len(shown)) + "".join(shown)), len(shown)


def render_follows(follows: Sequence[Follow]) -> list[Reply]:
    """A server's follows: topic, level and channel each."""
    if not follows:
        return [Reply(content="This server follows no topics yet. Add one with `/follow`.")]
    return _listing("Follows", [_follow_line(f) for f in follows], "follows")


def _follow_line(follow: Follow) -> str:
    """A follow: its topic and level, or the feed whose items it announces, and where they go."""
    topic = f"*{safe_text(clip(follow.topic, 200))}*" if follow.topic else "every new item"
    if follow.feed_url:
        shown = redact_url(follow.feed_url)
        return f"• {topic} of {link(clip(shown, 200), shown, unfurl=False)} ({follow.format}s) → <#{follow.channel_id}>"
    return f"• {topic} ({follow.level}) → <#{follow.channel_id}>"


def render_note(text: str) -> Reply:
    """A short plain notice (errors, refusals, confirmations), clipped to one message."""
    return Reply(content=clip(text, MESSAGE_LIMIT))


def _timestamp(value: datetime | str) -> str:
    """A Discord timestamp, shown in each reader's own time zone."""
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return f"<t:{int(moment.timestamp())}:R>"


def _quoted(text: str) -> str:
    return "“" + safe_text(clip(text, 200)) + "”"

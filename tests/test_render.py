"""Answer -> Discord messages: limits, splitting, escaping and source links, without Discord."""

from __future__ import annotations

import random
import re
from datetime import datetime, timedelta, timezone

import pytest

from bot.answer_types import Answer, Citation, SearchResult
from bot.feeds import Feed
from bot.render import (
    CITATION, EMBED_DESCRIPTION_LIMIT, EMBED_FIELDS_LIMIT, EMBED_TOTAL_LIMIT, MESSAGE_LIMIT, Reply, clip, link,
    render_answer, render_feeds, render_headlines, render_search, render_status, safe_text, split_message,
)



WHEN = datetime(2020, 1, 4, 12, tzinfo=timezone.utc)


def citation(n: int, *, title: str = "NATO suspends training in Iraq", url: str | None = "https://news.test/a",
             outlet: str | None = "Test Wire", quote: str = "NATO suspended training.") -> Citation:
    return Citation(n, f"id-{n}", title, outlet, url, WHEN, quote)


def long_answer(chars: int, *, seed: int = 7) -> str:
    """Sentences with [n] markers in paragraphs, about `chars` long."""
    rng = random.Random(seed)
    words = "the alliance said troops would stay in the region while talks continue over the coming weeks".split()
    paragraphs, size = [], 0
    while size < chars:
        sentences = []
        for _ in range(rng.randint(2, 6)):
            sentence = " ".join(rng.choice(words) for _ in range(rng.randint(6, 40))).capitalize() + "."
            if rng.random() < 0.7:
                sentence += f" [{rng.randint(1, 12)}]"
            sentences.append(sentence)
        paragraph = " ".join(sentences)
        paragraphs.append(paragraph)
        size += len(paragraph) + 2
    return "\n\n".join(paragraphs)[:chars].rsplit(" ", 1)[0] + "."


def assert_split_well(original: str, pieces: list[str], limit: int = MESSAGE_LIMIT) -> None:
    assert all(0 < len(p) <= limit for p in pieces)
    # Nothing lost or reordered: only the whitespace at the cuts differs.
    assert "".join(original.split()) == "".join("".join(pieces).split())
    # Every citation marker survives whole, and none starts a piece (it belongs to the sentence before).
    assert [m.group() for p in pieces for m in CITATION.finditer(p)] == CITATION.findall(original)
    assert not any(CITATION.match(p) for p in pieces[1:])


def test_a_5000_character_answer_splits_at_sentence_ends_with_its_citations():
    text = long_answer(5000)
    assert len(text) >= 4900
    pieces = split_message(text)
    assert len(pieces) >= 3
    assert_split_well(text, pieces)
    for piece in pieces[:-1]:
        assert re.search(r"[.!?](?: \[\d+\])*$", piece), piece[-40:]


@pytest.mark.parametrize("seed", range(20))
def test_random_answers_split_within_limits(seed):
    rng = random.Random(seed)
    text = long_answer(rng.randint(2100, 9000), seed=seed)
    limit = rng.choice([MESSAGE_LIMIT, 300, 120])
    assert_split_well(text, split_message(text, limit), limit)


def test_paragraph_breaks_are_preferred_to_sentence_ends():
    first = "First paragraph sentence. " * 30
    second = "Second paragraph sentence. " * 30
    pieces = split_message(first.strip() + "\n\n" + second.strip(), 1000)
    assert pieces[0] == first.strip()


def test_a_word_longer_than_a_message_is_cut_but_never_inside_a_marker():
    text = "x" * 1998 + "[12]" + "y" * 50
    pieces = split_message(text)
    assert pieces[0] == "x" * 1998 and pieces[1].startswith("[12]")
    escaped = "a\\" * 1500  # "a\a\…": a cut after a backslash would escape the next message's first character
    assert not any(p.endswith("\\") for p in split_message(escaped)[:-1])


def test_safe_text_keeps_markers_and_defuses_markdown_mentions_and_links():
    text = "**Breaking** @everyone and @here, <@123456789012345678> <@&123456789012345678> [evil](https://x.test) [2]"
    safe = safe_text(text)
    assert "[2]" in safe
    assert "@everyone" not in safe and "@here" not in safe
    assert "<@123456789012345678>" not in safe and "<@&123456789012345678>" not in safe
    assert "\\*\\*Breaking\\*\\*" in safe
    assert "\\[evil\\](<https://x.test>)" in safe  # no masked link survives


def test_line_markup_and_angle_brackets_are_escaped():
    assert safe_text("# Big\n> quoted\n- item\n12. step <t:1700000000:R> <#123>") == (
        "\\# Big\n\\> quoted\n\\- item\n12\\. step \\<t:1700000000:R> \\<#123>")


def test_bare_urls_in_quoted_text_do_not_unfurl():
    assert "<https://example.test/page>" in safe_text("see https://example.test/page for more")


def test_clip_cuts_at_a_word_and_never_inside_a_marker():
    assert clip("short", 10) == "short"
    assert clip("one two three four", 12) == "one two…"
    clipped = clip("abc [12] defghijk", 7)
    assert len(clipped) <= 7 and "[1" not in clipped.replace("[12]", "")


def test_links_are_escaped_and_urls_that_would_break_them_encoded():
    assert link("A [title] *x*", "https://news.test/a_(b) c") == r"[A \[title\] \*x\*](https://news.test/a_%28b%29%20c)"
    assert link("No URL", None) == "No URL"
    assert link("Local file", "file:///etc/passwd") == "Local file"


def test_answer_sources_are_clickable_title_outlet_date_links():
    answer = Answer("NATO suspended training [1]. Iraq's parliament voted [2].", "extractive",
                    [citation(1), citation(2, title="Iraq votes", url="https://news.test/b", outlet="Other Wire")])
    (reply,) = render_answer(answer)
    assert reply.content == "NATO suspended training [1]. Iraq's parliament voted [2]."
    description = reply.embed.description
    assert "**[1]** [NATO suspends training in Iraq — Test Wire, 4 Jan 2020](https://news.test/a)" in description
    assert "**[2]** [Iraq votes — Other Wire, 4 Jan 2020](https://news.test/b)" in description


def test_a_long_answer_carries_its_sources_on_the_last_message_only():
    answer = Answer(long_answer(5000), "extractive", [citation(n) for n in range(1, 13)])
    replies = render_answer(answer)
    assert len(replies) >= 3
    assert [r.embed is not None for r in replies] == [False] * (len(replies) - 1) + [True]
    assert all(len(r.content) <= MESSAGE_LIMIT for r in replies)


def test_many_long_sources_stay_within_embed_limits():
    answer = Answer("x [1]", "extractive", [citation(n, title="T" * 400, url="https://news.test/" + "p" * 500)
                                            for n in range(1, 60)])
    embed = render_answer(answer)[-1].embed
    assert len(embed.description) <= EMBED_DESCRIPTION_LIMIT and len(embed) <= EMBED_TOTAL_LIMIT
    assert re.search(r"… and \d+ more sources$", embed.description)


def test_search_results_escape_snippets_and_fit():
    results = [SearchResult(f"id{n}", f"Story {n}", "Test Wire", f"https://news.test/{n}", WHEN,
                            "@everyone **look** " + "word " * 200, 1.0) for n in range(40)]
    (reply,) = render_search(results, query="look")
    embed = reply.embed
    assert len(embed.description) <= EMBED_DESCRIPTION_LIMIT and len(embed) <= EMBED_TOTAL_LIMIT
    assert "@everyone" not in embed.description and "\\*\\*look\\*\\*" in embed.description
    assert "[Story 0 — Test Wire, 4 Jan 2020](https://news.test/0)" in embed.description
    assert render_search([], query="@everyone")[0].content.count("@everyone") == 0


def test_status_and_feed_lists_fit_whatever_the_number_of_feeds():
    polled = datetime.now(timezone.utc) - timedelta(minutes=5)
    feeds = [Feed(f"https://feeds.test/{n}.xml", "guild:1" if n % 2 else "shared", channel_id=n, last_polled=polled,
                  last_error="timed out @everyone" if n % 3 == 0 else None) for n in range(300)]
    stats = {"articles": 12, "outlets": 3, "newest": WHEN.isoformat()}
    for reply in render_status(stats, feeds) + render_feeds(feeds):
        assert len(reply.embed) <= EMBED_TOTAL_LIMIT and len(reply.embed.description) <= EMBED_DESCRIPTION_LIMIT
        assert len(reply.embed.fields) <= EMBED_FIELDS_LIMIT
        assert "@everyone" not in reply.embed.description
    status = render_status(stats, feeds)[0].embed
    assert [f.value for f in status.fields][:2] == ["12", "3"]
    assert render_status({"articles": 0}, [])[0].embed.description.startswith("No feeds yet")


def test_headlines_are_links():
    (reply,) = render_headlines([("Big news @everyone", "https://news.test/1", "Test Wire")])
    assert reply.content == "📰 [Big news @\u200beveryone](https://news.test/1) — Test Wire"


def test_a_reply_refuses_text_over_the_message_limit():
    with pytest.raises(ValueError):
        Reply(content="x" * (MESSAGE_LIMIT + 1))


# -- hostile article text: it must neither format the message nor link, ping or break its structure --

HOSTILE = [
    "```py\nimport os\n```", "> quoted as if the bot said it", ">>> all of this is a quote", "# Heading",
    "## Smaller heading", "-# subtext", "||spoiler||", "**bold**", "__underline__", "~~struck~~", "*italic*",
    "back\\slash\\", "\\*pre-escaped*", "@everyone", "@here", "<@&123456789012345678>", "<@123456789012345678>",
    "<#123456789012345678>", "<t:1700000000:R>", "[click here](https://evil.example/login)",
    "[3](https://evil.example/fake-source)", "- a list item", "1. a numbered step", "https://evil.example/unfurl",
]
# What Discord shows as it is: a backslash escape, a citation marker, a bare URL kept from unfurling.
_SHOWN_AS_IS = re.compile(r"\\[^0-9A-Za-z\s]|\[\d+(?:,\s*\d+)*\]|<https?://[^\s<>]+>")
_LINE_MARKUP = re.compile(r"^[ \t]*(?:#|>|-|\*|\d+\.\s)", re.MULTILINE)
# A link Discord renders: [label](url) or [label](<url>), the "[" not escaped.
MASKED_LINK = re.compile(r"(?<!\\)\[((?:\\.|[^\\\]])*)\]\(\s*<?(https?://[^)\s>]+)>?\s*\)")


def markup_left(text: str) -> list[str]:
    """What Discord would read as formatting, a link, a mention or a ping in `text`."""
    found = [m.group().strip() for m in _LINE_MARKUP.finditer(text)]
    at = 0
    while at < len(text):
        kept = _SHOWN_AS_IS.match(text, at)
        if kept:
            at = kept.end()
            continue
        if text[at] in "*_~|`[]<" or text.startswith(("@everyone", "@here"), at):
            found.append(text[at : at + 12])
        at += 1
    return found


def shown(text: str) -> str:
    """The text a reader sees: escapes consumed, <url> wrappers dropped, the zero-width spaces gone."""
    text = re.sub(r"\\([^0-9A-Za-z\s])|<(https?://[^\s<>]+)>", lambda m: m.group(1) or m.group(2), text)
    return text.replace("\u200b", "")


def hostile_answer(seed: int, chars: int = 5000) -> str:
    """Quoted sentences full of markup, citations after each, long enough to be split.

    Each sentence starts with markup, so wherever a split falls, the next message starts with some.
    """
    rng = random.Random(seed)
    sentences, size = [], 0
    while size < chars:
        words = [rng.choice(HOSTILE)] + [rng.choice(HOSTILE) if rng.random() < 0.3 else "officials"
                                         for _ in range(rng.randint(3, 12))]
        sentence = " ".join(words) + f". [{rng.randint(1, 9)}]" + rng.choice([" ", " ", "\n", "\n\n"])
        sentences.append(sentence)
        size += len(sentence)
    return "".join(sentences).strip()


@pytest.mark.parametrize("seed", range(12))
def test_quoted_markup_is_shown_as_text_and_the_answer_keeps_its_citations(seed):
    text = hostile_answer(seed)
    replies = render_answer(Answer(text, "extractive", [citation(n) for n in range(1, 10)], note="Shown @everyone."))
    pieces = [r.content for r in replies]
    assert len(pieces) >= 3 and all(len(p) <= MESSAGE_LIMIT for p in pieces)
    *body, last = pieces
    last, note = last.rsplit("\n\n-# ", 1)  # the bot's own subtext line closes the answer
    assert note == "Shown @\u200beveryone."
    for piece in [*body, last]:
        assert markup_left(piece) == [], piece
        assert not MASKED_LINK.search(piece)
    assert "".join(shown(" ".join([*body, last])).split()) == "".join(text.split())  # nothing lost or altered
    assert [m for p in pieces for m in CITATION.findall(p)] == CITATION.findall(text)


def test_markup_that_a_split_brings_to_the_start_of_a_message_stays_text():
    text = "word " * 395 + "end. # Heading, -# subtext and > a quote [1]. 2. Not a list [1]."
    first, second = (r.content for r in render_answer(Answer(text, "extractive", [citation(1)])))
    assert first.endswith("end.") and second.startswith("\\# Heading, -# subtext and > a quote [1].")
    assert markup_left(second) == []
    listed = render_answer(Answer("word " * 397 + "end. - an item [1].", "extractive", []))
    assert listed[1].content == "\\- an item [1]."


def test_a_citation_marker_cannot_become_a_masked_link():
    assert safe_text("as reported [1](https://evil.example/x) and [2, 3](https://evil.example/y)") == (
        "as reported [1]\\(<https://evil.example/x>) and [2, 3]\\(<https://evil.example/y>)")


def test_hostile_titles_become_escaped_labels_of_the_bots_own_links():
    title = "**Big** [click](https://evil.example/t) @everyone ||x|| # y ``` > z"
    answer = Answer("It happened [1]. Then more [2].", "extractive",
                    [citation(1, title=title), citation(2, title="Plain", url="https://news.test/b")])
    description = render_answer(answer)[-1].embed.description
    lines = description.split("\n")
    assert [line[:8] for line in lines] == ["**[1]** ", "**[2]** "]
    assert [url for _, url in MASKED_LINK.findall(description)] == ["https://news.test/a", "https://news.test/b"]
    label = MASKED_LINK.findall(lines[0])[0][0]
    assert markup_left(label) == [] and shown(label).startswith(title)
    (headline,) = render_headlines([(title, "https://news.test/a", "Evil [Wire](https://evil.example)")])
    assert [url for _, url in MASKED_LINK.findall(headline.content)] == ["https://news.test/a"]


def test_credentials_in_feed_urls_are_never_shown():
    feed = Feed("https://reader:hunter2@feeds.test/private.xml?token=tok123&page=2&ApiKey=k3y", "guild:1",
                last_error="HTTP 401")
    for reply in render_status({"articles": 1}, [feed]) + render_feeds([feed]):
        shown = reply.embed.description
        assert not any(secret in shown for secret in ("reader", "hunter2", "tok123", "k3y")), shown
        assert "(https://redacted@feeds.test/private.xml?token=redacted&page=2&ApiKey=redacted)" in shown

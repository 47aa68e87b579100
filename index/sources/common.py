"""What every reader shares: the error a reader raises, date parsing, and building a clean Article.

Readers raise `SourceError` with a one-line reason a person can act on; the loader turns it into a
`Failure`. `build_article` is the single place where text and title are normalized, the id is
chosen and the language guessed, so every reader hands on Articles of the same shape.
"""

from __future__ import annotations

import email.utils
import re
from collections import Counter
from datetime import datetime, timezone
from typing import Any

from index.article import Article, make_article_id, normalize_text
from index.sentences import dateline_end
from index.urls import absolute_http_url, outlet_from_url, public_url


class SourceError(Exception):
    """A source that cannot be read; `reason` is one short line, fit for a Failure."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def build_article(
    *,
    text: str,
    source: str,
    title: str | None = None,
    url: str | None = None,
    guid: str | None = None,
    outlet: str | None = None,
    published: datetime | None = None,
    language: str | None = None,
    author: str | None = None,
    section: str | None = None,
) -> Article:
    """An Article with normalized text and title, a stable id, and a language when it can tell.

    The id is the canonical URL, else the GUID, else a hash of the text (see make_article_id).
    Raises SourceError("no article text found") when nothing is left of the text.
    """
    text = normalize_text(text)
    if not text:
        raise SourceError("no article text found")
    url = absolute_http_url(url)
    url = url and public_url(url)  # the link every reader of a citation gets
    if published is not None and published.tzinfo is None:
        published = published.replace(tzinfo=timezone.utc)
    return Article(
        id=make_article_id(url=url, guid=guid, text=text),
        title=one_line(title) or fallback_title(text),
        text=text,
        url=url,
        outlet=one_line(outlet) or outlet_from_url(url),
        published=published,
        language=primary_language(language) or guess_language(text),
        author=one_line(author) or None,
        section=one_line(section) or None,
        source=source,
    )


def as_text(value: Any) -> str:
    """A JSON field as text: numbers are fine (ids often are); lists, objects, booleans and null are not."""
    return str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else ""


def format_size(n: int) -> str:
    """5_000_000 -> '5 MB', for reasons people read."""
    if n >= 1_000_000:
        return f"{n / 1_000_000:g} MB"
    if n >= 1000:
        return f"{n / 1000:g} kB"
    return f"{n} bytes"


def one_line(value: str | None) -> str:
    """Normalized text on a single line ('' for None), for titles, names and labels."""
    return " ".join(normalize_text(value).split()) if value else ""


def fallback_title(text: str, limit: int = 100) -> str:
    """A title for a story that has none: its first line without a wire dateline, cut at a word near
    `limit` characters."""
    first = text.strip().split("\n", 1)[0].strip()
    first = first[dateline_end(first):]
    if len(first) <= limit:
        return first
    cut = first[:limit].rsplit(" ", 1)[0]
    return cut.rstrip(" ,;:-") + "…"


# Formats seen on news pages that fromisoformat and RFC 822 parsing do not cover.
_DATE_FORMATS = (
    "%H:%M %d %B %Y",  # "05:46 | 04 January 2020" once the bar is gone
    "%H:%M %d %b %Y",
    "%d %B %Y %H:%M",
    "%d %b %Y %H:%M",
    "%d %B %Y",
    "%d %b %Y",
    "%B %d, %Y %H:%M",
    "%B %d, %Y %I:%M %p",
    "%B %d, %Y",
    "%b %d, %Y",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d",
    "%d.%m.%Y %H:%M",
    "%d.%m.%Y",
)


def parse_datetime(value: object) -> datetime | None:
    """A timezone-aware datetime from ISO 8601, RFC 822 or a common news-page format; UTC when no zone.

    Returns None for anything it cannot read, so a bad date never costs a story.
    """
    if isinstance(value, datetime):
        parsed: datetime | None = value
    elif isinstance(value, str) and value.strip():
        parsed = _parse_date_string(value.strip())
    else:
        parsed = None
    if parsed is None:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _parse_date_string(value: str) -> datetime | None:
    try:
        return datetime.fromisoformat(value)
    except ValueError:
        pass
    try:
        return email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        pass
    cleaned = " ".join(value.replace("|", " ").replace(" at ", " ").split())
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(cleaned, fmt)
        except ValueError:
            continue
    return None


def primary_language(tag: str | None) -> str | None:
    """'en-US' -> 'en'; None for anything that is not a language tag."""
    if not tag:
        return None
    primary = re.split(r"[-_]", tag.strip(), maxsplit=1)[0].lower()
    return primary if re.fullmatch(r"[a-z]{2,3}", primary) else None


# A few of the commonest words of each language: enough to tell news prose apart cheaply.
_STOPWORDS = {
    "en": "the and of to in is that for on with was said it as by at from he his are have has".split(),
    "de": "der die und das ist nicht den mit sich des auf ein eine dem für von im zu auch wird".split(),
    "fr": "le la les et des est une du dans que qui pour pas sur au par il elle sont avec ce".split(),
    "es": "el la los las y de que en un una por con para es del se al lo como más su".split(),
    "it": "il la che di e un una per non sono del della con gli le si da è al nel".split(),
    "pt": "o a os as e de que em um uma para com não do da dos das se por mais foi".split(),
    "nl": "de het een en van is dat op te in niet zijn met voor die er ook aan om".split(),
}
_STOPWORD_LANGUAGE = {}
for _code, _words in _STOPWORDS.items():
    for _word in _words:
        _STOPWORD_LANGUAGE.setdefault(_word, []).append(_code)
_WORD = re.compile(r"[^\W\d_]+")


# Letters outside the Latin script, in runs, and the scripts told apart among them (a loop over
# every character in Python was a tenth of the ingest's own time).
_NOT_LATIN = re.compile(r"[^\u0000-\u024f]+")
_KANA = re.compile(r"[\u3040-\u30ff]")
_HANGUL = re.compile(r"[\uac00-\ud7af\u1100-\u11ff]")
_HAN = re.compile(r"[\u4e00-\u9fff\u3400-\u4dbf]")


def guess_language(text: str, sample_chars: int = 2000) -> str | None:
    """A cheap guess at the language of news prose: by script, else by common words; None if unsure."""
    sample = text[:sample_chars]
    letters = "".join(filter(str.isalpha, sample))
    if not letters:
        return None
    not_latin = "".join(_NOT_LATIN.findall(letters))
    if len(_KANA.findall(not_latin)) > 0.05 * len(letters):
        return "ja"
    if len(_HANGUL.findall(not_latin)) > 0.3 * len(letters):
        return "ko"
    if len(_HAN.findall(not_latin)) > 0.3 * len(letters):
        return "zh"
    if len(not_latin) > 0.3 * len(letters):
        return None
    votes: Counter[str] = Counter()
    for word, count in Counter(_WORD.findall(sample.lower())).items():
        for code in _STOPWORD_LANGUAGE.get(word, ()):
            votes[code] += count
    ranked = votes.most_common(2)
    if not ranked or ranked[0][1] < 3:
        return None
    if len(ranked) > 1 and ranked[0][1] < 1.5 * ranked[1][1]:
        return None
    return ranked[0][0]

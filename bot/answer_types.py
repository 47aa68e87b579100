"""What an answer is, wherever it is shown: the CLI's JSON, the console and Discord.

One `Citation` type and one `Answer` type, so every front end shows the same sources the same way.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

# How every front end introduces an answer's `closest` stories.
CLOSEST_STORIES = "The closest stories:"

# Citation markers as the answerers write them, and as render and cited() read them: "[3]", "[1, 4]".
CITATION = re.compile(r"\[\d+(?:,\s*\d+)*\]")


def cited(quote: str, *numbers: int) -> str:
    """A quoted sentence followed by its citation marks.

    A bracketed number in the article's own text (a footnote, "[2]") would read as one of the
    answer's citations, pointing at the wrong source; it is shown in parentheses instead.
    """
    marks = "".join(f"[{n}]" for n in numbers)
    return CITATION.sub(lambda m: f"({m.group()[1:-1]})", quote) + " " + marks


def source_label(title: str, outlet: str | None, published: datetime | None) -> str:
    """'Title — Outlet, 4 Jan 2020': how a source is named to a reader, everywhere."""
    meta = ", ".join(p for p in (outlet, published.strftime("%-d %b %Y") if published else None) if p)
    return f"{title} — {meta}" if meta else title


@dataclass(frozen=True)
class Citation:
    """Source `[n]` of an answer: the article it points to and the sentence it rests on."""

    n: int
    article_id: str
    title: str
    outlet: str | None
    url: str | None
    published: datetime | None
    quote: str
    also_reported_by: tuple[str, ...] = ()

    def to_json(self) -> dict:
        data = asdict(self)
        data["published"] = self.published.isoformat() if self.published else None
        data["also_reported_by"] = list(self.also_reported_by)
        return data

    def label(self) -> str:
        return source_label(self.title, self.outlet, self.published)


@dataclass(frozen=True)
class SearchResult:
    """An article that matches a search, or a story close to a question that nothing answers."""

    article_id: str
    title: str
    outlet: str | None
    url: str | None
    published: datetime | None
    snippet: str
    score: float

    def to_json(self) -> dict:
        return {
            "article_id": self.article_id, "title": self.title, "outlet": self.outlet, "url": self.url,
            "published": self.published.isoformat() if self.published else None,
            "snippet": self.snippet, "score": round(self.score, 5),
        }

    def label(self) -> str:
        return source_label(self.title, self.outlet, self.published)


@dataclass
class Answer:
    """A cited answer or summary.

    `text` carries `[n]` markers that refer to `citations[n-1]`. `mode` says who wrote it:
    the extractive engine or a language model. `note` is a one-line remark for the reader,
    e.g. why the LLM answer was replaced by the extractive one. When the news does not answer
    the question (`found` false), `closest` lists the stories nearest to it, as search results.
    """

    text: str
    mode: str
    citations: list[Citation]
    timing_ms: dict[str, float] = field(default_factory=dict)
    note: str | None = None
    found: bool = True  # False when nothing relevant was indexed
    claims_supported: int | None = None
    claims_unsupported: int | None = None
    closest: list[SearchResult] = field(default_factory=list)

    def to_json(self) -> dict:
        data = {
            "answer": self.text,
            "mode": self.mode,
            "found": self.found,
            "citations": [c.to_json() for c in self.citations],
            "timing_ms": {k: round(v, 2) for k, v in self.timing_ms.items()},
            "note": self.note,
            "closest": [r.to_json() for r in self.closest],
        }
        if self.claims_supported is not None:
            data["claims"] = {"supported": self.claims_supported, "unsupported": self.claims_unsupported}
        return data

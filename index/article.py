"""The data every step passes around: an Article, its Chunks, and the reasons a source failed.

These are plain frozen values so that readers, the de-duplicator, the chunker, the store and the
answerer can be tested in isolation and never share mutable state.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

from index.urls import canonical_url

DEFAULT_COLLECTION = "shared"


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def normalize_text(text: str) -> str:
    """Unicode NFC, invisible and control characters removed, runs of spaces collapsed; paragraphs kept.

    Zero-width and bidi control characters are dropped because they hide words from the lexical
    index and can reorder what a Discord user sees. Other control characters (ESC, BEL, NUL, the
    C1 range) become spaces: a title carrying a terminal escape sequence must not reach a terminal
    through `newsdesk search`, and they are not text anyway.
    """
    text = unicodedata.normalize("NFC", text)
    text = _INVISIBLE.sub("", text)
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\xa0", " ")
    text = _CONTROL.sub(" ", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.split("\n")]
    text = "\n".join(lines)
    return _BLANK_LINES.sub("\n\n", text).strip()


_INVISIBLE = re.compile("[\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff\u00ad]")
_CONTROL = re.compile("[\x00-\x08\x0e-\x1f\x7f-\x9f]")  # C0 and C1 controls but tab, newline, VT, FF, CR
_SPACES = re.compile(r"[ \t\f\v]+")
_BLANK_LINES = re.compile(r"\n{3,}")


def content_hash(text: str) -> str:
    """A stable digest of text, insensitive to case and whitespace."""
    canonical = " ".join(text.lower().split())
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Article:
    """One news story as read from a source, cleaned, before chunking.

    `id` is stable: the canonical URL or feed GUID when there is one, else a hash of the content,
    so that ingesting the same story twice is recognised.
    """

    id: str
    title: str
    text: str
    url: str | None = None
    outlet: str | None = None
    published: datetime | None = None
    fetched: datetime = field(default_factory=utcnow)
    language: str | None = None
    author: str | None = None
    section: str | None = None
    source: str = ""  # where it was read from: a path, a URL, a feed URL
    collection: str = DEFAULT_COLLECTION

    def __post_init__(self) -> None:
        if not self.id:
            raise ValueError("an Article needs an id")
        if not self.text.strip():
            raise ValueError(f"article {self.id} has no text")
        for name in ("published", "fetched"):
            value = getattr(self, name)
            if value is not None and value.tzinfo is None:
                raise ValueError(f"article {self.id}: {name} must be timezone-aware")

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)

    def with_collection(self, collection: str) -> Article:
        return replace(self, collection=collection)


def make_article_id(*, url: str | None = None, guid: str | None = None, text: str = "") -> str:
    """The stable id: the canonical URL, else the GUID, else a hash of the text."""
    if url:
        canonical = canonical_url(url)
        if canonical:
            return canonical
    if guid and guid.strip():
        return guid.strip()
    return "sha256:" + content_hash(text)[:32]


@dataclass(frozen=True)
class Chunk:
    """A passage of an article, small enough for the embedding model's token window.

    `start` and `end` are character offsets into `Article.text`, so a citation can quote the
    exact sentence it rests on.
    """

    article_id: str
    ordinal: int
    text: str
    start: int
    end: int
    # The text's token ids (without special tokens) when the chunker made it: embedded without
    # tokenizing it again. Not part of what a chunk is.
    token_ids: tuple[int, ...] = field(default=(), compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.start < 0 or self.end < self.start:
            raise ValueError(f"bad span {self.start}..{self.end} for chunk {self.ordinal}")

    @property
    def content_hash(self) -> str:
        return content_hash(self.text)


@dataclass(frozen=True)
class ArticleMeta:
    """What a citation shows of a stored article; the text stays in the store."""

    id: str
    title: str
    outlet: str | None
    url: str | None
    published: datetime | None
    fetched: datetime | None
    language: str | None
    sort_time: datetime | None = None  # published, else fetched
    also_reported_by: tuple[str, ...] = ()


@dataclass(frozen=True)
class Failure:
    """A source that could not be read, and why, in words a person can act on."""

    source: str
    reason: str

"""Which reader a document needs: its first bytes, then its name, then its Content-Type.

Content comes first because servers mislabel feeds (text/html, text/plain) and people misname
files; the name and the header decide only when the bytes do not.
"""

from __future__ import annotations

import re
from enum import StrEnum
from pathlib import PurePosixPath


class SourceKind(StrEnum):
    TEXT = "text"  # a plain-text article page
    HTML = "html"
    FEED = "feed"  # RSS, Atom or JSON Feed
    JSONL = "jsonl"


EXTENSIONS = {
    ".txt": SourceKind.TEXT,
    ".text": SourceKind.TEXT,
    ".html": SourceKind.HTML,
    ".htm": SourceKind.HTML,
    ".xhtml": SourceKind.HTML,
    ".xml": SourceKind.FEED,
    ".rss": SourceKind.FEED,
    ".atom": SourceKind.FEED,
    ".rdf": SourceKind.FEED,
    ".json": SourceKind.FEED,
    ".jsonl": SourceKind.JSONL,
    ".ndjson": SourceKind.JSONL,
}
_CONTENT_TYPES = {
    "text/html": SourceKind.HTML,
    "application/xhtml+xml": SourceKind.HTML,
    "application/rss+xml": SourceKind.FEED,
    "application/atom+xml": SourceKind.FEED,
    "application/rdf+xml": SourceKind.FEED,
    "application/xml": SourceKind.FEED,
    "text/xml": SourceKind.FEED,
    "application/feed+json": SourceKind.FEED,
    "application/json": SourceKind.FEED,
    "application/x-ndjson": SourceKind.JSONL,
    "application/jsonl": SourceKind.JSONL,
    "application/x-jsonlines": SourceKind.JSONL,
    "text/plain": SourceKind.TEXT,
}
_FEED_ROOTS = {"rss", "feed", "rdf:rdf", "rdf", "channel"}
_HTML_ROOTS = {"html", "head", "body", "div", "p", "article", "meta", "title", "section", "main", "script"}
# Whitespace, the XML declaration, comments, processing instructions and a doctype before the root.
_PROLOG = re.compile(r"\A(?:\s+|<\?.*?\?>|<!--.*?-->|<!doctype[^>\[]*(?:\[.*?\])?\s*>)*", re.DOTALL | re.IGNORECASE)
_ROOT = re.compile(r"<([A-Za-z][\w:.-]*)")


def sniff_kind(head: bytes, *, name: str = "", content_type: str = "") -> SourceKind:
    """The kind of a document from its first bytes (a few kB are plenty), its file or URL path
    name, and its HTTP media type."""
    text = head[:8192].decode("latin-1").lstrip("\ufeff\xef\xbb\xbf")  # ASCII markers only
    suffix = PurePosixPath(name.split("?", 1)[0]).suffix.lower()
    if text.lstrip().startswith("{"):
        if "jsonfeed.org/version" in text:
            return SourceKind.FEED
        if suffix in (".jsonl", ".ndjson") or content_type in ("application/x-ndjson", "application/jsonl"):
            return SourceKind.JSONL
        return SourceKind.FEED if suffix == ".json" or content_type.endswith("json") else SourceKind.JSONL
    if text.lower().lstrip().startswith("<!doctype html"):
        return SourceKind.HTML
    root = _ROOT.match(text, _PROLOG.match(text).end())
    if root:
        tag = root.group(1).lower()
        if tag in _FEED_ROOTS:
            return SourceKind.FEED
        if tag in _HTML_ROOTS:
            return SourceKind.HTML
    if suffix in EXTENSIONS:
        return EXTENSIONS[suffix]
    if content_type in _CONTENT_TYPES:
        return _CONTENT_TYPES[content_type]
    if root:
        return SourceKind.HTML  # some markup with an unknown root: let the HTML reader try
    return SourceKind.TEXT

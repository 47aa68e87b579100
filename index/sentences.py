"""Sentence boundaries as character spans, shared by the chunker, the answerer and the citation check.

A rule-based splitter: news prose is regular enough, and spans (not copies) let every later step
quote the article's exact characters.
"""

from __future__ import annotations

import re

# Abbreviations after which a full stop does not end a sentence.
_ABBREVIATIONS = {
    "mr", "mrs", "ms", "dr", "prof", "sen", "rep", "gov", "gen", "col", "lt", "sgt", "capt", "st",
    "jr", "sr", "inc", "ltd", "co", "corp", "vs", "etc", "no", "jan", "feb", "mar", "apr", "jun",
    "jul", "aug", "sep", "sept", "oct", "nov", "dec", "u.s", "u.k", "u.n", "e.g", "i.e", "a.m", "p.m",
}
# A wire story's opening "WASHINGTON (Reuters) - ", "MALE, Maldives (CNN) -- " or "LONDON — ": where
# and who filed it, which the citation already names. Up to six place words, the agency in
# brackets, then a dash; or an upper-case place and a long dash.
_DATELINE = re.compile(
    r"(?:[A-Z][\w.'’-]*(?:,?\s+[A-Z][\w.'’-]*){0,5},?\s*)?\([A-Z][\w .&-]{1,30}\)\s*(?:--|[-–—])\s+"
    r"|[A-Z][A-Z.'’-]+(?:,?\s+[A-Z][\w.'’-]*){0,5}\s+(?:--|[–—])\s+"
)
_END = re.compile(r"""[.!?]+["'”’)\]]*(?=\s+|$)|\n+""")
_WORD_BEFORE = re.compile(r"([\w.]+)$")


def sentence_spans(text: str, start: int = 0, end: int | None = None) -> list[tuple[int, int]]:
    """(start, end) offsets of each sentence in text[start:end], trimmed of surrounding space."""
    end = len(text) if end is None else end
    spans: list[tuple[int, int]] = []
    cursor = start
    for match in _END.finditer(text, start, end):
        stop = match.end()
        if not match.group().startswith("\n") and _is_abbreviation(text, cursor, match.start(), stop, end):
            continue
        _append_trimmed(text, cursor, stop, spans)
        cursor = stop
    _append_trimmed(text, cursor, end, spans)
    return spans


def dateline_end(text: str) -> int:
    """Where an article's text starts after its dateline; 0 when it has none."""
    match = _DATELINE.match(text)
    return match.end() if match else 0


def split_sentences(text: str) -> list[str]:
    return [text[a:b] for a, b in sentence_spans(text)]


def _is_abbreviation(text: str, sentence_start: int, dot: int, stop: int, end: int) -> bool:
    if text[dot] != ".":
        return False
    word = _WORD_BEFORE.search(text, sentence_start, dot)
    if word and (word.group(1).lower() in _ABBREVIATIONS or len(word.group(1)) == 1):
        return True
    # "3.5" never reaches here; a lower-case continuation means the sentence goes on.
    following = text[stop:end].lstrip()
    return bool(following) and following[0].islower()


def _append_trimmed(text: str, a: int, b: int, spans: list[tuple[int, int]]) -> None:
    while a < b and text[a].isspace():
        a += 1
    while b > a and text[b - 1].isspace():
        b -= 1
    if b > a:
        spans.append((a, b))

"""Sentence-aware chunking bounded by the embedding model's token window."""

from __future__ import annotations

import re
from collections.abc import Callable

from index.article import Article, Chunk
from index.sentences import sentence_spans

_WORD = re.compile(r"\S+")


class Chunker:
    """Packs whole sentences into chunks of at most `max_tokens`, repeating the last
    `overlap_sentences` of each chunk at the start of the next so no fact is cut from its context.

    A sentence longer than the window on its own is split on word boundaries.
    """

    def __init__(self, count_tokens: Callable[[str], int], *, max_tokens: int = 240, overlap_sentences: int = 1):
        if max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")
        if overlap_sentences < 0:
            raise ValueError("overlap_sentences cannot be negative")
        self.count_tokens = count_tokens
        self.max_tokens = max_tokens
        self.overlap_sentences = overlap_sentences

    def run(self, article: Article) -> list[Chunk]:
        text = article.text
        pieces = [(a, b, self.count_tokens(text[a:b])) for a, b in sentence_spans(text)]
        pieces = [p for a, b, n in pieces for p in self._fit(text, a, b, n)]
        chunks: list[Chunk] = []
        i = 0
        while i < len(pieces):
            j, used = i, 0
            while j < len(pieces) and (j == i or used + pieces[j][2] <= self.max_tokens):
                used += pieces[j][2]
                j += 1
            start, end = pieces[i][0], pieces[j - 1][1]
            chunks.append(Chunk(article.id, len(chunks), text[start:end], start, end))
            if j >= len(pieces):
                break
            # Step back for overlap, but always move forward by at least one sentence.
            i = max(i + 1, j - self.overlap_sentences)
        return chunks

    def _fit(self, text: str, a: int, b: int, tokens: int) -> list[tuple[int, int, int]]:
        if tokens <= self.max_tokens:
            return [(a, b, tokens)]
        # Split an over-long sentence into word windows of roughly equal token cost.
        words = [m.span() for m in _WORD.finditer(text, a, b)]
        per_word = tokens / max(len(words), 1)
        size = max(1, int(self.max_tokens / per_word * 0.9))
        out = []
        for k in range(0, len(words), size):
            s, e = words[k][0], words[min(k + size, len(words)) - 1][1]
            out.append((s, e, self.count_tokens(text[s:e])))
        return out

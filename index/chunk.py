"""Sentence-aware chunking bounded by the embedding model's token window."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from index.article import Article, Chunk
from index.sentences import sentence_spans

if TYPE_CHECKING:
    from index.embed import Embedder

_WORD = re.compile(r"\S+")


class Chunker:
    """Packs whole sentences into chunks of at most `max_tokens`, repeating the last
    `overlap_sentences` of each chunk at the start of the next so no fact is cut from its context.

    A sentence longer than the window on its own is split on word boundaries. Each sentence costs
    its tokens as the model would read it alone (special tokens included), as chunks were always
    cut; a chunk keeps its sentences' token ids, joined, for the model.
    """

    def __init__(self, embedder: Embedder, *, max_tokens: int = 240, overlap_sentences: int = 1):
        if max_tokens < 16:
            raise ValueError("max_tokens must be at least 16")
        if overlap_sentences < 0:
            raise ValueError("overlap_sentences cannot be negative")
        self.embedder = embedder
        self.max_tokens = max_tokens
        self.overlap_sentences = overlap_sentences

    def run(self, article: Article) -> list[Chunk]:
        return self.run_batch([article])[0]

    def run_batch(self, articles: Sequence[Article]) -> list[list[Chunk]]:
        """Each article's chunks, its sentences tokenized with the others' in one call (inside
        ingest, a call per article cost twice as much: the tokenizer's threads and caches go cold)."""
        spans = [sentence_spans(article.text) for article in articles]
        tokens = iter(self.embedder.tokenize([article.text[a:b] for article, own in zip(articles, spans)
                                              for a, b in own]))
        return [self._pack(article, [p for (a, b) in own for p in self._fit(article.text, a, b, next(tokens))])
                for article, own in zip(articles, spans)]

    def _pack(self, article: Article, pieces: list[tuple[int, int, list[int], int]]) -> list[Chunk]:
        text = article.text
        chunks: list[Chunk] = []
        i = 0
        while i < len(pieces):
            j, used = i, 0
            while j < len(pieces) and (j == i or used + pieces[j][3] <= self.max_tokens):
                used += pieces[j][3]
                j += 1
            start, end = pieces[i][0], pieces[j - 1][1]
            token_ids = tuple(t for piece in pieces[i:j] for t in piece[2])
            chunks.append(Chunk(article.id, len(chunks), text[start:end], start, end, token_ids))
            if j >= len(pieces):
                break
            # Step back for overlap, but always move forward by at least one sentence.
            i = max(i + 1, j - self.overlap_sentences)
        return chunks

    def _cost(self, ids: list[int]) -> int:
        """A piece's tokens as the model would read it alone."""
        return len(ids) + self.embedder.special_tokens

    def _fit(self, text: str, a: int, b: int, ids: list[int]) -> list[tuple[int, int, list[int], int]]:
        """The sentence as pieces (start, end, token ids, cost) that each fit the window."""
        tokens = self._cost(ids)
        if tokens <= self.max_tokens:
            return [(a, b, ids, tokens)]
        # Split an over-long sentence into word windows of roughly equal token cost.
        words = [m.span() for m in _WORD.finditer(text, a, b)]
        per_word = tokens / max(len(words), 1)
        size = max(1, int(self.max_tokens / per_word * 0.9))
        windows = [(words[k][0], words[min(k + size, len(words)) - 1][1]) for k in range(0, len(words), size)]
        window_tokens = self.embedder.tokenize([text[s:e] for s, e in windows])
        return [(s, e, ids, self._cost(ids)) for (s, e), ids in zip(windows, window_tokens)]

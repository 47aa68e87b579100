"""The SQLite backend's BM25 postings cut and stem words exactly as FTS5's `porter unicode61`
tokenizer does (the scores are FTS5's only if the words are): checked word for word against FTS5
itself on real news."""

from __future__ import annotations

import json
import sqlite3
from collections import Counter
from contextlib import closing

from conftest import shared_data

from index.store.sqlite_lexicon import terms_of

# Beyond English news: accents (one, two, written apart), other scripts and their marks, case
# folds lower() does not make, stems of non-ASCII words (FTS5 stems bytes), numbers and punctuation.
OTHER_TEXT = ("Café São Paulo naïve résumé Zürich Łódź Straße İstanbul", "Москва новости йод ёлка",
              "東京 ニュース 2024年 データ ガス", "co-operate e-mail don't U.S. 3.5% £600m", "ﬁnance ① ² snake_case",
              "Ελληνικά νέα ειδήσεις ϊ ί ϐ ϑ ϰ ſ", "Cafe\u0301 re\u0301sume\u0301 и\u0306 ầ ỗ ṩ", "كَتَبَ الطالبُ الدرسَ",
              "øs łs ŋs ßing " + "x" * 61 + "ings")


def fts5_terms(texts: list[str]) -> list[Counter]:
    with closing(sqlite3.connect(":memory:")) as db:
        db.execute("CREATE VIRTUAL TABLE t USING fts5(body, tokenize = 'porter unicode61')")
        db.executemany("INSERT INTO t (rowid, body) VALUES (?, ?)", enumerate(texts))
        db.execute("CREATE VIRTUAL TABLE v USING fts5vocab(t, 'instance')")
        found = [Counter() for _ in texts]
        for term, doc in db.execute("SELECT term, doc FROM v"):
            found[doc][term] += 1
    return found


def corpus(relative: str, n: int) -> list[str]:
    with shared_data(relative).open(encoding="utf-8") as handle:
        return [row["title"] + "\n" + row["text"] for row in map(json.loads, handle)][:n]


def test_words_are_cut_and_stemmed_as_fts5s_porter_tokenizer_does():
    texts = corpus("bbc/corpus.jsonl", 2225) + corpus("reuters/corpus.jsonl", 4000) + list(OTHER_TEXT)
    expected = fts5_terms(texts)
    differing = [(text[:60], Counter(terms_of(text)) - want, want - Counter(terms_of(text)))
                 for text, want in zip(texts, expected) if Counter(terms_of(text)) != want]
    assert not differing, differing[:5]
    # Not a comparison of nothing: most words are stemmed, and the texts hold many distinct ones.
    vocabulary = {term for counts in expected for term in counts}
    assert len(vocabulary) > 20_000
    assert terms_of("The councils were suspending their relational operations") == \
        ["the", "council", "were", "suspend", "their", "relat", "oper"]

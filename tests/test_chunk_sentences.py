import pytest
from conftest import SEED, article

from index.chunk import Chunker
from index.embed import count_tokens
from index.sentences import dateline_end, sentence_spans, split_sentences


def test_sentences_keep_abbreviations_and_quotes_together():
    text = 'Mr. Smith met the U.S. envoy at 3 p.m. on Monday. "It went well," he said. Prices rose 3.5% in Jan. overall.'
    assert split_sentences(text) == [
        "Mr. Smith met the U.S. envoy at 3 p.m. on Monday.",
        '"It went well," he said.',
        "Prices rose 3.5% in Jan. overall.",
    ]


def test_sentence_spans_point_at_the_exact_characters():
    text = SEED.read_text(encoding="utf-8")
    for a, b in sentence_spans(text):
        assert text[a:b] == text[a:b].strip() and text[a:b]


def test_chunks_respect_the_token_window_and_overlap(fake_embedder):
    text = " ".join(f"Sentence number {i} tells about event {i} in the capital city today." for i in range(60))
    story = article("A long story", text)
    chunker = Chunker(fake_embedder, max_tokens=40, overlap_sentences=1)
    chunks = chunker.run(story)
    assert len(chunks) > 5
    for chunk in chunks:
        assert count_tokens(fake_embedder, chunk.text) <= 40
        assert story.text[chunk.start : chunk.end] == chunk.text
    # Each chunk starts with the last sentence of the one before.
    for before, after in zip(chunks, chunks[1:]):
        assert after.start < before.end
        assert split_sentences(before.text)[-1] == split_sentences(after.text)[0]
    assert chunks[-1].end == len(story.text)


def test_an_overlong_sentence_is_split_on_words(fake_embedder):
    story = article("No full stops", " ".join(["word"] * 500))
    chunks = Chunker(fake_embedder, max_tokens=50).run(story)
    assert len(chunks) >= 10
    assert all(count_tokens(fake_embedder, c.text) <= 50 for c in chunks)
    assert sum(len(c.text.split()) for c in chunks) >= 500


@pytest.mark.parametrize(
    ("text", "story"),
    [
        ("MALE, Maldives (CNN) -- The new president", "The new president"),
        ("(CNN) -- President Obama visits Mexico", "President Obama visits Mexico"),
        ("WASHINGTON (Reuters) - The Fed held rates", "The Fed held rates"),
        ("HONG KONG, China (CNN) -- Hong Kong authorities", "Hong Kong authorities"),
        ("LONDON — Britain said on Monday", "Britain said on Monday"),
        # Not datelines: a bracket mid-sentence, a one-letter party tag, a headline-style dash.
        ("NATO has suspended (its) - training", "NATO has suspended (its) - training"),
        ("Senator Jane Smith (D) - said on Monday", "Senator Jane Smith (D) - said on Monday"),
        ("US-Iran tensions — what next", "US-Iran tensions — what next"),
    ],
)
def test_a_wire_dateline_is_told_from_the_story(text, story):
    assert text[dateline_end(text):] == story


def test_a_title_made_from_the_first_line_leaves_the_dateline_out():
    from index.sources.common import fallback_title

    assert fallback_title("MALE, Maldives (CNN) -- The new president spoke.\nMore text.") == "The new president spoke."

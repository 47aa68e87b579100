"""LLMAnswerer end to end against a local OpenAI-compatible server: checked answers and fallbacks."""

from __future__ import annotations

import pytest
from openai_fake import FakeOpenAI, Reply, closed_port
from test_citecheck import CASINO, NATO, OIL, make_hit

from bot.config import LLMSettings
from bot.extractive import ExtractiveAnswerer
from bot.llm import LLMAnswerer
from bot.prompt import NO_ANSWER

QUESTION = "Why did NATO suspend its training missions in Iraq?"
HITS = [make_hit("nato", NATO, score=0.9), make_hit("oil", OIL, score=0.5), make_hit("casino", CASINO, score=0.1)]
GOOD = "NATO has suspended its training missions in Iraq [1]. Oil prices rose by 4 percent on Friday [2]."


def answerer(base_url: str, fake_embedder, **overrides) -> LLMAnswerer:
    values = dict(base_url=base_url, model="test-model", api_key_env="NEWSDESK_TEST_KEY", retry_backoff_seconds=0.01)
    return LLMAnswerer(LLMSettings(**{**values, **overrides}), embedder=fake_embedder, fallback=ExtractiveAnswerer())


def test_a_supported_answer_is_returned_with_checked_citations(fake_embedder):
    seen: list[str] = []
    with FakeOpenAI([Reply(GOOD)]) as fake:
        answer = answerer(fake.base_url, fake_embedder).run(QUESTION, HITS, on_text=seen.append)

    assert (answer.mode, answer.text, answer.note) == ("llm", GOOD, None)
    assert (answer.claims_supported, answer.claims_unsupported) == (2, 0)
    assert [c.article_id for c in answer.citations] == ["nato", "oil"]
    assert seen[-1] == GOOD
    assert answer.to_json()["claims"] == {"supported": 2, "unsupported": 0}
    assert set(answer.timing_ms) == {"llm", "citecheck"}


def test_an_instruction_reaches_the_model(fake_embedder):
    with FakeOpenAI([Reply(GOOD)]) as fake:
        answerer(fake.base_url, fake_embedder).run("Iraq", HITS, instruction="Summarize what the sources report about: Iraq")

    assert "Task: Summarize what the sources report about: Iraq" in fake.requests[0]["messages"][1]["content"]


def test_unsupported_claims_are_dropped_while_enough_remain(fake_embedder):
    reply = GOOD + " Brent crude reached 69 dollars a barrel [2]. NATO troops will leave Syria next year [1]."
    with FakeOpenAI([Reply(reply)]) as fake:
        answer = answerer(fake.base_url, fake_embedder, min_supported_share=0.7).run(QUESTION, HITS)

    assert answer.mode == "llm"
    assert "Syria" not in answer.text
    assert (answer.claims_supported, answer.claims_unsupported) == (3, 1)


def test_a_mostly_unsupported_answer_falls_back_to_the_extractive_one(fake_embedder):
    nonsense = "Once upon a time there was a little girl named Lily [1]. She loved to play in the park [2]. " + GOOD
    with FakeOpenAI([Reply(nonsense)]) as fake:
        answer = answerer(fake.base_url, fake_embedder).run(QUESTION, HITS)

    assert answer.mode == "extractive" and answer.found
    assert answer.note == (
        "The language model's answer was not supported by its sources (2 of 4 claims); showing the extractive answer."
    )
    assert (answer.claims_supported, answer.claims_unsupported) == (2, 2)
    assert answer.citations and answer.citations[0].article_id == "nato"


def test_the_model_saying_the_sources_do_not_answer_is_kept(fake_embedder):
    with FakeOpenAI([Reply(NO_ANSWER)]) as fake:
        answer = answerer(fake.base_url, fake_embedder).run(QUESTION, HITS)

    assert (answer.mode, answer.text, answer.found, answer.citations) == ("llm", NO_ANSWER, False, [])


@pytest.mark.parametrize(
    "replies, reason",
    [
        ([Reply.rate_limited("0")], "rate limited, 3 tries"),
        ([Reply.server_error()], "server error 500, 3 tries"),
        ([Reply.empty()], "empty reply, 3 tries"),
        ([Reply.malformed()], "malformed reply, 3 tries"),
        ([Reply.context_length()], "the prompt was too long for the model"),
    ],
)
def test_faults_fall_back_to_the_extractive_answer_with_a_note(fake_embedder, replies, reason):
    with FakeOpenAI(replies) as fake:
        answer = answerer(fake.base_url, fake_embedder).run(QUESTION, HITS)

    assert answer.mode == "extractive" and answer.found and answer.citations
    assert answer.note == f"The language model failed ({reason}); showing the extractive answer."
    assert "llm" in answer.timing_ms


def test_a_timeout_falls_back(fake_embedder):
    with FakeOpenAI([Reply.slow(30)]) as fake:
        answer = answerer(fake.base_url, fake_embedder, timeout_seconds=0.3, max_retries=0).run(QUESTION, HITS)

    assert answer.mode == "extractive"
    assert answer.note == "The language model failed (timed out, 1 tries); showing the extractive answer."


def test_a_refused_connection_falls_back(fake_embedder):
    answer = answerer(f"http://127.0.0.1:{closed_port()}/v1", fake_embedder).run(QUESTION, HITS)

    assert answer.mode == "extractive" and "connection failed" in answer.note


def test_a_context_length_error_retries_once_with_half_the_sources(fake_embedder):
    with FakeOpenAI([Reply.context_length(), Reply("NATO has suspended its training missions in Iraq [1].")]) as fake:
        answer = answerer(fake.base_url, fake_embedder).run(QUESTION, HITS)

    assert answer.mode == "llm" and answer.citations[0].article_id == "nato"
    first, second = (r["messages"][1]["content"] for r in fake.requests)
    assert first.count("<source ") == 3 and 1 <= second.count("<source ") < 3


def test_with_no_hits_the_model_is_not_asked(fake_embedder):
    with FakeOpenAI([Reply(GOOD)]) as fake:
        answer = answerer(fake.base_url, fake_embedder).run(QUESTION, [])

    assert answer.mode == "extractive" and not answer.found and fake.requests == []


def test_settings_are_validated(fake_embedder):
    with pytest.raises(ValueError, match="base_url and llm.model"):
        answerer("", fake_embedder)
    with pytest.raises(ValueError, match="max_retries"):
        answerer("http://127.0.0.1:9/v1", fake_embedder, max_retries=-1)

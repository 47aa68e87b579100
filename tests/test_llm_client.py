"""ChatClient with the real openai client against a local OpenAI-compatible server and its faults."""

from __future__ import annotations

import logging

import pytest
from openai_fake import FakeOpenAI, Reply, closed_port

from bot.config import LLMSettings
from bot.llm import ChatClient, ContextLengthError, LLMError, create_client

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]
SECRET = "sk-test-0123456789abcdef"


def settings(base_url: str, **overrides) -> LLMSettings:
    values = dict(
        base_url=base_url, model="test-model", api_key_env="NEWSDESK_TEST_KEY", timeout_seconds=5.0,
        retry_backoff_seconds=0.5, max_retries=2,
    )
    return LLMSettings(**{**values, **overrides})


def chat(base_url: str, sleeps: list[float], **overrides) -> ChatClient:
    config = settings(base_url, **overrides)
    return ChatClient(config, create_client(config), sleep=sleeps.append)


def test_the_reply_streams_and_the_key_comes_from_the_environment_unlogged(monkeypatch, caplog):
    monkeypatch.setenv("NEWSDESK_TEST_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with FakeOpenAI([Reply("NATO paused training [1].")]) as fake:
        text = chat(fake.base_url, []).run(MESSAGES, on_text=seen.append)

    assert text == "NATO paused training [1]."
    assert seen == ["NATO", "NATO paused", "NATO paused training", "NATO paused training [1]."]
    request = fake.requests[0]
    assert (request["model"], request["stream"], request["messages"]) == ("test-model", True, MESSAGES)
    assert request["max_tokens"] == 512 and request["temperature"] == 0
    assert fake.headers[0]["authorization"] == f"Bearer {SECRET}"
    assert SECRET not in caplog.text


def test_a_429_waits_as_long_as_retry_after_says():
    sleeps: list[float] = []
    with FakeOpenAI([Reply.rate_limited("3"), Reply("Done [1].")]) as fake:
        assert chat(fake.base_url, sleeps).run(MESSAGES) == "Done [1]."
    assert sleeps == [3.0] and len(fake.requests) == 2


def test_a_retry_after_beyond_the_cap_gives_up_at_once():
    sleeps: list[float] = []
    with FakeOpenAI([Reply.rate_limited("600")]) as fake:
        with pytest.raises(LLMError, match="rate limited, asked to wait 600s"):
            chat(fake.base_url, sleeps).run(MESSAGES)
    assert sleeps == [] and len(fake.requests) == 1


@pytest.mark.parametrize(
    "fault, reason",
    [
        (Reply.server_error(), "server error 500"),
        (Reply.empty(), "empty reply"),
        (Reply.malformed(), "malformed reply"),
        (Reply(body=b"{not json"), "empty reply"),  # JSON where SSE was asked for yields no events
    ],
)
def test_transient_faults_are_retried_with_doubling_backoff_then_reported(fault, reason):
    sleeps: list[float] = []
    with FakeOpenAI([fault]) as fake:
        with pytest.raises(LLMError, match=f"{reason}, 3 tries"):
            chat(fake.base_url, sleeps).run(MESSAGES)
    assert sleeps == [0.5, 1.0] and len(fake.requests) == 3


def test_a_fault_then_a_good_reply_recovers():
    sleeps: list[float] = []
    with FakeOpenAI([Reply.server_error(), Reply.malformed(), Reply("Fine [1].")]) as fake:
        assert chat(fake.base_url, sleeps).run(MESSAGES) == "Fine [1]."


def test_a_slow_server_times_out():
    with FakeOpenAI([Reply.slow(30)]) as fake:
        with pytest.raises(LLMError, match="timed out, 1 tries"):
            chat(fake.base_url, [], timeout_seconds=0.3, max_retries=0).run(MESSAGES)


def test_a_stream_that_stalls_midway_times_out():
    seen: list[str] = []
    with FakeOpenAI([Reply.stalled(30)]) as fake:
        with pytest.raises(LLMError, match="timed out, 1 tries"):
            chat(fake.base_url, [], timeout_seconds=0.5, max_retries=0).run(MESSAGES, on_text=seen.append)
    assert seen and seen[-1].startswith("a reply")


def test_retries_stop_at_the_deadline():
    sleeps: list[float] = []
    with FakeOpenAI([Reply.server_error()]) as fake:
        with pytest.raises(LLMError, match="server error 500, out of time"):
            chat(fake.base_url, sleeps, deadline_seconds=5.0, retry_backoff_seconds=10.0).run(MESSAGES)
    assert sleeps == []


def test_a_refused_connection_is_retried_then_reported():
    sleeps: list[float] = []
    with pytest.raises(LLMError, match="connection failed, 2 tries"):
        chat(f"http://127.0.0.1:{closed_port()}/v1", sleeps, max_retries=1).run(MESSAGES)
    assert sleeps == [0.5]


def test_a_context_length_error_is_not_retried_here():
    with FakeOpenAI([Reply.context_length()]) as fake:
        with pytest.raises(ContextLengthError):
            chat(fake.base_url, []).run(MESSAGES)
    assert len(fake.requests) == 1


def test_a_refused_request_is_not_retried():
    with FakeOpenAI([Reply(status=401, body=b'{"error": {"message": "bad key"}}')]) as fake:
        with pytest.raises(LLMError, match="status 401"):
            chat(fake.base_url, []).run(MESSAGES)
    assert len(fake.requests) == 1


def test_without_a_key_in_the_environment_a_placeholder_is_sent(monkeypatch):
    monkeypatch.delenv("NEWSDESK_TEST_KEY", raising=False)
    with FakeOpenAI([Reply("Hi [1].")]) as fake:
        chat(fake.base_url, []).run(MESSAGES)
    assert fake.headers[0]["authorization"] == "Bearer none"


def test_reasoning_models_get_max_completion_tokens_and_no_temperature():
    with FakeOpenAI([Reply("Done [1].")], refuse=("max_tokens", "temperature")) as fake:
        assert chat(fake.base_url, [], model="o3-mini").run(MESSAGES) == "Done [1]."
    (request,) = fake.requests
    assert request["max_completion_tokens"] == 512 and "max_tokens" not in request and "temperature" not in request


def test_the_token_limit_can_be_named_explicitly():
    with FakeOpenAI([Reply("Done [1].")]) as fake:
        chat(fake.base_url, [], token_limit_param="max_completion_tokens").run(MESSAGES)
    (request,) = fake.requests
    assert (request["max_completion_tokens"], request["temperature"]) == (512, 0) and "max_tokens" not in request


def test_a_server_refusing_max_tokens_and_temperature_is_asked_again_without_them_and_remembered():
    sleeps: list[float] = []
    with FakeOpenAI([Reply("Done [1].")], refuse=("max_tokens", "temperature")) as fake:
        client = chat(fake.base_url, sleeps, model="reasoner-behind-a-proxy", max_retries=0)
        assert client.run(MESSAGES) == "Done [1]."
        assert client.run(MESSAGES) == "Done [1]."

    first, renamed, adapted, later = fake.requests
    assert (first["max_tokens"], first["temperature"]) == (512, 0)
    assert renamed["max_completion_tokens"] == 512 and "max_tokens" not in renamed and renamed["temperature"] == 0
    assert adapted == later and "temperature" not in adapted and adapted["max_completion_tokens"] == 512
    assert sleeps == []  # a refusal is not a fault to back off from


def test_a_refusal_named_only_in_the_message_is_understood():
    body = b'{"error": {"message": "max_tokens is not supported for this model, use max_completion_tokens"}}'
    with FakeOpenAI([Reply(status=400, body=body), Reply("Done [1].")]) as fake:
        assert chat(fake.base_url, []).run(MESSAGES) == "Done [1]."
    assert "max_completion_tokens" in fake.requests[1] and "max_tokens" not in fake.requests[1]


def test_a_refusal_of_an_option_already_dropped_is_a_plain_refusal():
    with FakeOpenAI([Reply.unsupported("max_tokens")]) as fake:
        with pytest.raises(LLMError, match="status 400"):
            chat(fake.base_url, []).run(MESSAGES)
    assert [("max_tokens" in r, "max_completion_tokens" in r) for r in fake.requests] == [(True, False), (False, True)]


def test_an_unknown_token_limit_name_is_refused():
    with pytest.raises(ValueError, match="token_limit_param"):
        chat("http://127.0.0.1:9/v1", [], token_limit_param="max_new_tokens")


def test_a_retry_that_oversleeps_the_deadline_stops_without_asking_again():
    """A sleep may end past the deadline (a busy host, a suspended laptop): no time is left for a
    request, so none is sent with a zero or negative timeout; the client stops, out of time."""
    now = [0.0]
    sleeps: list[float] = []

    def oversleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds + 10  # woke up long after the deadline

    with FakeOpenAI([Reply.server_error(), Reply("Too late [1].")]) as fake:
        config = settings(fake.base_url, deadline_seconds=5.0)
        client = ChatClient(config, create_client(config), sleep=oversleep, clock=lambda: now[0])
        with pytest.raises(LLMError, match="^out of time$"):
            client.run(MESSAGES)
    assert sleeps == [0.5] and len(fake.requests) == 1

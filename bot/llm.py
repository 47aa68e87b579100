"""The LLM mode: answers written by any OpenAI-compatible model, every citation checked.

A model may fail (timeouts, rate limits, server errors, refused connections, empty or garbled
replies, prompts too long) or write claims its sources don't support. Either way the reader gets
the extractive answer with a one-line note saying why, after a bounded number of tries.
"""

from __future__ import annotations

import email.utils
import logging
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import datetime, timezone

import openai

from bot.answer_types import CITATION, Answer
from bot.citecheck import CheckedAnswer, CitationChecker
from bot.config import LLMSettings
from bot.extractive import ExtractiveAnswerer
from bot.prompt import NO_ANSWER, PromptBuilder, TokenCounter
from index.embed import Embedder
from index.retrieve import Hit

log = logging.getLogger(__name__)

_CONTEXT_LENGTH = re.compile(r"context[ _](length|window)|maximum context", re.IGNORECASE)
_NOT_WORDS = re.compile(r"[\W_]+")
_UNSUPPORTED = re.compile(r"unsupported|not supported", re.IGNORECASE)

TOKEN_LIMIT_PARAMS = ("auto", "max_tokens", "max_completion_tokens")
# OpenAI's reasoning models take max_completion_tokens (max_tokens is refused) and only the default temperature.
_REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
# Request options a model may refuse, and what replaces each: the token limit under its newer name, or nothing.
_REPLACEMENTS: dict[str, str | None] = {"max_tokens": "max_completion_tokens", "temperature": None}


# A model asked to reply exactly NO_ANSWER often words it its own way; such a reply is its answer
# (the sources do not say), not a failure to fall back from.
_SOURCES = r"(the |these |my |your )?(provided |given )?(sources?|articles?|passages?|context|texts?)"
_NO_ANSWER_REPLY = re.compile(
    # Each form names the sources: "could not find the suspect" is news, not a refusal.
    rf"\b{_SOURCES}\b[^.]{{0,60}}?\b(do not|don't|does not|doesn't|did not|didn't|cannot|can't|fail to)\b"
    r"[^.]{0,30}?\b(answer|say|mention|contain|include|provide|state|address|cover|specify|tell)"
    rf"|\bnone of {_SOURCES}\b"
    rf"|\bno (relevant |such )?information\b[^.]{{0,40}}?\b(in|from|within) {_SOURCES}\b"
    rf"|\bnot (mentioned|stated|covered|answered|addressed) (in|by) {_SOURCES}\b"
    rf"|\b(cannot|can't|am unable to|could not|couldn't) (answer|determine|find|tell)\b[^.]{{0,60}}?"
    rf"\b(from|in|based on) {_SOURCES}\b",
    re.IGNORECASE,
)
# Longer than this, a reply is an answer with a caveat, not a refusal.
_NO_ANSWER_WORDS = 60


def says_no_answer(text: str) -> bool:
    """Whether a model's reply says that the sources do not answer: NO_ANSWER or its own words for
    it, without a citation (a cited sentence is an answer, whatever else the reply says)."""
    if _words(text) == _words(NO_ANSWER):
        return True
    return (not CITATION.search(text) and len(text.split()) <= _NO_ANSWER_WORDS
            and _NO_ANSWER_REPLY.search(text) is not None)


class LLMError(RuntimeError):
    """The model gave no usable answer; the message is a short reason fit for a reader's note."""


class ContextLengthError(LLMError):
    """The prompt did not fit the model's context window."""


class _RefusedOption(LLMError):
    """A 400 saying the model does not support one of the request's options (see _REPLACEMENTS)."""

    def __init__(self, option: str) -> None:
        super().__init__("request refused with status 400")
        self.option = option


class _Transient(LLMError):
    """A fault worth another try, after `retry_after` seconds when the server said so."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.retry_after = retry_after


def create_client(settings: LLMSettings) -> openai.OpenAI:
    """An OpenAI client for the configured endpoint; retries are ours (ChatClient), not the library's."""
    # Local servers (llama.cpp, Ollama, vLLM) take any key, but the client insists on one.
    key = os.environ.get(settings.api_key_env, "") or "none"
    return openai.OpenAI(base_url=settings.base_url, api_key=key, timeout=settings.timeout_seconds, max_retries=0)


class ChatClient:
    """Streams one chat completion, retrying transient faults with backoff, within a deadline.

    A server that refuses `max_tokens` or `temperature` (OpenAI's reasoning models) is asked again at
    once without it, and keeps getting the adapted request: every option is dropped at most once.
    """

    def __init__(
        self,
        settings: LLMSettings,
        client: openai.OpenAI,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if settings.max_retries < 0:
            raise ValueError("llm.max_retries cannot be negative")
        if min(settings.timeout_seconds, settings.deadline_seconds, settings.max_answer_tokens) <= 0:
            raise ValueError("llm.timeout_seconds, llm.deadline_seconds and llm.max_answer_tokens must be positive")
        if settings.retry_backoff_seconds < 0 or settings.max_retry_wait_seconds < 0:
            raise ValueError("llm.retry_backoff_seconds and llm.max_retry_wait_seconds cannot be negative")
        if settings.token_limit_param not in TOKEN_LIMIT_PARAMS:
            raise ValueError(f"llm.token_limit_param must be one of {', '.join(TOKEN_LIMIT_PARAMS)}")
        self._settings = settings
        self._options = _request_options(settings)
        self._client = client
        self._sleep, self._clock = sleep, clock

    def run(self, messages: list[dict[str, str]], *, on_text: Callable[[str], None] | None = None) -> str:
        """The whole reply; `on_text` sees it grow. Raises LLMError (ContextLengthError: not retried)."""
        settings = self._settings
        deadline = self._clock() + settings.deadline_seconds
        attempt = 0
        while True:
            try:
                return self._attempt(messages, deadline, on_text)
            except _RefusedOption as exc:
                if exc.option not in self._options:  # not what we sent: a plain refusal
                    raise
                self._options = _without(self._options, exc.option)
                log.warning("LLM %s refuses %s; asking with %s", settings.model, exc.option, ", ".join(self._options))
            except _Transient as exc:
                wait = exc.retry_after if exc.retry_after is not None else settings.retry_backoff_seconds * 2**attempt
                attempt += 1
                if attempt > settings.max_retries:
                    raise LLMError(f"{exc}, {attempt} tries") from exc
                if wait > settings.max_retry_wait_seconds:
                    raise LLMError(f"{exc}, asked to wait {wait:.0f}s") from exc
                if self._clock() + wait >= deadline:
                    raise LLMError(f"{exc}, out of time") from exc
                log.warning("LLM %s; try %d of %d in %.1fs", exc, attempt + 1, settings.max_retries + 1, wait)
                self._sleep(wait)

    def _attempt(
        self, messages: list[dict[str, str]], deadline: float, on_text: Callable[[str], None] | None
    ) -> str:
        parts: list[str] = []
        for piece in self._pieces(messages, deadline):
            if piece:
                parts.append(piece)
                if on_text:
                    on_text("".join(parts))
        text = "".join(parts)
        if not text.strip():
            raise _Transient("empty reply")
        return text

    def _pieces(self, messages: list[dict[str, str]], deadline: float) -> Iterator[str]:
        """The reply's text as it streams, with every library fault turned into an LLMError.

        A sleep before a retry can end past the deadline, and a refused option is asked again at once:
        with no time left nothing is sent, since the client would take a zero or negative timeout as
        a malformed request, not as the deadline.
        """
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise LLMError("out of time")
        try:
            stream = self._client.chat.completions.create(
                model=self._settings.model,
                messages=messages,  # type: ignore[arg-type]
                stream=True,
                timeout=min(self._settings.timeout_seconds, remaining),
                **self._options,
            )
            with stream:
                for chunk in stream:
                    yield _content(chunk)
                    if self._clock() > deadline:
                        raise LLMError("timed out while streaming")
        except openai.APITimeoutError as exc:
            raise _Transient("timed out") from exc
        except openai.APIConnectionError as exc:
            raise _Transient("connection failed") from exc
        except openai.APIStatusError as exc:
            raise _status_error(exc) from exc
        except ValueError as exc:  # JSON that doesn't parse, or a chunk of the wrong shape
            raise _Transient("malformed reply") from exc


class LLMAnswerer:
    """Question + hits -> an answer written by the model and checked claim by claim, or the fallback's."""

    def __init__(
        self,
        settings: LLMSettings,
        *,
        embedder: Embedder,
        fallback: ExtractiveAnswerer,
        client: openai.OpenAI | None = None,
    ) -> None:
        if not settings.base_url or not settings.model:
            raise ValueError("llm.base_url and llm.model must both be set for the LLM mode")
        if not 0 < settings.min_supported_share <= 1:
            raise ValueError("llm.min_supported_share must be in (0, 1]")
        self._min_share = settings.min_supported_share
        self._prompts = PromptBuilder(settings, TokenCounter(embedder).run)
        self._chat = ChatClient(settings, client or create_client(settings))
        self._checker = CitationChecker(settings, embedder)
        self._fallback = fallback

    def run(
        self,
        question: str,
        hits: list[Hit],
        *,
        on_text: Callable[[str], None] | None = None,
        instruction: str | None = None,
        fallback: Callable[[str, list[Hit]], Answer] | None = None,
    ) -> Answer:
        """`fallback` answers instead when the model fails (default: the extractive answerer); a
        summary passes the extractive summarizer, so a failed summary still reads as one."""
        fallback = fallback or self._fallback.run
        if not hits:
            return fallback(question, hits)
        timing: dict[str, float] = {}
        started = time.perf_counter()
        prompt = self._prompts.run(question, hits, instruction=instruction)
        if not prompt.sources:
            note = "The question is too long for the language model."
            return self._fall_back(fallback(question, hits), note, timing)
        try:
            try:
                text = self._chat.run(prompt.messages, on_text=on_text)
            except ContextLengthError:
                # Our token estimate was low for this model: quote half as much, once.
                log.warning("LLM context exceeded with %d source tokens; trying with half", prompt.source_tokens)
                prompt = self._prompts.run(
                    question, hits, instruction=instruction, max_source_tokens=prompt.source_tokens // 2
                )
                text = self._chat.run(prompt.messages, on_text=on_text)
        except LLMError as exc:
            log.warning("LLM answer failed: %s", exc)
            timing["llm"] = _ms(started)
            note = f"The language model failed ({exc}); showing the extractive answer."
            return self._fall_back(fallback(question, hits), note, timing)
        timing["llm"] = _ms(started)
        if says_no_answer(text):
            return Answer(NO_ANSWER, "llm", [], timing, found=False, claims_supported=0, claims_unsupported=0)
        started = time.perf_counter()
        checked = self._checker.run(text, prompt.sources)
        timing["citecheck"] = _ms(started)
        total = checked.supported + checked.unsupported
        log.info(
            "LLM answer: %d of %d claims supported, %d citations to missing sources removed",
            checked.supported, total, checked.removed_citations,
        )
        if not checked.supported or checked.supported / total < self._min_share:
            note = (
                f"The language model's answer was not supported by its sources ({checked.supported} of {total} "
                "claims); showing the extractive answer."
            )
            return self._fall_back(fallback(question, hits), note, timing, checked)
        return Answer(
            checked.text,
            "llm",
            checked.citations,
            timing,
            claims_supported=checked.supported,
            claims_unsupported=checked.unsupported,
        )

    @staticmethod
    def _fall_back(answer: Answer, note: str, timing: dict[str, float], checked: CheckedAnswer | None = None) -> Answer:
        """The fallback's answer with a note; with the rejected answer's claim counts when it was checked."""
        return replace(
            answer,
            note=note,
            timing_ms={**timing, **answer.timing_ms},
            claims_supported=checked.supported if checked else answer.claims_supported,
            claims_unsupported=checked.unsupported if checked else answer.claims_unsupported,
        )


def _request_options(settings: LLMSettings) -> dict[str, int]:
    """The answer's token limit under the name the model takes, and temperature 0 where it is accepted."""
    reasoning = settings.model.lower().startswith(_REASONING_MODELS)
    name = settings.token_limit_param
    if name == "auto":
        name = "max_completion_tokens" if reasoning else "max_tokens"
    options = {name: settings.max_answer_tokens}
    if not reasoning:
        options["temperature"] = 0  # grounded answers: no creativity wanted
    return options


def _without(options: dict[str, int], refused: str) -> dict[str, int]:
    """The options less `refused`, the token limit renamed rather than dropped."""
    kept = {name: value for name, value in options.items() if name != refused}
    replacement = _REPLACEMENTS[refused]
    if replacement is not None:
        kept[replacement] = options[refused]
    return kept


def _content(chunk: object) -> str:
    """The text of one streamed chunk; chunks are not validated, so their shape is checked here."""
    choices = getattr(chunk, "choices", None)
    delta = getattr(choices[0], "delta", None) if choices else None
    content = getattr(delta, "content", None)
    if content is not None and not isinstance(content, str):
        raise ValueError(f"chunk content is a {type(content).__name__}")
    return content or ""


def _status_error(exc: openai.APIStatusError) -> LLMError:
    status = exc.status_code
    if status == 429:
        return _Transient("rate limited", _retry_after(exc.response.headers.get("retry-after")))
    if status >= 500 or status == 408:
        return _Transient(f"server error {status}")
    if status in (400, 413) and _CONTEXT_LENGTH.search(f"{exc.code} {exc.message}"):
        return ContextLengthError("the prompt was too long for the model")
    if status == 400 and (option := _refused_option(exc)):
        return _RefusedOption(option)
    return LLMError(f"request refused with status {status}")


def _refused_option(exc: openai.APIStatusError) -> str | None:
    """The option a 400 calls unsupported, if a request can do without it; by `param`, else by name in the message."""
    if not _UNSUPPORTED.search(f"{exc.code} {exc.message}"):
        return None
    if exc.param in _REPLACEMENTS:
        return exc.param
    return next((name for name in _REPLACEMENTS if re.search(rf"\b{name}\b", exc.message)), None)


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: a number of seconds or an HTTP date."""
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # HTTP dates are GMT
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def _words(text: str) -> str:
    return _NOT_WORDS.sub(" ", text).strip().lower()


def _ms(started: float) -> float:
    return (time.perf_counter() - started) * 1000

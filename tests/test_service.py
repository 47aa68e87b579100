"""The facade front ends share: ingest from real local URLs, the private-address guard, summaries."""

from __future__ import annotations

import pytest
from http_fixture import http_server  # noqa: F401 - the fixture
from conftest import SEED, article
from openai_fake import FakeOpenAI, Reply

PAGE = """<html><head><title>Port strike ends after three weeks</title>
<meta property="og:site_name" content="Harbour Times">
<meta property="article:published_time" content="2026-11-20T08:00:00Z"></head>
<body><article><h1>Port strike ends after three weeks</h1>
<p>Dock workers voted on Thursday to end a three-week strike that had left hundreds of ships waiting outside the harbour.</p>
<p>The union said the new contract raises pay by nine percent over two years and limits night shifts.</p>
<p>Shipping companies expect the backlog of containers to clear within a fortnight, the port authority said.</p>
</article></body></html>"""


def test_operator_urls_are_fetched_and_answered(service, http_server):  # noqa: F811
    http_server.add("/port", PAGE.encode(), content_type="text/html; charset=utf-8")
    report = service.ingest([http_server.url("/port"), str(SEED)])
    assert len(report.added) == 2, report.failed
    answer = service.ask("Why did the dock workers end the strike?")
    assert answer.found and any(c.title == "Port strike ends after three weeks" for c in answer.citations)


def test_member_urls_to_private_addresses_are_refused(service, http_server):  # noqa: F811
    http_server.add("/port", PAGE.encode(), content_type="text/html; charset=utf-8")
    report = service.ingest([http_server.url("/port")], collection="guild:42", untrusted=True)
    assert report.added == []
    (failure,) = report.failed
    assert "refused" in failure.reason and "127.0.0.1" in failure.reason
    assert service.stats()["articles"] == 0
    assert http_server.requests == []  # refused before any connection


def test_allow_hosts_lets_a_named_private_host_through(config, fake_embedder, http_server):  # noqa: F811
    from bot.service import NewsService

    config.fetch.allow_hosts = ["127.0.0.1"]
    service = NewsService(config, embedder=fake_embedder)
    http_server.add("/port", PAGE.encode(), content_type="text/html; charset=utf-8")
    report = service.ingest([http_server.url("/port")], collection="guild:42", untrusted=True)
    assert len(report.added) == 1


def test_summaries_of_article_topic_and_period(service):
    service.ingest([str(SEED)])
    (article_id, title), = service.titles("NATO")
    summary = service.summarize_article(article_id)
    assert summary.citations[0].title == title and summary.text.count("[1]") >= 2
    topic = service.summarize_topic("NATO training Iraq")
    assert topic.found and topic.citations[0].article_id == article_id
    from datetime import datetime, timezone

    from index.store import SearchFilters

    digest = service.digest(filters=SearchFilters(since=datetime(2020, 1, 1, tzinfo=timezone.utc)))
    assert "1 article since 01 Jan 2020 00:00 UTC, 1 story:" in digest.text and digest.citations[0].article_id == article_id
    empty = service.digest()
    assert not empty.found  # nothing in the last 24 hours


def test_a_topic_summary_the_model_fails_is_still_a_summary(service, config, fake_embedder):
    from bot.service import NewsService

    service.ingestor.run([
        article("Ferry pier rebuild approved", "The council voted on Tuesday to rebuild the ferry pier. The ferry "
                "pier was damaged by winter storms last year. Work on the ferry pier starts in March."),
        article("Ferry timetable changes", "The ferry company will cut evening sailings while the pier is rebuilt. "
                "Ferry passengers will board from the old harbour wall until the summer."),
    ])
    offline = service.summarize_topic("ferry pier")
    with FakeOpenAI([Reply.server_error()]) as failing:
        config.llm.base_url, config.llm.model, config.llm.retry_backoff_seconds = failing.base_url, "m", 0
        summary = NewsService(config, embedder=fake_embedder).summarize_topic("ferry pier")

    assert summary.note.startswith("The language model failed (server error 500")
    # The extractive summary, across both stories, not the extractive answer to a "question" that is a topic.
    assert (summary.mode, summary.text) == ("extractive", offline.text)
    assert [c.title for c in summary.citations] == ["Ferry pier rebuild approved", "Ferry timetable changes"]
    assert len(failing.requests) == config.llm.max_retries + 1


def test_members_cannot_make_the_bot_read_its_own_files(service):
    report = service.ingest([str(SEED)], collection="guild:42", untrusted=True)
    assert report.added == [] and len(report.failed) == 1
    assert service.stats()["articles"] == 0


def test_an_article_is_summarized_only_within_the_collections_given(service):
    service.ingest([str(SEED)], collection="guild:2")
    (article_id, _), = service.titles("NATO")
    with pytest.raises(KeyError):
        service.summarize_article(article_id, collections=("shared", "guild:1"))
    assert service.summarize_article(article_id, collections=("shared", "guild:2")).found
    assert service.summarize_article(article_id).found  # the operator's CLI sees every collection

"""The `newsdesk` command as a user runs it: real model, real files, one JSON object on stdout."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import SEED
from conftest import run_newsdesk as newsdesk

QUESTION = "Why did NATO suspend its training activities in Iraq?"


@pytest.fixture(scope="module")
def indexed(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("cli")
    config = folder / "config.toml"
    config.write_text('[index]\ndir = "data"\n')
    result = newsdesk(config, "ingest", str(SEED), "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["added"] == 1 and report["failed"] == [] and report["chunks"] >= 1
    return config


@pytest.mark.slow
def test_ask_answers_from_the_seed_with_a_citation(indexed):
    result = newsdesk(indexed, "ask", "--json", QUESTION)
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)  # exactly one JSON object
    assert answer["mode"] == "extractive" and answer["found"]
    assert set(answer) >= {"answer", "mode", "citations", "timing_ms"}
    seed = SEED.read_text(encoding="utf-8")
    (citation,) = answer["citations"]
    assert set(citation) >= {"n", "article_id", "title", "outlet", "url", "published", "quote"}
    assert citation["title"] == "NATO suspends training activities in Iraq after Soleimani killing"
    assert citation["published"].startswith("2020-01-04")
    assert citation["quote"] in seed
    assert "[1]" in answer["answer"]
    first_sentence = answer["answer"].split(" [1]")[0]
    assert first_sentence in seed and "NATO" in first_sentence
    assert answer["timing_ms"]["total_ms"] > 0


@pytest.mark.slow
def test_ingesting_again_is_a_duplicate_and_stats_agree(indexed):
    again = json.loads(newsdesk(indexed, "ingest", str(SEED), "--json", "-q").stdout)
    assert again["added"] == 0 and again["duplicates"] == 1
    stats = json.loads(newsdesk(indexed, "stats", "--json").stdout)
    assert stats["articles"] == 1


@pytest.mark.slow
def test_console_reads_piped_questions(indexed):
    result = newsdesk(indexed, "console", stdin=f"{QUESTION}\n/summary --since 2019-01-01\n/search soleimani\n")
    assert result.returncode == 0, result.stderr
    assert "Sources:" in result.stdout and "[1] NATO suspends training activities" in result.stdout
    assert "1 article since" in result.stdout  # the digest of the period


def test_errors_are_one_line_without_a_traceback(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text("[index]\nbogus = 1\n")
    result = newsdesk(config, "stats")
    assert result.returncode == 2
    assert result.stderr.startswith("newsdesk: error:") and "Traceback" not in result.stderr
    assert "bogus" in result.stderr


def test_streamed_text_that_starts_over_on_a_retry_is_shown_on_a_new_line(capsys):
    """The LLM client reports the whole text so far; a retry starts it again, shorter or different."""
    from bot.cli import _terminal_stream

    on_text = _terminal_stream()
    for text in ["NATO", "NATO paused", "NATO paused training", "NA", "NATO said", "NATO said it [1]."]:
        on_text(text)
    assert capsys.readouterr().out == "NATO paused training\n[retrying]\nNATO said it [1]."
